"""A shard's durability glue: recovery (fencing, snapshot, WAL replay), the flush before
every answer, and snapshots written in a background thread.

Recovery takes the data directory over (fencing out a previous writer, see
`decisioning/journal/fencing.py`), loads the newest snapshot and replays the WAL after
it through the journal; only then does the shard answer. A snapshot copies the state on
the actor's thread (a memcpy of the matrices and the ids), moves the WAL to a new
segment, and writes the copy in a thread; once it is durable, the segments and snapshots
it covers are deleted. An erasure snapshots at once, so the files that hold the customer
leave the disk; the decision logs are rewritten without them before the WAL may go.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from actors.shard.journal import Journal
from decisioning.config import Config
from decisioning.journal import snapshot
from decisioning.journal.fencing import Fenced, Owner
from decisioning.journal.snapshot import State
from decisioning.journal.wal import Replay, Wal, replay
from decisioning.stores.decision_log import DecisionLog

__all__ = ["SNAPSHOT_RETRY_S", "Durability", "Writer"]

SNAPSHOT_RETRY_S = 30.0
log = logging.getLogger("nextbest.shard")


class Writer:
    """Writes one snapshot in a background thread; `done` is set when it has finished."""

    def __init__(
        self,
        directory: str,
        state: State,
        generation: int,
        then: Callable[[State], None],
        before: Callable[[], object] | None = None,
        erased: set[str] | None = None,
    ) -> None:
        self.state = state
        self.before = before  # erasure in the decision logs, before the WAL may go
        self.erased = erased or set()
        self.generation = generation
        self.then = then
        self.path = ""
        self.error: BaseException | None = None
        self.seconds = 0.0
        self.done = threading.Event()
        threading.Thread(
            target=self._run, args=(directory,), name="nextbest-snapshot", daemon=True
        ).start()

    def _run(self, directory: str) -> None:
        started = time.perf_counter()
        try:
            if self.before is not None:
                self.before()
            self.path = snapshot.write(directory, self.state, self.generation)
            self.then(self.state)
        except BaseException as e:  # noqa: BLE001 - reported by Durability.finish_snapshot
            self.error = e
        finally:
            self.seconds = time.perf_counter() - started
            self.done.set()


class Durability:
    """Recovery, flush and snapshots of one shard's directory. `capture` copies the
    shard's state into a snapshot (given the WAL segment it starts at) and `restore`
    loads one; `monotonic` is the clock snapshots are timed by."""

    def __init__(
        self,
        shard_id: int,
        config: Config,
        journal: Journal,
        capture: Callable[[int], State],
        restore: Callable[[State], None],
        log_dir: str | None = None,
        logs: DecisionLog | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.shard_id = shard_id
        self.server = config.server
        self.journal = journal
        self.capture = capture
        self.restore = restore
        self.log_dir = log_dir
        self.logs = logs  # decision and outcome logs (Parquet), if any
        self.monotonic = monotonic
        self.owner: Owner | None = None
        self.recovery: dict[str, Any] = {}
        self.snapshot_at = monotonic()
        self.writing: Writer | None = None  # a snapshot being written in the background
        self.last_snapshot: dict[str, Any] = {}
        self.retry_at = 0.0  # after a failed snapshot, the next try waits until then
        self.purge = False  # a customer was erased: snapshot at once, then drop the WAL
        self.erased: set[str] = set()  # erased since the last snapshot: out of the logs too

    def recover(self, layout_key: str) -> None:
        """Take the directory over (fencing out a previous writer), load the snapshot and
        replay the WAL after it; only then does the shard answer."""
        assert self.log_dir is not None
        started = time.perf_counter()
        self.owner, inherit = Owner.take_over(self.log_dir)
        profiles = 0
        if inherit.snapshot is not None:
            st = snapshot.read(self.log_dir, inherit.snapshot, layout_key)
            self.restore(st)
            profiles = len(st.id_ends)
        loaded = time.perf_counter()
        report = Replay()
        for row in replay(self.log_dir, inherit.segments, report):
            self.journal.redo(row)
        self.owner.settle(inherit, report.lengths)
        wal = self.journal.wal = Wal(self.log_dir, self.server.fsync, self.owner.generation)
        wal.recount()  # the inherited segments count towards the next snapshot
        done = time.perf_counter()
        self.recovery = {
            "generation": self.owner.generation,
            "restarts": self.owner.restarts,
            "snapshot_profiles": profiles,
            "wal_records": report.records,
            "dropped_bytes": report.dropped_bytes,
            "seconds": round(done - started, 3),
            "snapshot_s": round(loaded - started, 3),
            "replay_s": round(done - loaded, 3),
        }
        if inherit.snapshot is not None or report.records:
            log.warning("shard %d recovered: %s", self.shard_id, self.recovery)

    def erase_soon(self, customer_id: str | None = None) -> None:
        """An erasure: snapshot at the next flush, after which the WAL segments and
        snapshots that held the customer go; with `customer_id`, the decision log files
        are rewritten without the customer first."""
        if customer_id is not None:
            self.erased.add(customer_id)
        self.purge = True

    def flush(self) -> None:
        """Make what this call applied durable (per `server.fsync`) before it is acked;
        start a snapshot when one is due, finish one that is written."""
        wal = self.journal.wal
        if wal is None or self.owner is None:
            return
        wal.commit()
        self.owner.check()  # raises Fenced: a newer generation owns the directory
        if self.writing is not None:
            if not self.writing.done.is_set():
                return
            self.finish_snapshot()
        if self.purge:  # an erasure: the files that hold the customer go with a snapshot
            self.purge = False
            self.start_snapshot()
            return
        s = self.server
        now = self.monotonic()
        due = now - self.snapshot_at >= s.snapshot_every_s
        big = wal.bytes >= s.snapshot_wal_bytes and now >= self.retry_at
        if self.journal.changed and (due or big):
            self.start_snapshot()

    def snapshot(self) -> dict[str, Any]:
        """Write a snapshot now and wait for it (graceful stop; tests)."""
        if self.journal.wal is None or self.owner is None:
            return {}
        self.owner.check()
        if self.writing is not None:  # one in the background: let it finish first
            self.writing.done.wait()
            self.finish_snapshot()
        self.start_snapshot()
        assert self.writing is not None
        self.writing.done.wait()
        return self.finish_snapshot()

    def start_snapshot(self) -> None:
        """Copy the state (the only part the shard's callers wait for) and write it in a
        background thread. The WAL moves to a new segment first: the snapshot covers
        every segment before it."""
        wal = self.journal.wal
        assert wal is not None and self.log_dir is not None and self.owner is not None
        state = self.capture(wal.rotate())
        self.journal.changed = False
        self.snapshot_at = self.monotonic()
        erased, self.erased = self.erased, set()
        before = None
        if erased and self.logs is not None:
            logs = self.logs
            before = lambda: logs.rewrite_without(erased)  # noqa: E731
        self.writing = Writer(
            self.log_dir, state, self.owner.generation, self._covered, before, erased
        )

    def _covered(self, state: State) -> None:
        """In the writer thread, once a snapshot is durable: delete the WAL segments and
        snapshots it covers (so an erased customer leaves the disk without waiting for
        the next request). The actor thread only appends to the newest segment."""
        wal = self.journal.wal
        assert wal is not None and self.log_dir is not None and self.owner is not None
        self.owner.check()  # a fenced writer deletes nothing
        snapshot.prune(self.log_dir, state.wal_seq, self.owner.generation)
        wal.drop_before(state.wal_seq)

    def finish_snapshot(self) -> dict[str, Any]:
        """After the writer thread is done: note the snapshot, or its failure (which
        changes nothing: the WAL still has everything; it is retried)."""
        w, self.writing = self.writing, None
        wal = self.journal.wal
        assert w is not None and wal is not None and self.owner is not None
        self.owner.check()
        wal.recount()
        if w.error is not None:
            self.retry_at = self.monotonic() + SNAPSHOT_RETRY_S  # not on every call
            self.erased |= w.erased  # their log rewrite is tried again with the next one
            log.error(
                "shard %d: snapshot failed, the WAL keeps everything: %s", self.shard_id, w.error
            )
            self.journal.changed = True
            return {"error": str(w.error)}
        self.last_snapshot = {
            "profiles": len(w.state.id_ends),
            "seconds": round(w.seconds, 3),
            "path": w.path,
        }
        return self.last_snapshot

    def stop(self) -> dict[str, Any]:
        """Graceful stop: a last snapshot, the log closed, the directory marked clean (the
        next start is not counted as a restart)."""
        result = self.snapshot()
        self.close()
        if self.owner is not None:
            self.owner.release()
        return result

    def close(self) -> None:
        if self.logs is not None:
            self.logs.close()  # what is buffered is written
        if self.writing is not None:
            self.writing.done.wait()
            with contextlib.suppress(Fenced):
                self.finish_snapshot()
        if self.journal.wal is not None:
            self.journal.wal.close()

    def status(self) -> dict[str, Any]:
        wal = self.journal.wal
        return {
            "durable": wal is not None,
            "fenced": self.owner is not None and self.owner.fenced,
            "wal_bytes": wal.bytes if wal is not None else 0,
            "last_snapshot_s_ago": round(self.monotonic() - self.snapshot_at, 1),
            "snapshotting": self.writing is not None,
            "last_snapshot": self.last_snapshot,
            "recovery": self.recovery,
        }
