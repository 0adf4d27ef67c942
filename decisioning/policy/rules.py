"""A small, safe expression language for eligibility, value and context-weight rules.

Syntax is a subset of Python expressions: numbers, strings, true/false/null, names in
the namespaces `profile.x`, `consent.channel`, `context.x`, `action.x` (and `event.x` in
trigger conditions, with `score.<model>` for a customer-level model's score), lookups
in context tables (`context.weather[profile.zip].temp_c`), comparisons,
`in`/`not in` with a list of constants, `and`/`or`/`not`, + - * / %, and the functions
abs, min, max and coalesce. Everything else (calls, attributes, subscripts, lambdas,
comprehensions, builtins, imports; subscripts other than a context-table lookup) is
refused at compile time with line and column.

Expressions are compiled once into closures; no `eval` ever runs. Nulls: a missing value
is null; an ordered comparison with null is false, `== null` tests for it, arithmetic
with null gives null, and a null condition counts as false.
"""

from __future__ import annotations

import ast
import math
import operator
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from decisioning.errors import RuleError

__all__ = ["Env", "FieldInfo", "Rule", "compile_rule"]

MAX_EXPRESSION_CHARS = 4000
NAMESPACES = ("profile", "consent", "context", "action", "event", "score")


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


def compile_rule(source: str, resolve: Resolve) -> Rule:
    """Parse and compile `source`; `resolve(namespace, name)` knows the allowed fields."""
    if not isinstance(source, str) or not source.strip():
        raise RuleError(str(source), "an expression must be a non-empty string")
    if len(source) > MAX_EXPRESSION_CHARS:
        raise RuleError(source[:40] + "…", f"longer than {MAX_EXPRESSION_CHARS} characters")
    text = source.strip()
    try:
        # parenthesised so that a rule may span lines (YAML block strings)
        with warnings.catch_warnings():  # Python's own hints ("invalid decimal literal")
            warnings.simplefilter("ignore", SyntaxWarning)  # are not for config authors
            tree = ast.parse(f"({text}\n)", mode="eval")
    except SyntaxError as e:
        line, col = e.lineno or 1, e.offset or 1
        raise RuleError(
            source, f"syntax error: {e.msg}", line, col - 1 if line == 1 else col
        ) from None
    except (ValueError, RecursionError, MemoryError):
        raise RuleError(source, "expression cannot be parsed") from None
    try:
        compiler = _Compiler(source, resolve)
        fn, _ = compiler.visit(tree.body)
    except RecursionError:
        raise RuleError(source, "expression is nested too deeply") from None
    return Rule(source, fn, tuple(compiler.fields.items()))


def _truthy(v: Any) -> bool:
    return v is True or (v is not False and v is not None and bool(v) and v == v)


def _and(a: Fn, b: Fn) -> Fn:
    return lambda env: _truthy(a(env)) and _truthy(b(env))


def _or(a: Fn, b: Fn) -> Fn:
    return lambda env: _truthy(a(env)) or _truthy(b(env))


def _safe(op: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
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


_ARITH: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: _safe(operator.add),
    ast.Sub: _safe(operator.sub),
    ast.Mult: _safe(operator.mul),
    ast.Div: _safe(operator.truediv),
    ast.Mod: _safe(operator.mod),
}
_ORDER: dict[type, Callable[[Any, Any], bool]] = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}


def _coalesce(*args: Any) -> Any:
    return next((a for a in args if a is not None), None)


def _nullsafe(f: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any) -> Any:
        if any(a is None for a in args):
            return None
        try:
            return f(*args)
        except TypeError:
            return None

    return call


_FUNCTIONS: dict[str, tuple[Callable[..., Any], int, int]] = {
    "abs": (_nullsafe(abs), 1, 1),
    "min": (_nullsafe(min), 2, 8),
    "max": (_nullsafe(max), 2, 8),
    "coalesce": (_coalesce, 2, 8),
}
_CONSTANT_NAMES = {"true": True, "false": False, "null": None}


class _Compiler:
    def __init__(self, source: str, resolve: Resolve) -> None:
        self.source = source
        self.resolve = resolve
        self.fields: dict[str, Fn] = {}  # "profile.age" -> its accessor, first use first

    def fail(self, node: ast.AST, message: str) -> RuleError:
        line = getattr(node, "lineno", 1)
        col = getattr(node, "col_offset", 0) + (0 if line == 1 else 1)  # "(" opens line 1
        return RuleError(self.source, message, line, max(col, 1))

    def visit(self, node: ast.expr) -> tuple[Fn, str]:
        """Compile `node` to (closure, static type)."""
        method = getattr(self, "visit_" + type(node).__name__, None)
        if method is None:
            raise self.fail(node, f"{_describe(node)} is not allowed")
        result: tuple[Fn, str] = method(node)
        return result

    def visit_Constant(self, node: ast.Constant) -> tuple[Fn, str]:
        v = node.value
        if v is None or isinstance(v, bool):
            return (lambda env: v), "bool" if isinstance(v, bool) else "any"
        if isinstance(v, int | float):
            if isinstance(v, float) and not math.isfinite(v):
                raise self.fail(node, "numbers must be finite")
            return (lambda env: v), "num"
        if isinstance(v, str):
            return (lambda env: v), "str"
        raise self.fail(node, f"constant {v!r} is not allowed")

    def visit_Name(self, node: ast.Name) -> tuple[Fn, str]:
        if node.id in _CONSTANT_NAMES:
            v = _CONSTANT_NAMES[node.id]
            return (lambda env: v), "bool" if v is not None else "any"
        if node.id in NAMESPACES:
            raise self.fail(node, f"'{node.id}' needs a field, e.g. {node.id}.name")
        raise self.fail(
            node, f"unknown name '{node.id}' (use profile.x, consent.x, context.x or action.x)"
        )

    def visit_Attribute(self, node: ast.Attribute) -> tuple[Fn, str]:
        if isinstance(node.value, ast.Subscript):
            return self._table_lookup(node.value, node.attr, node)
        if not isinstance(node.value, ast.Name) or node.value.id not in NAMESPACES:
            raise self.fail(node, "only profile.x, consent.x, context.x and action.x are allowed")
        ns, name = node.value.id, node.attr
        if name.startswith("_"):
            raise self.fail(node, f"'{ns}.{name}': names starting with '_' are not allowed")
        info = self.resolve(ns, name)
        if info is None:
            raise self.fail(node, f"unknown field '{ns}.{name}'")
        read = _accessor(info)
        self.fields.setdefault(f"{ns}.{name}", read)
        return read, info.type

    def _table_lookup(self, sub: ast.Subscript, column: str, node: ast.AST) -> tuple[Fn, str]:
        """context.<table>[<key expression>].<column>: null when the key has no row."""
        head = sub.value
        if not (
            isinstance(head, ast.Attribute)
            and isinstance(head.value, ast.Name)
            and head.value.id == "context"
        ):
            raise self.fail(node, "only context.<table>[key].<column> lookups are allowed")
        table = head.attr
        info = self.resolve("table", f"{table}.{column}")
        if info is None:
            raise self.fail(node, f"unknown context table column '{table}.{column}'")
        key, _ = self.visit(sub.slice)

        def lookup(env: Env) -> Any:
            t = env.tables.get(table)
            return None if t is None else t.get(key(env), column)

        self.fields.setdefault(f"context.{table}[...].{column}", lookup)
        return lookup, info.type

    def visit_BoolOp(self, node: ast.BoolOp) -> tuple[Fn, str]:
        parts = [self.visit(v)[0] for v in node.values]
        fn = _and if isinstance(node.op, ast.And) else _or
        combined = parts[0]
        for part in parts[1:]:  # nested closures: no generator per evaluation
            combined = fn(combined, part)
        return (lambda env: _truthy(combined(env))), "bool"

    def visit_UnaryOp(self, node: ast.UnaryOp) -> tuple[Fn, str]:
        inner, typ = self.visit(node.operand)
        if isinstance(node.op, ast.Not):
            return (lambda env: not _truthy(inner(env))), "bool"
        if isinstance(node.op, ast.USub):
            if typ not in ("num", "any"):
                raise self.fail(node, f"cannot negate a {typ}")
            neg = _safe(operator.mul)
            return (lambda env: neg(inner(env), -1)), "num"
        if isinstance(node.op, ast.UAdd):
            return inner, typ
        raise self.fail(node, f"operator {type(node.op).__name__} is not allowed")

    def visit_BinOp(self, node: ast.BinOp) -> tuple[Fn, str]:
        op = _ARITH.get(type(node.op))
        if op is None:
            raise self.fail(node, f"operator {type(node.op).__name__} is not allowed")
        (left, lt), (right, rt) = self.visit(node.left), self.visit(node.right)
        for t, side in ((lt, node.left), (rt, node.right)):
            if t in ("str", "bool"):
                raise self.fail(side, f"arithmetic on a {t} is not allowed")
        return (lambda env: op(left(env), right(env))), "num"

    def visit_Call(self, node: ast.Call) -> tuple[Fn, str]:
        if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS:
            raise self.fail(node, f"function calls are limited to {', '.join(_FUNCTIONS)}")
        if node.keywords:
            raise self.fail(node, "keyword arguments are not allowed")
        f, lo, hi = _FUNCTIONS[node.func.id]
        if not lo <= len(node.args) <= hi:
            raise self.fail(node, f"{node.func.id}() takes {lo} to {hi} arguments")
        args = [self.visit(a)[0] for a in node.args]
        return (lambda env: f(*(a(env) for a in args))), "any"

    def visit_Compare(self, node: ast.Compare) -> tuple[Fn, str]:
        left, lt = self.visit(node.left)
        left_info = _field_of(self, node.left)
        steps: list[Fn] = []
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            if isinstance(op, ast.In | ast.NotIn):
                steps.append(self._membership(op, left, left_info, comparator))
                continue
            right, rt = self.visit(comparator)
            self._check_types(comparator, lt, rt)
            _check_category(self, left_info, comparator)
            _check_category(self, _field_of(self, comparator), node.left)
            steps.append(_comparison(op, left, right, self, node))
            left, lt, left_info = right, rt, _field_of(self, comparator)
        if len(steps) == 1:
            return steps[0], "bool"
        return (lambda env: all(s(env) for s in steps)), "bool"

    def _membership(self, op: ast.cmpop, left: Fn, info: FieldInfo | None, node: ast.expr) -> Fn:
        if not isinstance(node, ast.List | ast.Tuple | ast.Set):
            raise self.fail(node, "'in' needs a list of constants, e.g. x in ['a', 'b']")
        values = []
        for elt in node.elts:
            if not isinstance(elt, ast.Constant) or not isinstance(
                elt.value, str | int | float | bool
            ):
                raise self.fail(elt, "a list after 'in' may hold only constants")
            _check_category(self, info, elt)
            values.append(elt.value)
        members = frozenset(values)
        if isinstance(op, ast.In):
            return lambda env: (v := left(env)) is not None and _member(v, members)
        return lambda env: (v := left(env)) is None or not _member(v, members)

    def _check_types(self, node: ast.expr, lt: str, rt: str) -> None:
        if "any" in (lt, rt) or lt == rt or {lt, rt} == {"num", "bool"}:
            return
        raise self.fail(node, f"cannot compare a {lt} with a {rt}")


def _member(v: Any, members: frozenset[Any]) -> bool:
    try:
        return v in members
    except TypeError:
        return False


def _comparison(op: ast.cmpop, left: Fn, right: Fn, c: _Compiler, node: ast.AST) -> Fn:
    if isinstance(op, ast.Eq | ast.Is):
        return lambda env: left(env) == right(env)
    if isinstance(op, ast.NotEq | ast.IsNot):
        return lambda env: left(env) != right(env)
    order = _ORDER.get(type(op))
    if order is None:
        raise c.fail(node, f"operator {type(op).__name__} is not allowed")

    def compare(env: Env) -> bool:
        a, b = left(env), right(env)
        if a is None or b is None:
            return False
        try:
            return bool(order(a, b))
        except TypeError:
            return False

    return compare


def _field_of(c: _Compiler, node: ast.expr) -> FieldInfo | None:
    if (
        isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id in NAMESPACES
    ):
        return c.resolve(node.value.id, node.attr)
    return None


def _check_category(c: _Compiler, info: FieldInfo | None, node: ast.expr) -> None:
    """Comparing a categorical field with a value it can never take is a typo: refuse it."""
    if info is None or info.values is None:
        return
    if (
        isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and node.value not in info.values
    ):
        raise c.fail(
            node,
            f"{node.value!r} is not a value of {info.namespace}.{info.name} "
            f"(values: {', '.join(info.values)})",
        )


def _accessor(info: FieldInfo) -> Fn:
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


def _describe(node: ast.AST) -> str:
    names = {
        "Subscript": "indexing ([...])",
        "Lambda": "lambda",
        "ListComp": "a comprehension",
        "GeneratorExp": "a comprehension",
        "DictComp": "a comprehension",
        "SetComp": "a comprehension",
        "Dict": "a dict literal",
        "List": "a list outside 'in'",
        "Tuple": "a tuple outside 'in'",
        "IfExp": "an if-expression",
        "NamedExpr": "assignment (:=)",
        "Await": "await",
        "Starred": "unpacking (*)",
        "JoinedStr": "an f-string",
    }
    return names.get(type(node).__name__, f"{type(node).__name__} syntax")
