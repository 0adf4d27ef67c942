"""Decision and outcome logs: Parquet files partitioned by date, written off the request path.

    <logs>/decisions/date=YYYY-MM-DD/shard-<i>-<ms>-<rand>.parquet   a row per candidate
    <logs>/outcomes/date=YYYY-MM-DD/shard-<i>-<ms>-<rand>.parquet    a row per outcome

Anyone reads them with `pyarrow.dataset.dataset(path, partitioning="hive")`.

A shard hands each decision over with a few list appends (the feature matrices are the
ones the models scored, kept by reference). A buffer is rolled into a file when it holds
`roll_rows` rows or is `roll_s` old, and a writer thread builds and writes the file. At
most `max_pending` rolled buffers wait for it; then the shard waits: memory is bounded
and nothing is dropped. `close()` writes everything. A crash loses what was buffered
(at most `roll_s` seconds of logs); profiles are not affected, they are in the WAL.

Erasure: `erase(id)` drops the customer's buffered rows at once; `rewrite_without(ids)`
(run by the shard's snapshot thread before the snapshot that ends the customer's WAL
tombstone) rewrites each of this shard's files that holds them. Nothing else writes
while it runs, and a crash before it finishes leaves the tombstone, so it is redone.
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

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from decisioning.arbitration import Decision, Trace
from decisioning.config import LogsSpec

__all__ = [
    "DECISIONS_SCHEMA",
    "OUTCOMES_SCHEMA",
    "DecisionLog",
    "filesystem",
    "logs_root",
]

log = logging.getLogger("nextbest.logs")

DECISIONS_SCHEMA = pa.schema(
    [
        ("decision_id", pa.string()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("customer_id", pa.string()),
        ("channel", pa.string()),
        ("placement", pa.string()),
        ("context", pa.string()),  # JSON, keys sorted
        ("action_id", pa.string()),  # null: no candidate was eligible
        ("model", pa.string()),
        ("model_version", pa.string()),  # e.g. propensity@3; null: not scored by a model
        ("variant", pa.string()),  # champion, challenger, explore
        ("features", pa.list_(pa.float64())),  # as scored, in the model's feature order
        ("propensity", pa.float64()),
        ("priority", pa.float64()),
        ("rank", pa.int32()),  # 0 = highest priority
        ("chosen", pa.bool_()),
        ("position", pa.int32()),  # in the answer (0 = first); null: not shown
        ("probability", pa.float64()),  # that the logging policy put it first
        ("shadow_version", pa.string()),  # a model in shadow: scored too, not used
        ("shadow_propensity", pa.float64()),
    ]
)
OUTCOMES_SCHEMA = pa.schema(
    [
        ("decision_id", pa.string()),
        ("action_id", pa.string()),
        ("customer_id", pa.string()),
        ("outcome", pa.string()),
        ("ts", pa.timestamp("us", tz="UTC")),
    ]
)


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and the root path in it, for a local path or any URI."""
    if "://" in uri and not uri.startswith("file://"):
        fs, root = pafs.FileSystem.from_uri(uri)
        return fs, root.rstrip("/")
    return pafs.LocalFileSystem(), os.path.abspath(uri.removeprefix("file://"))


def logs_root(data_dir: str, spec: LogsSpec) -> str:
    """Where the logs of a deployment go: `logs.dir`, default <data_dir>/logs."""
    return spec.dir or data_dir.rstrip("/") + "/logs"


@dataclass(frozen=True, slots=True)
class _Decided:
    decision: Decision
    context: str
    variant: str
    shadow: Trace | None  # the same candidates, scored by the models in shadow


_Outcome = tuple[str, str, str, str, float]  # decision_id, action_id, customer_id, outcome, ts


class DecisionLog:
    """The log writer of one shard (its buffers, its files, its writer thread)."""

    def __init__(
        self,
        root: str,
        shard_id: int,
        spec: LogsSpec,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fs, self.root = filesystem(root)
        self.prefix = f"shard-{shard_id}-"
        self.spec = spec
        self.clock = clock
        self._cv = threading.Condition()  # guards the buffers and the pending rolls
        self._io = threading.Lock()  # held while a file is written or rewritten
        self._decisions: list[_Decided] = []
        self._outcomes: list[_Outcome] = []
        self._rows = 0
        self._since = clock()
        self._pending: deque[tuple[list[_Decided], list[_Outcome]]] = deque()
        self._stopping = False
        self.stats = {"rows": 0, "outcomes": 0, "files": 0, "failed_rows": 0, "rewrites": 0}
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
            self._decisions.append(_Decided(decision, ctx, variant, shadow))
            self._rows += max(1, len(decision.trace.action_ids))
            self._maybe_roll()

    def outcomes(self, rows: Iterable[_Outcome]) -> None:
        with self._cv:
            for row in rows:
                self._outcomes.append(row)
                self._rows += 1
            self._maybe_roll()

    def _maybe_roll(self) -> None:
        if self._rows >= self.spec.roll_rows:
            while len(self._pending) >= self.spec.max_pending and self._thread.is_alive():
                self._cv.wait(1.0)  # the writer is behind: wait, never drop
            self._roll()

    def _roll(self) -> None:
        if self._decisions or self._outcomes:
            self._pending.append((self._decisions, self._outcomes))
            self._decisions, self._outcomes, self._rows = [], [], 0
            self._cv.notify_all()
        self._since = self.clock()

    def erase(self, customer_id: str) -> None:
        """Drop the customer's rows that are not written yet (buffered or waiting)."""
        with self._cv:
            self._decisions = [d for d in self._decisions if d.decision.customer_id != customer_id]
            self._outcomes = [o for o in self._outcomes if o[2] != customer_id]
            for i, (ds, os_) in enumerate(self._pending):
                self._pending[i] = (
                    [d for d in ds if d.decision.customer_id != customer_id],
                    [o for o in os_ if o[2] != customer_id],
                )

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

    def flush(self) -> None:
        """Write everything buffered now and wait until it is written."""
        with self._cv:
            self._roll()
            while self._pending and self._thread.is_alive():
                self._cv.wait(1.0)
        with self._io:  # the last one taken may still be being written
            pass

    def close(self) -> None:
        """Write everything buffered and stop the writer (graceful stop)."""
        with self._cv:
            self._roll()
            self._stopping = True
            self._cv.notify_all()
        self._thread.join(timeout=300)

    def status(self) -> dict[str, Any]:
        with self._cv:
            buffered = self._rows + sum(len(ds) + len(os_) for ds, os_ in self._pending)
        return {**self.stats, "buffered": buffered}

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
                if not self._pending and self._stopping:
                    return
            with self._io:
                with self._cv:
                    item = self._pending.popleft() if self._pending else None
                    self._cv.notify_all()
                if item is not None:
                    self._write(*item)

    def _write(self, decided: list[_Decided], outcomes: list[_Outcome]) -> None:
        for kind, by_date, build in (
            ("decisions", _by_date(decided, lambda d: d.decision.ts), _decisions_table),
            ("outcomes", _by_date(outcomes, lambda o: o[4]), _outcomes_table),
        ):
            for date, rows in by_date.items():
                try:
                    table = build(rows)  # type: ignore[operator]
                    self._put(f"{self.root}/{kind}/date={date}", table)
                    self.stats["files"] += 1
                    self.stats["rows" if kind == "decisions" else "outcomes"] += table.num_rows
                except Exception as e:  # noqa: BLE001 - a log file lost, the shard goes on
                    self.stats["failed_rows"] += len(rows)
                    log.error("%s: could not write %d %s rows: %s", self.prefix, len(rows), kind, e)

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


def _by_date(rows: list[Any], ts: Callable[[Any], float]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for r in rows:
        out.setdefault(datetime.fromtimestamp(ts(r), UTC).strftime("%Y-%m-%d"), []).append(r)
    return out


def _decisions_table(decided: list[_Decided]) -> pa.Table:
    cols: dict[str, list[Any]] = {f.name: [] for f in DECISIONS_SCHEMA if f.name != "features"}
    flat: list[np.ndarray] = []
    offsets = [0]

    def row(d: Decision, ctx: str, variant: str, **values: Any) -> None:
        cols["decision_id"].append(d.decision_id)
        cols["ts"].append(int(d.ts * 1_000_000))
        cols["customer_id"].append(d.customer_id)
        cols["channel"].append(d.channel)
        cols["placement"].append(d.placement)
        cols["context"].append(ctx)
        cols["variant"].append(variant)
        for k, v in values.items():
            cols[k].append(v)

    for e in decided:
        d, tr = e.decision, e.decision.trace
        assert tr is not None
        n = len(tr.action_ids)
        if n == 0:  # nothing eligible: the decision is still a row (do nothing)
            row(
                d,
                e.context,
                e.variant,
                action_id=None,
                model=None,
                model_version=None,
                propensity=None,
                priority=None,
                rank=None,
                chosen=False,
                position=None,
                probability=None,
                shadow_version=None,
                shadow_propensity=None,
            )
            offsets.append(offsets[-1])
            continue
        features: list[np.ndarray | None] = [None] * n
        refs: list[str | None] = [None] * n
        for ref, idx, x in tr.blocks:
            for j, i in enumerate(idx):
                features[i] = x[j]
                refs[i] = ref
        order = sorted(range(n), key=lambda i: (-tr.priority[i], tr.action_ids[i]))
        ranks = [0] * n
        for r, i in enumerate(order):
            ranks[i] = r
        chosen = {a.action_id for a in d.actions}
        positions = {a.action_id: j for j, a in enumerate(d.actions)}
        first = d.actions[0].action_id if d.actions else None
        sh = e.shadow
        shadow_refs: list[str | None] = [None] * n
        for ref, idx, _ in sh.blocks if sh is not None else ():
            for i in idx:
                shadow_refs[i] = ref
        for i in range(n):
            aid = tr.action_ids[i]
            if d.probability is not None:  # an exploring policy
                p = d.probability.get(aid, 0.0)
            else:
                p = 1.0 if aid == first else 0.0
            row(
                d,
                e.context,
                e.variant,
                action_id=aid,
                model=tr.models[i],
                model_version=refs[i],
                propensity=float(tr.propensity[i]),
                priority=float(tr.priority[i]),
                rank=ranks[i],
                chosen=aid in chosen,
                position=positions.get(aid),
                probability=p,
                shadow_version=(ref_i := shadow_refs[i]),
                shadow_propensity=None if sh is None or ref_i is None else float(sh.propensity[i]),
            )
            f = features[i]
            if f is not None:
                flat.append(f)
            offsets.append(offsets[-1] + (0 if f is None else len(f)))
    values = np.concatenate(flat) if flat else np.empty(0, dtype=np.float64)
    arrays = {name: pa.array(v, DECISIONS_SCHEMA.field(name).type) for name, v in cols.items()}
    arrays["features"] = pa.ListArray.from_arrays(
        pa.array(offsets, pa.int32()), pa.array(values, pa.float64())
    )
    return pa.table([arrays[f.name] for f in DECISIONS_SCHEMA], schema=DECISIONS_SCHEMA)


def _outcomes_table(rows: list[_Outcome]) -> pa.Table:
    decision_ids, action_ids, customer_ids, outcomes, ts = (
        list(c) for c in zip(*rows, strict=True)
    )
    return pa.table(
        [
            pa.array(decision_ids, pa.string()),
            pa.array(action_ids, pa.string()),
            pa.array(customer_ids, pa.string()),
            pa.array(outcomes, pa.string()),
            pa.array([int(t * 1_000_000) for t in ts], pa.timestamp("us", tz="UTC")),
        ],
        schema=OUTCOMES_SCHEMA,
    )
