"""Two-phase changes of what a shard serves: a new version is staged (built and checked,
not served), then committed on every shard or aborted on every shard.

One mechanism for models, catalogs and context tables: the supervisor stages on all
shards first, and commits only when every one staged, so no decision anywhere sees half
of a change. A shard that restarted since staging has nothing staged: committing then
changes nothing (it loaded the stored, new state at start).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["Staged"]

T = TypeVar("T")


class Staged(Generic[T]):
    """Values staged under a key, served only once committed (keys: a model and its
    role, a context table's name, or None for the one catalog)."""

    def __init__(self) -> None:
        self._pending: dict[Hashable, T] = {}

    def __contains__(self, key: Hashable) -> bool:
        return key in self._pending

    def stage(self, value: T, key: Hashable = None) -> None:
        """Keep `value` until it is committed or aborted (a later stage replaces it)."""
        self._pending[key] = value

    def commit(self, serve: Callable[[T], object], key: Hashable = None) -> bool:
        """Hand the staged value to `serve` (one call: the swap is one step); False when
        nothing was staged."""
        if key not in self._pending:
            return False
        serve(self._pending.pop(key))
        return True

    def abort(self, key: Hashable = None) -> None:
        """Drop what is staged (nothing staged: nothing happens)."""
        self._pending.pop(key, None)
