from __future__ import annotations

import math
from typing import Any

import pytest

from decisioning.errors import RuleError
from decisioning.policy.rules import Env, FieldInfo, compile_rule

FIELDS = {
    ("profile", "age"): FieldInfo("profile", "age", 0, "num"),
    ("profile", "segment"): FieldInfo("profile", "segment", 1, "str", ("mass", "affluent")),
    ("consent", "email"): FieldInfo("consent", "email", 2, "bool"),
    ("context", "page"): FieldInfo("context", "page", "page", "any"),
    ("action", "group"): FieldInfo("action", "group", "group", "str"),
    ("action", "value"): FieldInfo("action", "value", "value", "num"),
}


def resolve(ns: str, name: str) -> FieldInfo | None:
    return FIELDS.get((ns, name))


class _Action:
    group = "cards"


def run(
    expr: str,
    age: float = 30.0,
    segment: float = 1.0,
    email: float = 1.0,
    context: dict[str, Any] | None = None,
    value: float | None = 10.0,
) -> Any:
    env = Env([age, segment, email], context or {}, _Action())
    env.value = value
    return compile_rule(expr, resolve)(env)


@pytest.mark.parametrize(
    "expr, expected",
    [
        ("profile.age >= 18", True),
        ("profile.age > 18 and profile.age < 25", False),
        ("profile.age < 18 or profile.segment == 'affluent'", True),
        ("not profile.age < 18", True),
        ("profile.segment in ['mass', 'affluent']", True),
        ("profile.segment not in ['affluent']", False),
        ("profile.age * 2 + 1 == 61", True),
        ("profile.age % 7 == 2", True),
        ("consent.email", True),
        ("action.group == 'cards' and action.value >= 10", True),
        ("context.page == '/cards'", False),
        ("abs(-3) == 3 and min(profile.age, 5) == 5 and max(1, 2) == 2", True),
        ("coalesce(context.page, 'home') == 'home'", True),
        ("18 <= profile.age < 65", True),
        ("true and not false", True),
        ("-profile.age < 0", True),
    ],
)
def test_evaluates(expr: str, expected: bool) -> None:
    assert run(expr) == expected


def test_null_handling() -> None:
    nan = math.nan
    assert run("profile.age >= 18", age=nan) is False
    assert run("profile.age < 18", age=nan) is False
    assert run("profile.age == null", age=nan) is True
    assert run("profile.age != null", age=nan) is False
    assert run("profile.age + 1", age=nan) is None
    assert run("profile.segment in ['mass']", segment=nan) is False
    assert run("profile.segment not in ['mass']", segment=nan) is True
    assert run("consent.email", email=nan) is None
    assert run("1 / 0") is None
    assert run("context.page > 3", context={"page": "x"}) is False  # type clash at runtime


@pytest.mark.parametrize(
    "expr, fragment",
    [
        ("__import__('os').system('id')", "function calls are limited"),
        ("open('/etc/passwd')", "function calls are limited"),
        ("profile.__class__", "names starting with '_'"),
        ("profile.age.__class__", "only profile.x"),
        ("().__class__.__bases__", "only profile.x"),
        ("[x for x in [1]]", "comprehension"),
        ("lambda: 1", "lambda"),
        ("profile['age']", "indexing"),
        ("(x := 1)", "assignment"),
        ("f'{profile.age}'", "f-string"),
        ("os.system", "only profile.x"),
        ("eval", "unknown name"),
        ("profile.shoe_size > 3", "unknown field 'profile.shoe_size'"),
        ("profile.segment == 'afluent'", "'afluent' is not a value of profile.segment"),
        ("profile.segment in ['gold']", "'gold' is not a value"),
        ("profile.segment + 1", "arithmetic on a str"),
        ("profile.age == 'old'", "cannot compare a num with a str"),
        ("profile.age in profile.age", "'in' needs a list"),
        ("min(1)", "takes 2 to 8 arguments"),
        ("{'a': 1}", "dict literal"),
        ("1 if profile.age else 2", "if-expression"),
        ("profile.age ** 2", "Pow is not allowed"),
        ("", "non-empty"),
    ],
)
def test_refuses(expr: str, fragment: str) -> None:
    with pytest.raises(RuleError) as e:
        compile_rule(expr, resolve)
    assert fragment in str(e.value)


def test_error_has_line_and_column() -> None:
    with pytest.raises(RuleError) as e:
        compile_rule("profile.age >= 18 and\n  profile.nope == 1", resolve)
    assert (e.value.line, e.value.column) == (2, 3)
    with pytest.raises(RuleError) as e:
        compile_rule("profile.age >= ", resolve)
    assert "syntax error" in str(e.value)


def test_very_long_or_deep_expressions_are_refused() -> None:
    with pytest.raises(RuleError):
        compile_rule("1 + " * 2000 + "1", resolve)
    with pytest.raises(RuleError):
        compile_rule("(" * 500 + "1" + ")" * 500, resolve)
