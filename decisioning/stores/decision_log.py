"""Decision and outcome logs: Parquet files partitioned by date, written off the request path.

    <logs>/decisions/date=YYYY-MM-DD/shard-<i>-<ms>-<rand>.parquet   a row per candidate
    <logs>/outcomes/date=YYYY-MM-DD/shard-<i>-<ms>-<rand>.parquet    a row per outcome

Anyone reads them with `pyarrow.dataset.dataset(path, partitioning="hive")`.

A shard hands each decision over with a few list appends (the feature matrices are the
ones the models scored, kept by reference). A buffer is rolled into a batch when it
holds `roll_rows` rows or is `roll_s` old, and a writer thread builds and writes a file
per kind and date. At most `max_pending` rolled batches wait for it; then the shard
waits: memory is bounded and nothing is dropped.

A failed write drops nothing either: the batch stays first in line, less the files
already written (so no row is written twice), and is retried after 0.5 s, 1 s, 2 s, ...
up to 30 s; `status()["write_error"]` says what fails, since when, how many retries and
rows wait, until a write succeeds. Meanwhile the shard fills `max_pending` and waits.
`close()` writes everything; on a disk that still fails after its timeout it gives up
and logs, as an error, how many rows it could not write (the one loss: a graceful stop
on a broken disk). A crash loses what was not written yet (up to `roll_s` seconds of
logs, more while writes fail); profiles are not affected, they are in the WAL.

Erasure: `erase(id)` drops the customer's rows not written yet (buffered, or waiting for
the writer or a retry) at once; `rewrite_without(ids)` (run by the shard's snapshot
thread before the snapshot that ends the customer's WAL tombstone) rewrites each of this
shard's files that holds them, including one being written while `erase` ran. Nothing
else writes while it runs, and a crash before it finishes leaves the tombstone, so it is
redone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from decisioning.config import LogsSpec
from decisioning.policy.decide import Decision, Trace
from decisioning.stores.fs import filesystem
from decisioning.stores.log_tables import (
    DECISIONS_SCHEMA,
    OUTCOMES_SCHEMA,
    Decided,
    Outcome,
    decisions_table,
    outcomes_table,
)

__all__ = [
    "DECISIONS_SCHEMA",
    "OUTCOMES_SCHEMA",
    "DecisionLog",
    "logs_root",
]

log = logging.getLogger("nextbest.logs")
RETRY_MIN_S, RETRY_MAX_S = 0.5, 30.0  # backoff between retries of a failed write
DAY_S = 86400
_Key = tuple[str, int]  # ("decisions" or "outcomes", UTC days since the epoch)


def logs_root(data_dir: str, spec: LogsSpec) -> str:
    """Where the logs of a deployment go: `logs.dir`, default <data_dir>/logs."""
    return spec.dir or data_dir.rstrip("/") + "/logs"


@dataclass(slots=True)
class _Batch:
    """Rows rolled together, by kind and UTC day: one file each. The writer removes a
    part once its file is written, so a retried batch writes no row twice."""

    parts: dict[_Key, list[Any]]

    @classmethod
    def of(cls, decided: list[Decided], outcomes: list[Outcome]) -> _Batch:
        parts: dict[_Key, list[Any]] = {}
        for d in decided:
            parts.setdefault(("decisions", int(d.decision.ts // DAY_S)), []).append(d)
        for o in outcomes:
            parts.setdefault(("outcomes", int(o[4] // DAY_S)), []).append(o)
        return cls(parts)

    def rows(self) -> int:
        return sum(len(rows) for rows in self.parts.values())

    def drop(self, customer_id: str) -> None:
        for key, rows in self.parts.items():
            if key[0] == "decisions":
                self.parts[key] = [d for d in rows if d.decision.customer_id != customer_id]
            else:
                self.parts[key] = [o for o in rows if o[2] != customer_id]


class DecisionLog:
    """The log writer of one shard (its buffers, its files, its writer thread).

    `fs` (default: from `root`) and `sleep` (the wait between retries; default: a wait
    that `close` and `flush` cut short) are injectable for tests."""

    def __init__(
        self,
        root: str,
        shard_id: int,
        spec: LogsSpec,
        clock: Callable[[], float] = time.monotonic,
        fs: pafs.FileSystem | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.fs, self.root = (fs, root) if fs is not None else filesystem(root)
        self.prefix = f"shard-{shard_id}-"
        self.spec = spec
        self.clock = clock
        self._cv = threading.Condition()  # guards the buffers, the batches and the error
        self._io = threading.Lock()  # held while a file is written or rewritten
        self._decisions: list[Decided] = []
        self._outcomes: list[Outcome] = []
        self._rows = 0
        self._since = clock()
        self._pending: deque[_Batch] = deque()  # the first one is being written or retried
        self._stopping = self._abandoned = False
        self._error: dict[str, Any] | None = None  # the write that fails now, if one does
        self._kick = threading.Event()  # ends a wait between retries early
        self._sleep = sleep or self._wait
        self.stats = {
            "rows": 0,
            "outcomes": 0,
            "files": 0,
            "rewrites": 0,
            "write_failures": 0,  # failed attempts, each retried
            "unwritable_rows": 0,  # rows no table could be built from (a bug), logged
        }
        self._sweep()
        self._thread = threading.Thread(target=self._run, name="nextbest-logs", daemon=True)
        self._thread.start()

    # -- the shard's side ----------------------------------------------------------------

    def decision(
        self,
        decision: Decision,
        context: dict[str, Any],
        variant: str = "champion",
        shadow: Trace | None = None,
    ) -> None:
        """Log a decision made with `trace=True`."""
        assert decision.trace is not None
        ctx = json.dumps(context, sort_keys=True, separators=(",", ":"))
        with self._cv:
            self._decisions.append(Decided(decision, ctx, variant, shadow))
            self._rows += max(1, len(decision.trace.action_ids))
            self._maybe_roll()

    def outcomes(self, rows: Iterable[Outcome]) -> None:
        with self._cv:
            for row in rows:
                self._outcomes.append(row)
                self._rows += 1
            self._maybe_roll()

    def _maybe_roll(self) -> None:
        if self._rows >= self.spec.roll_rows:
            while len(self._pending) >= self.spec.max_pending and self._thread.is_alive():
                self._cv.wait(1.0)  # the writer is behind or failing: wait, never drop
            self._roll()

    def _roll(self) -> None:
        if self._decisions or self._outcomes:
            self._pending.append(_Batch.of(self._decisions, self._outcomes))
            self._decisions, self._outcomes, self._rows = [], [], 0
            self._cv.notify_all()
        self._since = self.clock()

    def erase(self, customer_id: str) -> None:
        """Drop the customer's rows that are not written yet (buffered, waiting for the
        writer, or for a retry of a failed write)."""
        with self._cv:
            self._decisions = [d for d in self._decisions if d.decision.customer_id != customer_id]
            self._outcomes = [o for o in self._outcomes if o[2] != customer_id]
            for batch in self._pending:
                batch.drop(customer_id)

    def rewrite_without(self, customer_ids: set[str]) -> int:
        """Rewrite (or delete) each file of this shard that holds one of the customers;
        returns how many files changed. Blocks the writer while it runs."""
        with self._io:  # a file being written now may hold them: wait for it, then list
            files = [p for kind in ("decisions", "outcomes") for p in self._files(kind)]
        # files written from here on cannot hold them (erase() dropped their rows first),
        # so the writer goes on while the old files are rewritten
        changed = sum(self._rewrite(path, customer_ids) for path in files)
        self.stats["rewrites"] += changed
        return changed

    def flush(self, timeout: float = 300.0) -> bool:
        """Write everything buffered now and wait until it is written; False when it is
        not within `timeout` (writes fail: see `status()`; the rows wait, kept)."""
        deadline = time.monotonic() + timeout
        with self._cv:
            self._roll()
            self._kick.set()  # a failing write is retried now, not after its backoff
            while self._pending and self._thread.is_alive():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(min(left, 1.0))
            return not self._pending

    def close(self, timeout: float = 300.0) -> int:
        """Write everything buffered and stop the writer (graceful stop). Returns how
        many rows it could not write within `timeout` (a broken disk): those are lost,
        and logged as an error."""
        with self._cv:
            self._roll()
            self._stopping = True
            self._cv.notify_all()
        self._kick.set()
        self._thread.join(timeout=timeout)
        with self._cv:
            self._abandoned = True  # a writer still retrying stops at its next wake
            lost, error = self._waiting(), self._error
        self._kick.set()
        if lost:
            log.error(
                "%s: closed with %d decision and outcome log rows not written, now lost "
                "(the last write failed with: %s)",
                self.prefix,
                lost,
                error and error["message"],
            )
        return lost

    def status(self) -> dict[str, Any]:
        with self._cv:
            waiting = self._waiting()
            error = None if self._error is None else {**self._error, "rows_waiting": waiting}
            return {**self.stats, "buffered": self._rows + waiting, "write_error": error}

    def _waiting(self) -> int:
        return sum(batch.rows() for batch in self._pending)

    # -- the writer thread ---------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._pending and not self._stopping:
                    left = self.spec.roll_s - (self.clock() - self._since)
                    if left <= 0:
                        self._roll()  # an idle shard's rows do not wait for the next one
                        if self._pending:
                            break
                        left = self.spec.roll_s
                    self._cv.wait(left)
                if self._abandoned or not self._pending:
                    return
                retries = -1 if self._error is None else self._error["retries"]
            if not self._write_first():
                self._sleep(min(RETRY_MAX_S, RETRY_MIN_S * 2 ** min(retries + 1, 16)))

    def _wait(self, seconds: float) -> None:
        self._kick.wait(seconds)
        self._kick.clear()

    def _write_first(self) -> bool:
        """Write the first batch, a file per part; False when a write failed (the parts
        not written stay, for a retry)."""
        with self._io:
            with self._cv:
                batch = self._pending[0]
                parts = list(batch.parts.items())
            for key, rows in parts:
                if rows and (table := self._table(key, rows)) is not None:
                    kind, day = key
                    date = time.strftime("%Y-%m-%d", time.gmtime(day * DAY_S))
                    try:
                        self._put(f"{self.root}/{kind}/date={date}", table)
                    except Exception as e:  # noqa: BLE001 - the disk: kept, retried
                        self._failed(e)
                        return False
                    self.stats["files"] += 1
                    self.stats["rows" if kind == "decisions" else "outcomes"] += table.num_rows
                with self._cv:
                    del batch.parts[key]
            with self._cv:
                self._pending.popleft()
                if self._error is not None:
                    log.warning("%s: log writes work again", self.prefix)
                self._error = None
                self._cv.notify_all()
        return True

    def _table(self, key: _Key, rows: list[Any]) -> pa.Table | None:
        try:
            return decisions_table(rows) if key[0] == "decisions" else outcomes_table(rows)
        except Exception:  # noqa: BLE001 - a bug, not the disk: a retry would fail alike
            self.stats["unwritable_rows"] += len(rows)
            log.exception(
                "%s: no table from %d %s rows; not written", self.prefix, len(rows), key[0]
            )
            return None

    def _failed(self, e: Exception) -> None:
        with self._cv:
            self.stats["write_failures"] += 1
            if self._error is None:
                since = datetime.now(UTC).isoformat(timespec="seconds")
                self._error = {"message": f"{type(e).__name__}: {e}", "since": since, "retries": 0}
            else:
                self._error["retries"] += 1
            retries, waiting = self._error["retries"], self._waiting()
        log.error(
            "%s: could not write the decision log (%s); %d rows kept, retry %d",
            self.prefix,
            e,
            waiting,
            retries + 1,
        )

    def _put(self, directory: str, table: pa.Table) -> None:
        """Write under a hidden name, then rename: readers never see half a file."""
        name = f"{self.prefix}{time.time_ns() // 1_000_000}-{os.urandom(4).hex()}.parquet"
        self.fs.create_dir(directory, recursive=True)
        tmp = f"{directory}/.{name}"
        try:
            pq.write_table(table, tmp, filesystem=self.fs, compression=self.spec.compression)
            self.fs.move(tmp, f"{directory}/{name}")
        except BaseException:
            with contextlib.suppress(OSError):
                self.fs.delete_file(tmp)  # no hidden file left that erasure would not see
            raise

    def _files(self, kind: str) -> list[str]:
        base = f"{self.root}/{kind}"
        if self.fs.get_file_info(base).type == pafs.FileType.NotFound:
            return []
        infos = self.fs.get_file_info(pafs.FileSelector(base, recursive=True))
        return sorted(
            i.path
            for i in infos
            if i.type == pafs.FileType.File
            and i.base_name.startswith(self.prefix)
            and i.base_name.endswith(".parquet")
        )

    def _rewrite(self, path: str, customer_ids: set[str]) -> int:
        with self.fs.open_input_file(path) as f:
            table = pq.ParquetFile(f).read()
        hit = pc.is_in(table["customer_id"], value_set=pa.array(sorted(customer_ids)))
        if not pc.any(hit).as_py():
            return 0
        kept = table.filter(pc.invert(hit))
        if kept.num_rows == 0:
            self.fs.delete_file(path)
            return 1
        directory, name = path.rsplit("/", 1)
        tmp = f"{directory}/.{name}"
        try:
            pq.write_table(kept, tmp, filesystem=self.fs, compression=self.spec.compression)
            self.fs.move(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                self.fs.delete_file(tmp)
            raise
        return 1

    def _sweep(self) -> None:
        """Hidden files a crash left half-written (they may hold personal data)."""
        for kind in ("decisions", "outcomes"):
            base = f"{self.root}/{kind}"
            if self.fs.get_file_info(base).type == pafs.FileType.NotFound:
                continue
            for info in self.fs.get_file_info(pafs.FileSelector(base, recursive=True)):
                if info.type == pafs.FileType.File and info.base_name.startswith("." + self.prefix):
                    with contextlib.suppress(OSError):
                        self.fs.delete_file(info.path)
