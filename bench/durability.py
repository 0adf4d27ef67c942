"""Snapshot and recovery of one large shard, in this process: how long requests wait
for the snapshot's copy, how fast the shard applies events while a thread writes it,
and how long a restart takes to load it and replay the WAL written after it."""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass

from actors.messages import ApplyEvents
from actors.shard import Shard
from bench.common import config40
from decisioning.config import Config
from decisioning.profile import Event

__all__ = ["durability_figures"]


def durability_figures(cfg: Config, n: int, records: int, directory: str) -> dict[str, float]:
    """A shard of `n` profiles (40 features) and `records` WAL records after its snapshot:
    snapshot pause and write time, event throughput while a snapshot is written, and
    recovery (snapshot load + WAL replay) time."""
    cfg40 = config40(cfg)
    now = time.time()
    shard = _filled(Shard(0, cfg40, clock=lambda: now, log_dir=directory), n, now)
    idle = _events_per_s(shard, n, now, 2.0)
    snapshot = _snapshot(shard, n, now)
    for i in range(records):  # one WAL record per call, a group commit per 100 calls
        shard.apply_events(ApplyEvents((Event(f"customer-{i % n:08d}", "login", now),)))
        if i % 100 == 99 and shard.wal:
            shard.wal.commit()
    digest = shard.state_digest()
    shard.wal.commit() if shard.wal else None  # a SIGKILL now: no close(), no snapshot
    t0 = time.perf_counter()
    back = Shard(0, cfg40, clock=lambda: now, log_dir=directory)
    recovery = time.perf_counter() - t0
    assert back.state_digest() == digest, "recovery did not give back the same state"
    back.close()
    return {
        "profiles": n,
        "wal_records": back.recovery["wal_records"],
        "snapshot_pause_first_s": snapshot.pause_first_s,
        "snapshot_pause_s": snapshot.pause_s,
        "snapshot_write_s": snapshot.write_s,
        "snapshot_mb": snapshot.mb,
        "events_per_s_idle": idle,
        "events_per_s_during_snapshot": snapshot.events_per_s,
        "recovery_s": recovery,
        "recovery_snapshot_s": back.recovery["snapshot_s"],
        "recovery_replay_s": back.recovery["replay_s"],
    }


def _filled(shard: Shard, n: int, now: float) -> Shard:
    """`shard` with `n` profiles that hold the same values (a few events' worth)."""
    store = shard.store
    for e in (
        Event("customer-00000000", "page_view", now, {"page": "cards"}),
        Event("customer-00000000", "purchase", now, {"amount": 42.0}),
        Event("customer-00000000", "profile_update", now, {"age": 40, "segment": "affluent"}),
    ):
        store.apply(e)
    for i in range(1, n):  # rows straight into the store: the snapshot, not the WAL, has them
        store.row(f"customer-{i:08d}")
    for name in ("f32", "f64", "i32", "u16"):
        getattr(store, name)[1:n] = getattr(store, name)[0]
    shard.journal.changed = True
    return shard


def _events_per_s(shard: Shard, n: int, now: float, seconds: float) -> float:
    """Events applied per second in batches of 100, a group commit per batch."""
    batch = ApplyEvents(
        tuple(Event(f"customer-{i * 7919 % n:08d}", "page_view", now) for i in range(100))
    )
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        shard.apply_events(batch)
        shard.wal.commit() if shard.wal else None  # an actor call: one group commit
        done += len(batch.events)  # (a message: its length is its field count)
    return done / (time.perf_counter() - started)


@dataclass(frozen=True, slots=True)
class _Snapshots:
    pause_first_s: float  # requests wait for the copy (the first one also faults memory in)
    pause_s: float
    write_s: float  # the writer thread
    mb: float
    events_per_s: float  # applied meanwhile


def _snapshot(shard: Shard, n: int, now: float) -> _Snapshots:
    """Two snapshots (the first also pays for faulting its memory in): the pause of
    each, the second's write time and size, events/s while they are written."""
    pauses, rates = [], []
    for _ in range(2):
        t0 = time.perf_counter()
        shard.durability.start_snapshot()
        pauses.append(time.perf_counter() - t0)
        writer = shard.durability.writing
        assert writer is not None
        while not writer.done.is_set():
            rates.append(_events_per_s(shard, n, now, 0.1))
        write_s = writer.seconds
        snap = shard.durability.finish_snapshot()
    size = sum(os.path.getsize(os.path.join(snap["path"], f)) for f in os.listdir(snap["path"]))
    rate = statistics.mean(rates) if rates else 0.0
    return _Snapshots(pauses[0], pauses[1], write_s, size / 1e6, rate)
