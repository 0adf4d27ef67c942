"""Rule text to a Python expression tree, with the limits a config author may hit: an
empty or over-long expression, a syntax error with its line and column.

The text is parsed as a Python expression (never executed); what the tree may hold is
the compiler's business (decisioning/policy/rules/compiler.py).
"""

from __future__ import annotations

import ast
import warnings

from decisioning.errors import RuleError

__all__ = ["MAX_EXPRESSION_CHARS", "parse"]

MAX_EXPRESSION_CHARS = 4000


def parse(source: str) -> ast.expr:
    """The expression tree of `source`, or a RuleError saying where and why not."""
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
    return tree.body
