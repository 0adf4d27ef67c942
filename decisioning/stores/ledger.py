"""The supervisor's budget ledger on disk: every grant is durable before it is answered.

The hazard: a grant answered but not stored lets a restarted supervisor grant the same
units again, and a ledger half written (a crash in the middle of the write) loses every
grant of the day. So `grant()` loads the ledger, grants, and returns only after
`save()` has replaced the file with one that holds the grant:

1. write the whole ledger to `<path>.<pid>.tmp`, flush and fsync it;
2. rename it over `<path>` (atomic: a reader sees the old ledger or the new one);
3. fsync the directory, so the rename itself survives a power loss.

A crash before step 2 leaves the old ledger (the grant was not answered); after it, the
new one. Either way the ledger never shows less than was answered. A grant answered to
a shard that never got the answer is stranded (unused), never granted twice.

File format (JSON): `{"format": 2, "pruned_before": day | null, "granted": {day:
{action: units}}}`. The first format was the `granted` map alone; it is read as one
whose oldest day is `pruned_before` (its pruning may have dropped older days).
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import time
from collections.abc import Callable

import pyarrow.fs as pafs

from decisioning.policy.budgets import Ledger, day_of
from decisioning.stores.fs import filesystem, replace_file

__all__ = ["LedgerStore"]

log = logging.getLogger("nextbest.budgets")
FORMAT = 2


class LedgerStore:
    """The ledger file at `path` on `fs`; one writer (the supervisor) at a time."""

    def __init__(
        self, fs: pafs.FileSystem, path: str, clock: Callable[[], float] = time.time
    ) -> None:
        self.fs, self.path, self.clock = fs, path, clock
        self.local = isinstance(fs, pafs.LocalFileSystem)
        self._refused: set[str] = set()  # days a warning was logged for (shards retry)
        if self.local:  # temp files of a writer killed in the middle of a save
            for stale in glob.glob(glob.escape(path) + ".*.tmp"):
                with contextlib.suppress(OSError):
                    os.unlink(stale)

    @classmethod
    def at(cls, data_dir: str, clock: Callable[[], float] = time.time) -> LedgerStore:
        """The ledger of a deployment: `<data_dir>/budgets/ledger.json`."""
        fs, root = filesystem(data_dir)
        return cls(fs, f"{root}/budgets/ledger.json", clock)

    def load(self) -> Ledger:
        try:
            with self.fs.open_input_stream(self.path) as f:
                data = json.loads(f.read().decode())
        except FileNotFoundError:
            return Ledger()
        if "format" not in data:  # the first format: the granted map alone
            return Ledger(data, min(data, default=None))
        return Ledger(data["granted"], data["pruned_before"])

    def grant(self, action_id: str, day: str, want: int, budget: int) -> int:
        """Grant up to `want` more of `day`'s budget of `action_id`; the grant is durable
        when this returns. 0 when it is granted out or `day` is forgotten."""
        ledger = self.load()
        ledger.prune(day_of(self.clock()))
        n = ledger.grant(action_id, day, want, budget)
        if n:
            self.save(ledger)
        elif ledger.forgotten(day) and day not in self._refused:
            self._refused.add(day)
            log.warning(
                "budget ledger: refused %s for %s, a day already forgotten (before %s); "
                "the asking shard's clock lags",
                action_id,
                day,
                ledger.pruned_before,
            )
        return n

    def save(self, ledger: Ledger) -> None:
        """Replace the ledger file with `ledger` (see the module docstring).

        On a local filesystem every step is fsynced. Other pyarrow filesystems offer no
        fsync: the temp file is written and moved with the filesystem's own calls, which
        on object stores (S3, GCS) makes each object durable once its write returns and
        whole or absent to readers; that is the best they allow."""
        data = {"format": FORMAT, "pruned_before": ledger.pruned_before, "granted": ledger.granted}
        body = json.dumps(data, sort_keys=True).encode()
        replace_file(self.fs, self.path, body)
