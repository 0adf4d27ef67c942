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

Three steps, one module each: `parser` (text -> tree, with the limits), `compiler`
(tree -> closures, refusing what the language does not allow) and `runtime` (what the
closures run with: Env, Rule, the null semantics).
"""

from __future__ import annotations

from decisioning.policy.rules.compiler import NAMESPACES, compile_rule
from decisioning.policy.rules.parser import MAX_EXPRESSION_CHARS
from decisioning.policy.rules.runtime import Env, FieldInfo, Fn, Resolve, Rule

__all__ = [
    "MAX_EXPRESSION_CHARS",
    "NAMESPACES",
    "Env",
    "FieldInfo",
    "Fn",
    "Resolve",
    "Rule",
    "compile_rule",
]
