"""Expression trees to closures: every node the language allows has a `visit_` method,
every other node is refused with its line and column, and names resolve through the
caller's `resolve(namespace, name)` so a rule reads only fields that exist.

Types are checked statically where they are known (comparing a number with a string,
arithmetic on a string, a categorical compared with a value it can never take); the
closures follow the null semantics of decisioning/policy/rules/runtime.py.
"""

from __future__ import annotations

import ast
import math
import operator
from typing import Any

from decisioning.errors import RuleError
from decisioning.policy.rules.parser import parse
from decisioning.policy.rules.runtime import (
    ARITH,
    FUNCTIONS,
    ORDER,
    Env,
    FieldInfo,
    Fn,
    Resolve,
    Rule,
    accessor,
    both,
    either,
    member,
    null_safe,
    truthy,
)

__all__ = ["NAMESPACES", "compile_rule"]

NAMESPACES = ("profile", "consent", "context", "action", "event", "score")
CONSTANT_NAMES = {"true": True, "false": False, "null": None}


def compile_rule(source: str, resolve: Resolve) -> Rule:
    """Parse and compile `source`; `resolve(namespace, name)` knows the allowed fields."""
    tree = parse(source)
    try:
        compiler = Compiler(source, resolve)
        fn, _ = compiler.visit(tree)
    except RecursionError:
        raise RuleError(source, "expression is nested too deeply") from None
    return Rule(source, fn, tuple(compiler.fields.items()))


class Compiler:
    """Compiles one expression; `fields` collects what it reads (for explanations)."""

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
        if node.id in CONSTANT_NAMES:
            v = CONSTANT_NAMES[node.id]
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
        read = accessor(info)
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
        fn = both if isinstance(node.op, ast.And) else either
        combined = parts[0]
        for part in parts[1:]:  # nested closures: no generator per evaluation
            combined = fn(combined, part)
        return (lambda env: truthy(combined(env))), "bool"

    def visit_UnaryOp(self, node: ast.UnaryOp) -> tuple[Fn, str]:
        inner, typ = self.visit(node.operand)
        if isinstance(node.op, ast.Not):
            return (lambda env: not truthy(inner(env))), "bool"
        if isinstance(node.op, ast.USub):
            if typ not in ("num", "any"):
                raise self.fail(node, f"cannot negate a {typ}")
            neg = null_safe(operator.mul)
            return (lambda env: neg(inner(env), -1)), "num"
        if isinstance(node.op, ast.UAdd):
            return inner, typ
        raise self.fail(node, f"operator {type(node.op).__name__} is not allowed")

    def visit_BinOp(self, node: ast.BinOp) -> tuple[Fn, str]:
        op = ARITH.get(type(node.op))
        if op is None:
            raise self.fail(node, f"operator {type(node.op).__name__} is not allowed")
        (left, lt), (right, rt) = self.visit(node.left), self.visit(node.right)
        for t, side in ((lt, node.left), (rt, node.right)):
            if t in ("str", "bool"):
                raise self.fail(side, f"arithmetic on a {t} is not allowed")
        return (lambda env: op(left(env), right(env))), "num"

    def visit_Call(self, node: ast.Call) -> tuple[Fn, str]:
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            raise self.fail(node, f"function calls are limited to {', '.join(FUNCTIONS)}")
        if node.keywords:
            raise self.fail(node, "keyword arguments are not allowed")
        f, lo, hi = FUNCTIONS[node.func.id]
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
            return lambda env: (v := left(env)) is not None and member(v, members)
        return lambda env: (v := left(env)) is None or not member(v, members)

    def _check_types(self, node: ast.expr, lt: str, rt: str) -> None:
        if "any" in (lt, rt) or lt == rt or {lt, rt} == {"num", "bool"}:
            return
        raise self.fail(node, f"cannot compare a {lt} with a {rt}")


def _comparison(op: ast.cmpop, left: Fn, right: Fn, c: Compiler, node: ast.AST) -> Fn:
    if isinstance(op, ast.Eq | ast.Is):
        return lambda env: left(env) == right(env)
    if isinstance(op, ast.NotEq | ast.IsNot):
        return lambda env: left(env) != right(env)
    order = ORDER.get(type(op))
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


def _field_of(c: Compiler, node: ast.expr) -> FieldInfo | None:
    if (
        isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id in NAMESPACES
    ):
        return c.resolve(node.value.id, node.attr)
    return None


def _check_category(c: Compiler, info: FieldInfo | None, node: ast.expr) -> None:
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
