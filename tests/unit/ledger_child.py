"""A supervisor stand-in for the ledger crash tests, run as a child process and killed.

`python -m tests.unit.ledger_child PATH BUDGET WANT DIE_AT` grants WANT units of one
action and day from the `LedgerStore` at PATH in a loop and prints each answer (a line
per grant) once `grant()` has returned, until the budget is granted out. DIE_AT
`<step>:<n>` makes it SIGKILL itself the n-th time it reaches a step of the save:
`write` (half of the temp file written), `fsync` or `replace` (just before the call),
or `answer` (a grant returned, not reported yet); `none` waits for the parent's kill.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from typing import Any

import pyarrow.fs as pafs

from decisioning.stores.ledger import LedgerStore

ACTION, DAY = "hot", "2026-11-24"
NOON = 1_795_521_600.0  # of DAY, on the supervisor's clock


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _arm(step: str, n: int) -> None:
    """Make the n-th call of `os.<step>` kill this process (a fault point in a real save)."""
    real: Callable[..., Any] = getattr(os, step)
    calls = 0

    def hooked(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == n:
            if step == "write":  # a torn write: half of it reaches the file
                fd, data = args
                real(fd, bytes(data[: len(data) // 2]))
            _die()
        return real(*args)

    setattr(os, step, hooked)


def main(path: str, budget: int, want: int, die_at: str) -> None:
    store = LedgerStore(pafs.LocalFileSystem(), path, clock=lambda: NOON)
    step, _, count = die_at.partition(":")
    if step in ("write", "fsync", "replace"):
        _arm(step, int(count))
    grants = 0
    while True:
        n = store.grant(ACTION, DAY, want, budget)
        grants += 1
        if step == "answer" and grants == int(count):
            _die()
        print(n, flush=True)
        if n == 0:
            return


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
