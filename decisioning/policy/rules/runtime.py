"""What a compiled rule runs with: the fields it may read (`FieldInfo`), what it sees
while it evaluates (`Env`), the compiled `Rule`, and the null semantics every operator
follows.

Nulls: a missing value is null; an ordered comparison with null is false, `== null`
tests for it, arithmetic with null gives null (and so does an error such as a division
by zero or a non-finite result), and a null condition counts as false. The compiler
(decisioning/policy/rules/compiler.py) builds closures from these pieces only.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ARITH",
    "FUNCTIONS",
    "ORDER",
    "Env",
    "FieldInfo",
    "Fn",
    "Resolve",
    "Rule",
    "accessor",
    "both",
    "either",
    "member",
    "null_safe",
    "truthy",
]


@dataclass(frozen=True, slots=True)
class FieldInfo:
    """How a name resolves: `index` into the profile vector, or a key; its static type."""

    namespace: str
    name: str
    key: str | int
    type: str  # "num", "str", "bool" or "any"
    values: tuple[str, ...] | None = None  # categorical vocabulary (codes index it)


class Env:
    """What a rule sees while it evaluates: the profile vector, the context, the action."""

    __slots__ = ("action", "context", "event", "profile", "scorer", "tables", "value")

    def __init__(
        self,
        profile: list[float],
        context: Mapping[str, Any],
        action: Any = None,
        event: Mapping[str, Any] | None = None,
        tables: Mapping[str, Any] | None = None,
        scorer: Callable[[str], float | None] | None = None,
    ) -> None:
        self.profile = profile
        self.context = context
        self.action = action
        self.value: float | None = None
        self.event = event if event is not None else {}
        self.tables = tables if tables is not None else {}  # name -> ContextTable
        self.scorer = scorer  # model name -> the customer's score (trigger conditions)


Fn = Callable[[Env], Any]
Resolve = Callable[[str, str], FieldInfo | None]


@dataclass(frozen=True, slots=True)
class Rule:
    """A compiled expression."""

    source: str
    fn: Fn
    fields: tuple[tuple[str, Fn], ...] = ()  # each field it reads, and how to read it

    def __call__(self, env: Env) -> Any:
        return self.fn(env)

    def values(self, env: Env) -> dict[str, Any]:
        """The values of the fields the rule read (for explanations: why it failed)."""
        out = {}
        for label, read in self.fields:
            v = read(env)
            out[label] = None if isinstance(v, float) and math.isnan(v) else v
        return out

    def holds(self, env: Env) -> bool:
        """True only when the expression is truthy (null counts as false)."""
        return bool(self.fn(env))


def truthy(v: Any) -> bool:
    """Does a value count as true? Null, NaN, false, 0 and "" do not."""
    return v is True or (v is not False and v is not None and bool(v) and v == v)


def both(a: Fn, b: Fn) -> Fn:
    """`a and b`, short-circuit, as a bool."""
    return lambda env: truthy(a(env)) and truthy(b(env))


def either(a: Fn, b: Fn) -> Fn:
    """`a or b`, short-circuit, as a bool."""
    return lambda env: truthy(a(env)) or truthy(b(env))


def null_safe(op: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """An arithmetic operator giving null for a null operand, an error or a non-finite
    result."""

    def apply(a: Any, b: Any) -> Any:
        if a is None or b is None:
            return None
        try:
            r = op(a, b)
        except (TypeError, ZeroDivisionError, OverflowError, ValueError):
            return None
        if isinstance(r, float) and not math.isfinite(r):
            return None
        return r

    return apply


ARITH: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: null_safe(operator.add),
    ast.Sub: null_safe(operator.sub),
    ast.Mult: null_safe(operator.mul),
    ast.Div: null_safe(operator.truediv),
    ast.Mod: null_safe(operator.mod),
}
ORDER: dict[type, Callable[[Any, Any], bool]] = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}


def _coalesce(*args: Any) -> Any:
    return next((a for a in args if a is not None), None)


def null_safe_call(f: Callable[..., Any]) -> Callable[..., Any]:
    """A function giving null when an argument is null or of the wrong type."""

    def call(*args: Any) -> Any:
        if any(a is None for a in args):
            return None
        try:
            return f(*args)
        except TypeError:
            return None

    return call


FUNCTIONS: dict[str, tuple[Callable[..., Any], int, int]] = {
    "abs": (null_safe_call(abs), 1, 1),
    "min": (null_safe_call(min), 2, 8),
    "max": (null_safe_call(max), 2, 8),
    "coalesce": (_coalesce, 2, 8),
}


def member(v: Any, members: frozenset[Any]) -> bool:
    """`v in members`, false for an unhashable value."""
    try:
        return v in members
    except TypeError:
        return False


def accessor(info: FieldInfo) -> Fn:
    """How a field is read from an Env: profile codes decoded, NaN read as null."""
    key = info.key
    if info.namespace == "context":
        name = str(key)
        return lambda env: env.context.get(name)
    if info.namespace == "event":
        prop = str(key)
        return lambda env: env.event.get(prop)
    if info.namespace == "score":
        model = str(key)
        return lambda env: None if env.scorer is None else env.scorer(model)
    if info.namespace == "action":
        if key == "value":
            return lambda env: env.value
        return lambda env: getattr(env.action, key)  # type: ignore[arg-type]
    idx = int(key)
    if info.values is not None:
        vocab = info.values

        def categorical(env: Env) -> Any:
            code = env.profile[idx]
            return None if code != code else vocab[int(code)]

        return categorical
    if info.type == "bool":

        def flag(env: Env) -> Any:
            v = env.profile[idx]
            return None if v != v else v > 0.5

        return flag

    def numeric(env: Env) -> Any:
        v = env.profile[idx]
        return None if v != v else v

    return numeric
