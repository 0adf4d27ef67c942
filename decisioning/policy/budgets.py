"""Volume budgets: at most N of an action a day across all customers, with no central
call on the decision path.

The supervisor's `Ledger` is the only place that grants: it hands each shard an
allotment (a chunk of the day's budget) and never grants more than the budget in
total. A shard decides from its own `Allotments`: a budgeted action whose allotment
is used up is not a candidate, and each time one is shown one unit is used. A
background thread asks for the next chunk when an allotment runs low. So the budget
is never exceeded. What can go unused is at most the allotments stranded on shards
at the end of the day or lost with a shard that died: `shards × chunk`, with
chunk = ceil(budget / (4 × shards)), so at most about a quarter of the budget, and
nothing when the shards keep asking until the budget is granted out. Days are UTC.

A day is named by the asking shard's clock, so at midnight shards ask for two days at
once. The ledger forgets a day only when both the supervisor's clock and the newest day
it has granted are more than `KEEP_DAYS` past it (no single clock, ahead by mistake,
can make it forget the current day), and refuses any day it has forgotten
(`pruned_before`): a lagging shard is never granted a forgotten day's budget again.
`decisioning/stores/ledger.py` keeps the ledger durable.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
import time
from collections.abc import Callable

from decisioning.config import Config

__all__ = ["KEEP_DAYS", "Allotments", "Ledger", "budgets_of", "chunk_size", "day_of"]

KEEP_DAYS = 2  # days kept before the older of the two clocks (see the module docstring)


def day_of(ts: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ts))


def budgets_of(config: Config) -> dict[str, int]:
    """action id -> its budget per day (only budgeted actions)."""
    return {a.id: a.budget.per_day for a in config.actions if a.budget is not None}


def chunk_size(budget: int, shards: int) -> int:
    return max(1, math.ceil(budget / (4 * shards)))


class Allotments:
    """A shard's allotments of budgeted actions, for the current day."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # the decision thread takes, the refill thread adds
        self.left: dict[tuple[str, str], int] = {}  # (action, day) -> units left

    def available(self, action_id: str, day: str) -> bool:
        return self.left.get((action_id, day), 0) > 0

    def take(self, action_id: str, day: str) -> bool:
        with self._lock:
            n = self.left.get((action_id, day), 0)
            if n <= 0:
                return False
            self.left[(action_id, day)] = n - 1
            return True

    def add(self, action_id: str, day: str, n: int) -> None:
        with self._lock:
            for key in [k for k in self.left if k[1] < day]:  # yesterday's are void
                del self.left[key]
            self.left[(action_id, day)] = self.left.get((action_id, day), 0) + n

    def refill(
        self,
        budgets: dict[str, int],
        day: str,
        chunk: Callable[[int], int],
        lease: Callable[[str, str, int], int],
    ) -> int:
        """Ask `lease(action, day, want)` for every budgeted action running low (below
        half a chunk); returns the units granted."""
        granted = 0
        for action_id, budget in budgets.items():
            want = chunk(budget)
            if self.left.get((action_id, day), 0) * 2 < want:
                n = lease(action_id, day, want)
                if n > 0:
                    self.add(action_id, day, n)
                    granted += n
        return granted


class Ledger:
    """What the supervisor has granted, per action and day; never more than the budget.
    Days before `pruned_before` are forgotten, and refused."""

    def __init__(
        self,
        granted: dict[str, dict[str, int]] | None = None,
        pruned_before: str | None = None,
    ) -> None:
        self.granted: dict[str, dict[str, int]] = granted or {}  # day -> action -> units
        self.pruned_before = pruned_before

    def forgotten(self, day: str) -> bool:
        return self.pruned_before is not None and day < self.pruned_before

    def grant(self, action_id: str, day: str, want: int, budget: int) -> int:
        if self.forgotten(day):  # what was granted that day is not known any more
            return 0
        done = self.granted.setdefault(day, {}).get(action_id, 0)
        n = max(0, min(want, budget - done))
        if n:
            self.granted[day][action_id] = done + n
        return n

    def prune(self, today: str) -> None:
        """Forget the days more than KEEP_DAYS before both `today` (the supervisor's
        clock) and the newest day granted; `pruned_before` never moves back."""
        if not self.granted:  # (the newest day granted is always kept)
            return
        newest = max(self.granted)
        horizon = _days_before(min(today, newest), KEEP_DAYS)
        if self.pruned_before is None or horizon > self.pruned_before:
            self.pruned_before = horizon
        for day in [d for d in self.granted if d < horizon]:
            del self.granted[day]


def _days_before(day: str, n: int) -> str:
    return (dt.date.fromisoformat(day) - dt.timedelta(days=n)).isoformat()
