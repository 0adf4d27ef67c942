"""A customer shard: live profiles, catalog and models of its customers, as a plain class.

It is the only writer of its customers' state. Every method takes and returns plain
data (dicts, lists), so it is unit-tested without Ray and made remote in `remote.py`.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa

from decisioning.config import OUTBOUND, Config
from decisioning.delivery.links import OpenLink, link_key, seal_link
from decisioning.delivery.outbox import Message, Outbox, QueuedDecision, Timers
from decisioning.errors import Backlogged, InvalidInput, ModelError, Moved, NextbestError, NotFound
from decisioning.journal import snapshot
from decisioning.journal.fencing import Fenced, Owner
from decisioning.journal.wal import Replay, Wal, replay
from decisioning.policy.budgets import Allotments, budgets_of, day_of
from decisioning.policy.catalog import Catalog, Trigger
from decisioning.policy.contacts import ContactLog, Limits, Policies
from decisioning.policy.context import ContextTable
from decisioning.policy.decide import (
    ChannelChoice,
    Decision,
    DecisionRequest,
    LoadedModel,
    Stages,
    choose_channel,
    decide,
)
from decisioning.policy.exploration import Explorer
from decisioning.policy.features import FeaturePlan
from decisioning.policy.rules import Env
from decisioning.policy.scoring import (
    LightGBMScorer,
    ModelBundle,
    ModelManifest,
    check_signature,
    scorer_for,
)
from decisioning.profile import Event, ProfileSchema, ProfileStore, RowState, event_from_wire
from decisioning.profile.identity import IDENTITY_RECORDS, Book
from decisioning.profile.slots import bucket, slot_of
from decisioning.stores.catalogs import with_catalog
from decisioning.stores.decision_log import DecisionLog

__all__ = ["OUTCOMES", "Shard", "decision_slot"]

OUTCOMES = ("impression", "click", "accept", "reject", "convert")
MAX_TRACKED_DECISIONS = 200_000
SNAPSHOT_RETRY_S = 30.0
log = logging.getLogger("nextbest.shard")


class _Record(NamedTuple):
    """What a shard remembers of a decision: enough for outcomes and the profile view."""

    customer_id: str
    actions: tuple[str, ...]
    ts: float
    channel: str
    placement: str | None
    model_version: str | None

    def to_wire(self, decision_id: str) -> dict[str, Any]:
        return {
            "decision_id": decision_id,
            "ts": self.ts,
            "channel": self.channel,
            "placement": self.placement,
            "actions": list(self.actions),
            "model_version": self.model_version,
        }


def _idem_key(event_id: str) -> bytes:
    return hashlib.blake2b(event_id.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class _Writer:
    """Writes one snapshot in a background thread; `done` is set when it has finished."""

    def __init__(
        self,
        directory: str,
        state: snapshot.State,
        generation: int,
        then: Callable[[snapshot.State], None],
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
        except BaseException as e:  # noqa: BLE001 - reported by _finish_snapshot
            self.error = e
        finally:
            self.seconds = time.perf_counter() - started
            self.done.set()


def decision_slot(decision_id: str) -> int:
    """The customer slot a decision id was made for ('d-<4 hex slot>-<random>')."""
    parts = decision_id.split("-")
    if len(parts) != 3 or parts[0] != "d" or len(parts[1]) != 4:
        raise NotFound(
            f"unknown decision {decision_id!r}", field="decision_id", code="unknown_decision"
        )
    try:
        return int(parts[1], 16)
    except ValueError:
        raise NotFound(
            f"unknown decision {decision_id!r}", field="decision_id", code="unknown_decision"
        ) from None


class Shard:
    """State and behaviour of one shard; one caller at a time (Ray actor semantics)."""

    def __init__(
        self,
        shard_id: int,
        config: Config,
        models: Iterable[ModelBundle] = (),
        clock: Callable[[], float] = time.time,
        log_dir: str | None = None,
        logs: DecisionLog | None = None,
        challengers: Iterable[tuple[ModelBundle, float, bool]] = (),
    ) -> None:
        self.shard_id = shard_id
        self.config = config
        self.clock = clock
        self.schema = ProfileSchema(config)
        self.store = ProfileStore(self.schema)
        self.catalog = Catalog(config, self.schema)
        self.models: dict[str, LoadedModel] = {}  # the champions
        # per model name: (challenger, share of customers, shadow: scored, never used)
        self.challengers: dict[str, tuple[LoadedModel, float, bool]] = {}
        self._staged: dict[tuple[str, str], tuple[LoadedModel, float, bool] | None] = {}
        # per model version: decisions it scored and the outcomes of those decisions
        self.variant_stats: dict[str, dict[str, int]] = {}
        # Decision history, bounded by MAX_TRACKED_DECISIONS whatever the number of
        # customers: the records live in one ring (oldest evicted first), and a customer's
        # recent list holds only ids of records still in it.
        self.decisions: OrderedDict[str, _Record] = OrderedDict()
        self.recent: dict[str, list[str]] = {}
        self.counters = {
            "events": 0,
            "decisions": 0,
            "outcomes": 0,
            "duplicates": 0,
            "erasures": 0,
            "triggers_fired": 0,  # decisions triggers made
            "messages_queued": 0,  # ... that chose an action (the rest chose nothing)
            "messages_acked": 0,
            "trigger_errors": 0,
        }
        self.stages: Stages | None = None
        # idempotency: event ids (and outcome keys) applied lately, oldest first
        # (as 16-byte blake2b digests: no client id, which may name a customer, is kept)
        self.seen: OrderedDict[bytes, None] = OrderedDict()  # popitem(last=False) is O(1)
        self.log_dir = log_dir
        self.wal: Wal | None = None
        self.owner: Owner | None = None
        self.recovery: dict[str, Any] = {}
        self._changed = False
        self._snapshot_at = time.monotonic()
        self._writing: _Writer | None = None  # a snapshot being written in the background
        self.last_snapshot: dict[str, Any] = {}
        self._retry_at = 0.0  # after a failed snapshot, the next try waits until then
        self._purge = False  # a customer was erased: snapshot at once, then drop the WAL
        exploration = config.decisioning.exploration
        self.explorer = Explorer(exploration) if exploration.policy != "none" else None
        self.policies = Policies(config)  # contact policies
        self.budgets = budgets_of(config)  # action -> per day, across every shard
        self.allotments = Allotments()  # this shard's share of them (refilled by the actor)
        self.contacts = ContactLog()  # what they count (kept only while some policy exists)
        self._staged_catalog: Any = None
        self.logs = logs  # decision and outcome logs (Parquet), if any
        self._erased: set[str] = set()  # erased since the last snapshot: out of the logs too
        self.timers = Timers()  # trigger timers (not_followed_by)
        self.outbox = Outbox(config.delivery.max_backlog)  # what triggers chose, undelivered
        self.link_key = link_key(config.delivery.link_key_env)  # seals open links, if any
        self.tables: dict[str, ContextTable] = {}  # external context tables, by name
        self.book = Book()  # links, forward pointers, merges in flight (decisioning/identity)
        self.aliases = self.book.aliases  # identifier -> customer (this shard's slots)
        self.forwards = self.book.forwards  # merged customer id -> the one it became
        self._staged_tables: dict[str, ContextTable] = {}
        self.refused: dict[str, str] = {}  # models refused at start: model ref -> why
        for bundle in models:
            if (loaded := self._load_at_start(bundle)) is not None:
                self.models[bundle.manifest.name] = loaded
        for bundle, share, shadow in challengers:
            if (loaded := self._load_at_start(bundle)) is not None:
                self.challengers[bundle.manifest.name] = (loaded, share, shadow)
        if log_dir is not None:
            self._recover(log_dir)

    # -- durability ----------------------------------------------------------------------

    def _recover(self, log_dir: str) -> None:
        """Take the directory over (fencing out a previous writer), load the snapshot and
        replay the WAL after it; only then does the shard answer."""
        started = time.perf_counter()
        self.owner, inherit = Owner.take_over(log_dir)
        profiles = 0
        if inherit.snapshot is not None:
            st = snapshot.read(log_dir, inherit.snapshot, self.schema.layout_key)
            self.store.load(st.id_blob, st.id_ends, st.matrices)
            self.book.load(st.identity)  # (before decisions: forwards matter)
            for did, (cid, actions, ts, channel, placement, version) in st.decisions:
                self._track(did, _Record(cid, tuple(actions), ts, channel, placement, version))
            self.seen = OrderedDict.fromkeys(st.seen)
            self.counters.update(st.counters)
            self.contacts.load(st.contacts)
            self.timers.load(st.timers)
            for row in st.outbound:
                self.outbox.add(Message.of(row))
            profiles = len(st.id_ends)
        loaded = time.perf_counter()
        report = Replay()
        for record in replay(log_dir, inherit.segments, report):
            self._redo(record)
        self.owner.settle(inherit, report.lengths)
        self.wal = Wal(log_dir, self.config.server.fsync, self.owner.generation)
        self.wal.recount()  # the inherited segments count towards the next snapshot
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

    def _redo(self, record: list[Any]) -> None:
        kind, body = record
        if kind == "e":
            events = [Event(c, t, ts, p or {}, i) for c, t, ts, p, i in body]
            for e in events:
                self.store.apply(e)
            self._remember(events)
            self._count_outcomes(events)
        elif kind == "d":
            did, cid, actions, ts, channel, placement, version = body
            self._track(did, _Record(cid, tuple(actions), ts, channel, placement, version))
            if self.policies.active:
                self.contacts.shown(cid, ts, channel, actions)
        elif kind == "x":  # an erasure (written before identity went separately: X)
            self._forget(body)
            self._erase_logs(body)
        elif kind == "erase":  # an erasure of the profile (its identity records: X)
            self._forget_profile(body)
            self._erase_logs(body)
        elif kind == "X":
            self._forget_identity(body)
        elif kind == "D":
            self.store.erase(body)
            self.contacts.forget(body)
            self.timers.drop_customer(body)
            self.recent.pop(body, None)
        elif kind == "T":  # a trigger timer set (due, armed at) or cleared (None)
            cid, trigger, due, armed = body
            if due is None:
                self.timers.clear(cid, trigger)
            else:
                self.timers.set(cid, trigger, due, armed)
        elif kind in IDENTITY_RECORDS:  # links, forward pointers, merges in flight
            self.book.apply(record)
        elif kind == "M":  # another profile folded into this one
            self._fold(*body)
        elif kind == "o":
            self.outbox.add(Message.of(body))
        elif kind == "k":
            self.outbox.ack(body)

    def _log(self, record: tuple[str, Any]) -> None:
        if self.wal is not None:
            self.wal.append(record)
            self._changed = True

    def flush(self) -> None:
        """Make what this call applied durable (per `server.fsync`) before it is acked;
        start a snapshot when one is due, finish one that is written."""
        if self.wal is None or self.owner is None:
            return
        self.wal.commit()
        self.owner.check()  # raises Fenced: a newer generation owns the directory
        if self._writing is not None:
            if not self._writing.done.is_set():
                return
            self._finish_snapshot()
        if self._purge:  # an erasure: the files that hold the customer go with a snapshot
            self._purge = False
            self._start_snapshot()
            return
        s = self.config.server
        now = time.monotonic()
        due = now - self._snapshot_at >= s.snapshot_every_s
        big = self.wal.bytes >= s.snapshot_wal_bytes and now >= self._retry_at
        if self._changed and (due or big):
            self._start_snapshot()

    def snapshot(self) -> dict[str, Any]:
        """Write a snapshot now and wait for it (graceful stop; tests)."""
        if self.wal is None or self.owner is None:
            return {}
        self.owner.check()
        if self._writing is not None:  # one in the background: let it finish first
            self._writing.done.wait()
            self._finish_snapshot()
        self._start_snapshot()
        assert self._writing is not None
        self._writing.done.wait()
        return self._finish_snapshot()

    def _start_snapshot(self) -> None:
        """Copy the state (the only part the shard's callers wait for: a memcpy of the
        matrices and the ids) and write it in a background thread. The WAL moves to a new
        segment first: the snapshot covers every segment before it."""
        assert self.wal is not None and self.log_dir is not None and self.owner is not None
        seq = self.wal.rotate()
        blob, ends, matrices = self.store.export()
        state = snapshot.State(
            wal_seq=seq,
            layout_key=self.schema.layout_key,
            id_blob=blob,
            id_ends=ends,
            matrices=matrices,
            decisions=list(self.decisions.items()),
            seen=list(self.seen),
            counters=dict(self.counters),
            contacts=self.contacts.rows(),
            timers=self.timers.rows(),
            outbound=[m.row() for m in self.outbox.messages()],
            identity=list(self.book.rows()),
        )
        self._changed = False
        self._snapshot_at = time.monotonic()
        erased, self._erased = self._erased, set()
        before = None
        if erased and self.logs is not None:
            logs = self.logs
            before = lambda: logs.rewrite_without(erased)  # noqa: E731
        self._writing = _Writer(
            self.log_dir, state, self.owner.generation, self._covered, before, erased
        )

    def _covered(self, state: snapshot.State) -> None:
        """In the writer thread, once a snapshot is durable: delete the WAL segments and
        snapshots it covers (so an erased customer leaves the disk without waiting for
        the next request). The actor thread only appends to the newest segment."""
        assert self.wal is not None and self.log_dir is not None and self.owner is not None
        self.owner.check()  # a fenced writer deletes nothing
        snapshot.prune(self.log_dir, state.wal_seq, self.owner.generation)
        self.wal.drop_before(state.wal_seq)

    def _finish_snapshot(self) -> dict[str, Any]:
        """After the writer thread is done: note the snapshot, or its failure (which
        changes nothing: the WAL still has everything; it is retried)."""
        w, self._writing = self._writing, None
        assert w is not None and self.wal is not None and self.owner is not None
        self.owner.check()
        self.wal.recount()
        if w.error is not None:
            self._retry_at = time.monotonic() + SNAPSHOT_RETRY_S  # not on every call
            self._erased |= w.erased  # their log rewrite is tried again with the next one
            log.error(
                "shard %d: snapshot failed, the WAL keeps everything: %s", self.shard_id, w.error
            )
            self._changed = True
            return {"error": str(w.error)}
        self.last_snapshot = {
            "profiles": len(w.state.id_ends),
            "seconds": round(w.seconds, 3),
            "path": w.path,
        }
        return self.last_snapshot

    def state_digest(self) -> str:
        """sha256 of the shard's state (profiles, decisions, idempotency keys): equal
        digests mean a restore gave back exactly what was there."""
        h = hashlib.sha256()
        blob, ends, matrices = self.store.export()
        h.update(blob)
        h.update(ends.tobytes())
        for name in sorted(matrices):
            h.update(np.ascontiguousarray(matrices[name]).tobytes())
        h.update(repr(list(self.decisions.items())).encode())
        h.update(b"".join(self.seen))
        h.update(repr(sorted(self.contacts.rows())).encode())
        h.update(repr(sorted(self.timers.rows())).encode())
        h.update(repr([m.row() for m in self.outbox.messages()]).encode())
        h.update(self.book.digest().encode())
        return h.hexdigest()

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
        if self._writing is not None:
            self._writing.done.wait()
            with contextlib.suppress(Fenced):
                self._finish_snapshot()
        if self.wal is not None:
            self.wal.close()

    def _fresh(self, events: list[Event]) -> list[Event]:
        """The events not applied before (by event id); retried duplicates are dropped."""
        out, ids = [], set()
        for e in events:
            if e.event_id is not None:
                key = _idem_key(e.event_id)
                if key in self.seen or key in ids:
                    self.counters["duplicates"] += 1
                    continue
                ids.add(key)
            out.append(e)
        return out

    def _remember(self, events: list[Event]) -> None:
        limit = self.config.server.idempotency_keys
        for e in events:
            if e.event_id is not None:
                self.seen[_idem_key(e.event_id)] = None
        while len(self.seen) > limit:
            self.seen.popitem(last=False)

    def _apply(self, events: list[Event], now: float | None) -> list[Event]:
        """Check all, drop duplicates, log, apply: acked events are never lost or doubled."""
        for e in events:
            self.schema.check_event(e, now)
        fw = self.forwards
        moved = {e.customer_id: fw[e.customer_id] for e in events if e.customer_id in fw}
        if moved:  # every one of them, so the caller resends the batch once
            first = next(iter(moved))
            raise Moved(first, moved[first], moved)
        fresh = self._fresh(events)
        if fresh:
            triggers = self.catalog.triggers_on if self.catalog.triggers else None
            if (
                triggers
                and self.outbox.full
                and any(not t.timed for e in fresh for t in triggers.get(e.type, ()))
            ):
                raise Backlogged(
                    f"the outbound queue is full ({len(self.outbox)} messages undelivered): "
                    "events that fire triggers wait until the sinks catch up"
                )
            self._log(
                (
                    "e",
                    [[e.customer_id, e.type, e.ts, dict(e.properties), e.event_id] for e in fresh],
                )
            )
            for e in fresh:
                if not self.catalog.triggers:
                    self.store.apply(e)
                    continue
                crossing = self._conditions(e, crossing_only=True)
                self.store.apply(e)
                self._on_event(e, crossing)
            self._remember(fresh)
        return fresh

    # -- identity (the protocol: decisioning/profile/identity.py) --------------------------------

    def _logged(self, records: list[tuple[str, list[Any]]]) -> None:
        for record in records:
            self._log(record)

    def _survivor(self, customer_id: str) -> str:
        """Where a merged customer went (following merges of merges on this shard)."""
        seen = {customer_id}
        while customer_id in self.forwards:
            customer_id = self.forwards[customer_id]
            if customer_id in seen:
                break
            seen.add(customer_id)
        return customer_id

    def _here(self, customer_id: str) -> None:
        """Raise Moved for a customer merged into another (the caller asks there)."""
        target = self.forwards.get(customer_id)
        if target is not None:
            raise Moved(customer_id, target)

    def resolve(self, alias: str) -> dict[str, Any]:
        """The customer an identifier is linked to (None: not linked), and whether the
        merge its first link owes is still to finish."""
        return {"customer_id": self.aliases.get(alias), "owed": alias in self.book.owed}

    def link(self, alias: str, customer_id: str) -> dict[str, Any]:
        """Link an identifier to a customer (a later link moves it: the newest wins). The
        first link owes the merge of the identifier's anonymous profile, durably."""
        previous = self.aliases.get(alias)
        self._logged(self.book.link(alias, customer_id))
        owed = self.book.owed.get(alias)
        return {
            "alias": alias,
            "customer_id": customer_id,
            "previous": previous,
            "owed": None if owed is None else owed[0],
        }

    def merged_into(self, customer_id: str) -> str | None:
        """The id a customer was merged into (None: it is live)."""
        return self.forwards.get(customer_id)

    def pin(self, survivor: str, token: str, merged: str) -> bool:
        """Merge step 1, on the survivor's shard: it cannot be merged away meanwhile."""
        self._logged(self.book.pin(survivor, token, merged, self.clock()))
        return True

    def unpin(self, survivor: str, token: str) -> bool:
        records = self.book.unpin(survivor, token)
        self._logged(records)
        return bool(records)

    def freeze(
        self, merged: str, survivor: str, token: str | None = None, reason: str = "merge"
    ) -> dict[str, Any]:
        """Merge step 2, on the merged customer's shard: from now on requests for `merged`
        are sent to `survivor` (Moved); returns its state to fold there and the merge id.
        Repeating it returns the same (the row stays until drop_merged)."""
        records, merge = self.book.freeze(merged, survivor, token, reason)
        self._logged(records)
        state = None if merge["done"] else self.store.take(merged)
        return {
            **merge,
            "known": state is not None,
            "state": None if state is None else [a.tobytes() for a in state],
            "contacts": [list(e) for e in self.contacts.entries.get(merged, ())],
        }

    def absorb(self, survivor: str, merge_id: str, frozen: dict[str, Any]) -> bool:
        """Merge step 3, on the survivor's shard: fold the frozen state in, once per
        merge id (a retried merge folds nothing twice)."""
        self._here(survivor)
        if merge_id in self.book.absorbed or _idem_key(f"merge:{merge_id}") in self.seen:
            return False
        record = [survivor, merge_id, frozen["state"], frozen["contacts"], self.clock()]
        self._log(("M", record))
        self._fold(*record)
        return True

    def _fold(
        self,
        survivor: str,
        merge_id: str,
        state: list[bytes] | None,
        contacts: list[Any],
        ts: float | None = None,  # (absent in records written before it was kept)
    ) -> None:
        if state is not None:
            arrays = [
                np.frombuffer(b, dtype=dt).copy()
                for b, dt in zip(state, (np.float32, np.float64, np.int32, np.uint16), strict=True)
            ]
            self.store.merge(survivor, RowState(*arrays))
        if contacts and self.policies.active:
            self.contacts.load([(survivor, *row) for row in contacts])
        self.seen[_idem_key(f"merge:{merge_id}")] = None
        self.book.apply(("absorbed", [merge_id, self.clock() if ts is None else ts]))

    def drop_merged(self, merged: str, alias: bool = False) -> bool:
        """Merge step 5, on the merged customer's shard: its row goes and the merge is no
        longer owed (the forward pointer stays, so requests for it reach the survivor);
        an identifier merged in without a link is linked to the survivor from now on.
        A customer that is not merged away is never dropped."""
        survivor = self.forwards.get(merged)
        if survivor is None:
            return False
        known = self.store.erase(merged)
        self.contacts.forget(merged)
        self.timers.drop_customer(merged)
        self.recent.pop(merged, None)  # its decisions stay tracked, for late outcomes
        if known:
            self._log(("D", merged))
        if alias and merged not in self.aliases:
            self._logged(self.book.link(merged, survivor))  # (forwarded: owes nothing)
        self._logged(self.book.settle(merged))
        return known

    def settle(self, merged: str) -> bool:
        """Nothing is owed for a live customer whose owed merge would fold it into
        itself (its survivor was merged into it meanwhile)."""
        if merged in self.forwards:
            return False
        records = self.book.settle(merged)
        self._logged(records)
        return bool(records)

    def cancel_merge(self, merged: str, survivor: str, token: str) -> dict[str, Any]:
        """Call off a stale attempt (its freeze is refused from now on), unless it froze
        `merged` to `survivor` already: then the merge is to be finished instead."""
        self._logged(self.book.cancel(merged, survivor, token, self.clock()))
        frozen = self.forwards.get(merged) == survivor
        return {"frozen": frozen, "owed": merged in self.book.owed}

    def compress(self, merged: str, expected: str, target: str) -> bool:
        """Point a merged customer straight at the end of its chain of merges."""
        if merged in self.book.owed:  # (its survivor is pinned: it is the end already)
            return False
        records = self.book.compress(merged, expected, target)
        self._logged(records)
        return bool(records)

    def unfinished_merges(self, stale_s: float) -> list[dict[str, Any]]:
        """Merges owed here and pins held longer than `stale_s` (for the sweep)."""
        return self.book.unfinished(self.clock(), stale_s)

    def identity_of(self, key: str, aliases: bool = True) -> dict[str, Any]:
        """What this shard knows of an id or identifier: its link, its forward pointer,
        a merge of it still owed, and (a scan: `aliases`) the identifiers linked to it."""
        owed = self.book.owed.get(key)
        return {
            "linked_to": self.aliases.get(key),
            "merged_into": self.forwards.get(key),
            "owed": None if owed is None else {"survivor": owed[0], "reason": owed[1]},
            "aliases": sorted(a for a, c in self.aliases.items() if c == key) if aliases else [],
        }

    def forget_identity(self, customer_id: str) -> list[str]:
        """Erasure: every link to or from the customer, its forward pointers and merges
        in flight, here; returns the ids that were merged into it (the caller forgets
        them as well: they are the same person)."""
        touched = self._touches(customer_id)
        merged = self._forget_identity(customer_id)
        if touched and self.wal is not None:
            self._log(("X", customer_id))
            self._purge = True  # the records naming the customer leave the disk with it
        return merged

    def _touches(self, c: str) -> bool:
        b = self.book
        return (
            c in b.forwards
            or c in b.pins
            or c in b.owed
            or any(c in (a, t) for a, t in b.aliases.items())
            or any(t == c for t in b.forwards.values())
            or any(s == c for s, _, _ in b.owed.values())
            or any(m == c for pins in b.pins.values() for m, _ in pins.values())
        )

    def _forget_identity(self, customer_id: str) -> list[str]:
        own = [customer_id] if customer_id in self.forwards else []  # merged away itself
        merged = self.book.forget(customer_id)
        for m in merged + own:  # merged into the erased customer: the same person
            self._forget_profile(m)  # (its row is there only if its merge was unfinished)
            self._erase_logs(m)
        return merged

    # -- triggers ------------------------------------------------------------------------

    def _conditions(self, e: Event, crossing_only: bool = False) -> dict[str, bool]:
        """Whether each trigger on `e`'s type has its condition true now (before `e` is
        applied, for crossing triggers; after, for the rest)."""
        out: dict[str, bool] = {}
        env = None
        for t in self.catalog.triggers_on.get(e.type, ()):
            if crossing_only and not t.crossing:
                continue
            if t.when is None:
                out[t.id] = True
                continue
            if env is None:
                vector = self.store.features(e.customer_id, self.clock())
                env = Env(
                    vector.tolist(),
                    {},
                    event={**e.properties, "type": e.type},
                    tables=self.tables,
                    scorer=lambda name, v=vector: self._customer_score(name, v),
                )
            out[t.id] = t.when.holds(env)
        return out

    def _customer_score(self, name: str, profile: np.ndarray) -> float | None:
        """The champion `name`'s score for a customer, for a customer-level model (one
        with no action, value or channel features; null for any other, and when no such
        model is served)."""
        m = self.models.get(name)
        if m is None or m.plan.action_cols or m.plan.value_col >= 0 or m.plan.channel_col >= 0:
            return None
        x = m.plan.matrix(profile, self.catalog.actions[:1], [0.0], "", {})
        return float(m.scorer.predict(x)[0])

    def _on_event(self, e: Event, before: dict[str, bool]) -> None:
        """After `e` is applied: cancel the timers it follows up, arm or fire the
        triggers it matches."""
        cid = e.customer_id
        for t in self.catalog.cancels.get(e.type, ()):
            armed = self.timers.get(cid, t.id)
            if armed is not None and e.ts >= armed[1]:  # follows the event that armed it
                self.timers.clear(cid, t.id)
                self._log(("T", [cid, t.id, None, None]))
        matched = self.catalog.triggers_on.get(e.type)
        if not matched:
            return
        holds = self._conditions(e)
        for t in matched:
            if not holds.get(t.id):
                continue
            if t.crossing and before.get(t.id, True):
                continue  # it was already true: no crossing
            if t.timed:
                assert t.within is not None
                due = e.ts + t.within
                self.timers.set(cid, t.id, due, e.ts)
                self._log(("T", [cid, t.id, due, e.ts]))
            else:
                self._fire(t, cid)

    def _fire(self, t: Trigger, customer_id: str) -> None:
        """Decide for the trigger's channel (every policy applies; doing nothing may win)
        and queue what was chosen."""
        request = {
            "customer_id": customer_id,
            "channel": t.channel,
            "placement": t.placement,
            "context": {"trigger": t.id},
        }
        try:
            d, variant, choice = self._decide(request)
        except NextbestError as err:  # e.g. a catalog without the channel's actions
            self.counters["trigger_errors"] += 1
            log.error("shard %d: trigger %s failed for a customer: %s", self.shard_id, t.id, err)
            return
        self.counters["triggers_fired"] += 1
        if d.actions:
            queued = QueuedDecision.of(d, variant, choice)
            m = Message(d.decision_id, customer_id, d.channel, t.id, self.clock(), queued)
            self._log(("o", m.row()))
            self.outbox.add(m)
            self.counters["messages_queued"] += 1

    def tick(self, limit: int = 1000) -> dict[str, Any]:
        """Fire the timers that are due (at most `limit`); while the outbound queue is
        full they wait. Called by the actor's ticker thread (tests call it directly)."""
        now = self.clock()
        fired = 0
        due = [] if self.outbox.full else self.timers.take_due(now, limit)
        for i, (cid, trigger, _, _) in enumerate(due):
            if self.outbox.full:
                self.timers.put_back(due[i:])
                break
            self.timers.clear(cid, trigger)
            self._log(("T", [cid, trigger, None, None]))
            t = self.catalog.trigger_by_id.get(trigger)
            if t is None or not t.timed:
                continue  # the trigger left the catalog since it was armed
            self._fire(t, cid)
            fired += 1
        return {"fired": fired, "pending": len(self.timers), "next_due": self.timers.next_due()}

    # -- outbound queue ------------------------------------------------------------------

    def lease_outbound(
        self, channel: str, n: int, lease_s: float | None = None
    ) -> list[dict[str, Any]]:
        """Hand out up to `n` undelivered messages of `channel` (at least once: each
        comes back after `lease_s` unless acked)."""
        d = self.config.delivery
        lease = d.lease_s if lease_s is None else lease_s
        now = self.clock()
        key = self.link_key
        out = []
        for m in self.outbox.lease(channel, n, now, lease):
            token = None
            if key is not None:  # the message decides its content again when opened
                placement = m.decision.placement
                link = OpenLink(m.customer_id, m.channel, placement, m.id, now + d.link_ttl)
                token = seal_link(key, link)
            out.append(m.to_wire(token))
        return out

    def ack_outbound(self, ids: list[str]) -> int:
        """Delivered: these messages leave the queue (unknown or already acked: ignored)."""
        done = self.outbox.ack(ids)
        if done:
            self._log(("k", done))
            self.counters["messages_acked"] += len(done)
        return len(done)

    def release_outbound(self, ids: list[str]) -> int:
        """Not delivered: hand these out again at the next lease."""
        self.outbox.release(ids)
        return len(ids)

    def outbound_status(self) -> dict[str, Any]:
        now = self.clock()
        return {
            **self.outbox.stats(now),
            "timers": len(self.timers),
            "next_due_s": None
            if (due := self.timers.next_due()) is None
            else round(max(due - now, 0.0), 3),
        }

    # -- events --------------------------------------------------------------------------

    def apply_events(self, events: list[dict[str, Any]]) -> int:
        """Apply a batch of events: all are checked before any is applied."""
        batch = [event_from_wire(e) for e in events]
        fresh = self._apply(batch, self.clock())
        self.counters["events"] += len(fresh)
        self._count_outcomes(fresh)  # (outcomes forwarded after a merge; as replay does)
        return len(batch)

    # -- decisions -----------------------------------------------------------------------

    def decide(self, request: dict[str, Any]) -> dict[str, Any]:
        """Decide for one customer; applies the request's triggering event first."""
        decision, variant, choice = self._decide(request)
        out = decision.to_wire()
        out["variant"] = variant
        if choice is not None:
            out["channel_choice"] = choice.to_wire()
        return out

    def _decide(self, request: dict[str, Any]) -> tuple[Decision, str, ChannelChoice | None]:
        cfg = self.config.decisioning
        customer_id = request["customer_id"]
        self._here(customer_id)
        channel = request["channel"]
        outbound = channel == OUTBOUND
        if outbound and not cfg.outbound.channels:
            raise InvalidInput(
                "no outbound channels are configured (decisioning.outbound.channels)",
                field="channel",
                code="unknown_channel",
            )
        if not outbound and channel not in self.catalog.by_channel:
            raise InvalidInput(
                f"unknown channel {channel!r}", field="channel", code="unknown_channel"
            )
        limit = 1 if outbound else request.get("limit") or cfg.default_limit  # one message
        if not 1 <= limit <= cfg.max_limit:
            raise InvalidInput(f"limit must be between 1 and {cfg.max_limit}", field="limit")
        dry_run = bool(request.get("dry_run"))
        if request.get("event") is not None:
            event = event_from_wire({**request["event"], "customer_id": customer_id})
            try:
                self.schema.check_event(event, self.clock())
            except InvalidInput as e:
                field = f"event.{e.field}" if e.field else "event"
                raise InvalidInput(e.message, field=field, code=e.code) from None
            if not dry_run:
                self.counters["events"] += len(self._apply([event], None))
        now = self.clock()
        decision_id = f"d-{slot_of(customer_id):04x}-{os.urandom(8).hex()}"
        models, variant, shadows = self._variant(customer_id)
        profile = self.store.features(customer_id, now)
        choice = None
        if outbound:  # choose the channel first, then decide on it
            choice = self._outbound_channel(request, profile, now, models)
            channel = choice.channel
        context = request.get("context") or {}
        r = DecisionRequest(
            decision_id,
            customer_id,
            profile,
            channel,
            request.get("placement"),
            context,
            limit,
            self.catalog,
            models,
            cfg,
            now,
            explain=bool(request.get("explain")),
            stages=self.stages,
            trace=self.logs is not None and not dry_run,
            explorer=None if dry_run else self.explorer,
            limits=self._limits(customer_id, now, channel),
            contact_cost=cfg.outbound.costs.get(channel, 0.0) if outbound else None,
            tables=self.tables,
        )
        decision = decide(r)
        if decision.explored:
            variant = "explore"
        if not dry_run:
            if self.budgets:
                day = day_of(now)
                for a in decision.actions:
                    if a.action_id in self.budgets:
                        self.allotments.take(a.action_id, day)  # available: checked above
            self._record(decision)
            for ref in decision.model_versions:
                stats = self.variant_stats.setdefault(ref, {"decisions": 0})
                stats["decisions"] += 1
            if self.logs is not None:
                shadow_scores = None
                if shadows:  # the same candidates, scored by the shadow models too
                    shadow = replace(
                        r, models=shadows, stages=None, explorer=None, explain=False, trace=True
                    )
                    shadow_scores = decide(shadow).trace
                self.logs.decision(decision, context, variant, shadow=shadow_scores)
        self.counters["decisions"] += 1
        return decision, variant, choice

    def _limits(self, customer_id: str, now: float, channel: str) -> Limits | None:
        """What the contact policies and this shard's budget allotments allow now."""
        limits = None
        if self.policies.active:
            history = self.contacts.of(customer_id, now, self.policies.horizon)
            limits = self.policies.limits(history, now, channel)
        if self.budgets:
            day = day_of(now)
            used_up = {
                a: "budget: this shard's share of today's budget is used up"
                for a in self.budgets
                if not self.allotments.available(a, day)
            }
            if used_up:
                limits = replace(limits or Limits(), exhausted=used_up)
        return limits

    def _outbound_channel(
        self,
        request: dict[str, Any],
        profile: np.ndarray,
        now: float,
        models: dict[str, LoadedModel],
    ) -> ChannelChoice:
        """Decide once per outbound channel, greedily and without recording anything
        (consent, rules, contact policies, budgets, the channel's outbound rule and its
        cost all apply), then pick the channel (see `choose_channel`)."""
        ob = self.config.decisioning.outbound
        customer_id = request["customer_id"]
        probes = {
            ch: decide(
                DecisionRequest(
                    "probe",
                    customer_id,
                    profile,
                    ch,
                    request.get("placement"),
                    request.get("context") or {},
                    1,
                    self.catalog,
                    models,
                    self.config.decisioning,
                    now,
                    limits=self._limits(customer_id, now, ch),
                    contact_cost=ob.costs.get(ch, 0.0),
                    tables=self.tables,
                )
            )
            for ch in ob.channels
        }
        preferred = None
        if ob.preference_attribute is not None:
            preferred = self.schema.category(profile, ob.preference_attribute)
        return choose_channel(probes, ob.costs, preferred)

    def _variant(
        self, customer_id: str
    ) -> tuple[dict[str, LoadedModel], str, dict[str, LoadedModel]]:
        """The models that decide for this customer, the variant, and the shadow models."""
        if not self.challengers:
            return self.models, "champion", {}
        models, variant, shadows = self.models, "champion", {}
        for name, (m, share, shadow) in self.challengers.items():
            if shadow:
                shadows[name] = m
            elif bucket(name, customer_id) < share:
                models = {**models, name: m}
                variant = "challenger"
        return models, variant, shadows

    def _record(self, d: Decision) -> None:
        record = _Record(
            d.customer_id,
            tuple(a.action_id for a in d.actions),
            d.ts,
            d.channel,
            d.placement,
            ",".join(d.model_versions) or None,
        )
        self._log(("d", [d.decision_id, *record]))
        self._track(d.decision_id, record)
        if self.policies.active:
            self.contacts.shown(d.customer_id, d.ts, d.channel, record.actions)

    def _track(self, decision_id: str, record: _Record) -> None:
        self.decisions[decision_id] = record
        keep = self.config.decisioning.recent_decisions
        if keep and record.customer_id not in self.forwards:  # (merged away: no row)
            self.store.row(record.customer_id)
            recent = self.recent.setdefault(record.customer_id, [])
            recent.append(decision_id)
            if len(recent) > keep:
                del recent[0]
        if len(self.decisions) > MAX_TRACKED_DECISIONS:
            old_id, old = self.decisions.popitem(last=False)
            ids = self.recent.get(old.customer_id)
            if ids is not None and old_id in ids:
                ids.remove(old_id)
                if not ids:
                    del self.recent[old.customer_id]

    # -- outcomes ------------------------------------------------------------------------

    def check_outcomes(self, outcomes: list[dict[str, Any]]) -> int:
        """Check outcomes without recording them (first phase of a cross-shard batch)."""
        return len(self._outcome_events(outcomes))

    def record_outcomes(self, outcomes: list[dict[str, Any]]) -> int | dict[str, Any]:
        """Record outcomes of earlier decisions; all are checked before any is applied.
        Outcomes of a customer merged away since come back as events for the survivor
        (`{"accepted": n, "forward": [...]}`), which the caller applies there."""
        events = self._outcome_events(outcomes)
        moved = [e for e in events if e.customer_id in self.forwards]
        if moved:
            events = [e for e in events if e.customer_id not in self.forwards]
        fresh = self._apply(events, None)
        self.counters["outcomes"] += len(fresh)
        self._count_outcomes(fresh)
        for e in fresh:
            version = self.decisions[e.properties["decision_id"]].model_version
            for ref in version.split(",") if version else ():
                stats = self.variant_stats.setdefault(ref, {"decisions": 0})
                kind = e.type.removeprefix("outcome.")
                stats[kind] = stats.get(kind, 0) + 1
        if self.logs is not None:
            self.logs.outcomes(
                (
                    e.properties["decision_id"],
                    e.properties["action_id"],
                    e.customer_id,
                    e.type.removeprefix("outcome."),
                    e.ts,
                )
                for e in fresh
            )
        if moved:
            forward = [
                {
                    "customer_id": self._survivor(e.customer_id),
                    "type": e.type,
                    "ts": e.ts,
                    "properties": dict(e.properties),
                    "event_id": e.event_id,
                }
                for e in moved
            ]
            return {"accepted": len(events) + len(moved), "forward": forward}
        return len(events)

    def _count_outcomes(self, events: list[Event]) -> None:
        """Outcomes into the contact history (when a contact policy exists)."""
        if not self.policies.active:
            return
        for e in events:
            if e.type.startswith("outcome."):
                action = e.properties.get("action_id")
                if isinstance(action, str):
                    kind = e.type.removeprefix("outcome.")
                    self.contacts.outcome(e.customer_id, e.ts, action, kind)

    def _outcome_events(self, outcomes: list[dict[str, Any]]) -> list[Event]:
        events = []
        for i, o in enumerate(outcomes):
            tracked = self.decisions.get(o["decision_id"])
            if tracked is None:
                raise NotFound(
                    f"unknown decision {o['decision_id']!r} (too old, or never made here)",
                    field=f"[{i}].decision_id",
                    code="unknown_decision",
                )
            customer_id, actions = tracked.customer_id, tracked.actions
            if o["action_id"] not in actions:
                raise InvalidInput(
                    f"action {o['action_id']!r} was not part of decision {o['decision_id']!r}",
                    field=f"[{i}].action_id",
                    code="action_not_in_decision",
                )
            if o["outcome"] not in OUTCOMES:
                raise InvalidInput(
                    f"outcome must be one of {', '.join(OUTCOMES)}", field=f"[{i}].outcome"
                )
            events.append(
                Event(
                    customer_id=customer_id,
                    type=f"outcome.{o['outcome']}",
                    ts=o.get("ts") or self.clock(),
                    properties={"action_id": o["action_id"], "decision_id": o["decision_id"]},
                    # a retried outcome is the same outcome: it counts once
                    event_id=f"outcome:{o['decision_id']}:{o['action_id']}:{o['outcome']}",
                )
            )
        return events

    # -- profiles ------------------------------------------------------------------------

    def erase_profile(self, customer_id: str) -> dict[str, Any]:
        """Forget a customer: profile, tracked decisions; a tombstone in the WAL (replay
        honours it), then a snapshot at once, after which the WAL segments and snapshots
        that held the customer are deleted. A merged id answers Moved: its person is
        erased where it lives now."""
        self._here(customer_id)
        known, decisions = self._forget_profile(customer_id)
        erased = known or decisions > 0
        if erased:
            self.counters["erasures"] += 1
        # the tombstone makes the erasure survive a crash; for a customer unknown here it
        # is needed only when the decision logs may still hold them (it goes with the
        # snapshot that follows). Its links and merges go with forget_identity, which the
        # ingress calls on every shard next.
        if self.wal is not None and (erased or self.logs is not None):
            self._log(("erase", customer_id))
            self._purge = True
        self._erase_logs(customer_id)  # logs may hold a customer the profile store lost
        return {"customer_id": customer_id, "erased": erased, "decisions_removed": decisions}

    def _erase_logs(self, customer_id: str) -> None:
        """Out of the log buffers now; out of the log files before the next snapshot lets
        the WAL tombstone go (without a WAL: now, in this call)."""
        if self.logs is None:
            return
        self.logs.erase(customer_id)
        if self.log_dir is None:
            self.logs.rewrite_without({customer_id})
        else:
            self._erased.add(customer_id)
            self._purge = True

    def _forget(self, customer_id: str) -> tuple[bool, int]:
        """An erasure as records `x` made it: the profile and the identity records here."""
        known, decisions = self._forget_profile(customer_id)
        self._forget_identity(customer_id)
        return known, decisions

    def _forget_profile(self, customer_id: str) -> tuple[bool, int]:
        known = self.store.erase(customer_id)
        gone = [d for d, r in self.decisions.items() if r.customer_id == customer_id]
        for d in gone:
            del self.decisions[d]
        self.recent.pop(customer_id, None)
        self.contacts.forget(customer_id)
        self.timers.drop_customer(customer_id)
        self.outbox.drop_customer(customer_id)  # not delivered after the erasure
        return known, len(gone)

    def get_profile(self, customer_id: str) -> dict[str, Any]:
        self._here(customer_id)
        view = self.store.profile_view(customer_id, self.clock())
        view["recent_decisions"] = [
            self.decisions[i].to_wire(i) for i in self.recent.get(customer_id, ())
        ]
        view["shard"] = self.shard_id
        return view

    # -- models --------------------------------------------------------------------------

    def _load(self, bundle: ModelBundle) -> LoadedModel:
        m = bundle.manifest
        ModelBundle.verified(m, bundle.model_text)
        check_signature(m, self.config.auth.model_key())
        plan = FeaturePlan.build(
            m.ref, m.features, m.categories, self.config, self.schema, self.catalog
        )
        reference = LightGBMScorer(bundle.model_text)
        if reference.feature_names != list(m.features):
            raise ModelError(
                f"{m.ref}: the model file's features do not match the manifest's "
                f"(file: {reference.feature_names[:5]}…, manifest: {list(m.features)[:5]}…)"
            )
        sizes = {c: len(m.categories.get(m.features[c], ())) for c in plan.categorical}
        use_native = self.config.server.scorer == "native"
        scorer, kind = scorer_for(bundle, reference, sizes, use_native)
        return LoadedModel(m, scorer, plan, kind)

    def _load_at_start(self, bundle: ModelBundle) -> LoadedModel | None:
        """A deployed model at (re)start; one that is refused (unsigned, tampered, features
        this shard cannot build) is logged and left out: the shard serves without it,
        rather than fail its start (Ray would restart it in a loop)."""
        try:
            return self._load(bundle)
        except NextbestError as e:
            self.refused[bundle.manifest.ref] = str(e)
            log.error(
                "shard %d: model %s refused at start: %s", self.shard_id, bundle.manifest.ref, e
            )
            return None

    def stage_model(
        self,
        manifest: dict[str, Any],
        model_text: str,
        native: bytes | None = None,
        role: str = "champion",
        share: float = 0.0,
        shadow: bool = False,
    ) -> str:
        """Load and check a model without serving it; raises ModelError if refused.
        `role` challenger: for `share` of customers (sticky), or in `shadow`."""
        bundle = ModelBundle.verified(ModelManifest.from_dict(manifest), model_text, native)
        loaded = self._load(bundle)
        self._staged[(loaded.manifest.name, role)] = (loaded, share, shadow)
        return loaded.manifest.ref

    def stage_no_challenger(self, name: str) -> None:
        """At the next commit of `name`, its challenger (if any) stops."""
        self._staged[(name, "challenger")] = None

    def commit_model(self, name: str) -> str:
        """Serve what is staged for `name` (champion, challenger or both) from the next
        decision on: one call, so no decision sees half of it."""
        champion = self._staged.pop((name, "champion"), None)
        if champion is not None:
            self.models[name] = champion[0]
            self.refused = {r: w for r, w in self.refused.items() if r.split("@")[0] != name}
        if (name, "challenger") in self._staged:
            challenger = self._staged.pop((name, "challenger"))
            if challenger is None:
                self.challengers.pop(name, None)
            else:
                self.challengers[name] = challenger
        # nothing staged: restarted since staging, it loaded the stored state at start
        return self.models[name].manifest.ref if name in self.models else ""

    def abort_model(self, name: str) -> None:
        self._staged.pop((name, "champion"), None)
        self._staged.pop((name, "challenger"), None)

    # -- catalog -------------------------------------------------------------------------

    def stage_catalog(self, catalog: dict[str, Any]) -> str:
        """Check a new catalog and prepare it (models' feature plans rebuilt for its
        actions) without serving it; raises ConfigError or ModelError if refused."""
        config = with_catalog(self.config, catalog)
        cat = Catalog(config, self.schema)

        def replan(m: LoadedModel) -> LoadedModel:
            f = m.manifest
            plan = FeaturePlan.build(f.ref, f.features, f.categories, config, self.schema, cat)
            return LoadedModel(f, m.scorer, plan, m.scorer_kind)

        models = {n: replan(m) for n, m in self.models.items()}
        challengers = {n: (replan(m), a, b) for n, (m, a, b) in self.challengers.items()}
        self._staged_catalog = (config, cat, models, challengers)
        return cat.version

    def commit_catalog(self) -> str:
        """Serve the staged catalog from the next decision on (one call: no decision
        sees half of it)."""
        if self._staged_catalog is None:  # restarted since staging: it loaded the new one
            return self.catalog.version
        config, cat, models, challengers = self._staged_catalog
        self._staged_catalog = None
        self.config, self.catalog, self.models, self.challengers = config, cat, models, challengers
        exploration = config.decisioning.exploration
        self.explorer = Explorer(exploration) if exploration.policy != "none" else None
        self.policies = Policies(config)
        self.budgets = budgets_of(config)
        return cat.version

    def abort_catalog(self) -> None:
        self._staged_catalog = None

    # -- context tables ------------------------------------------------------------------

    def stage_context(self, name: str, version: str, table: pa.Table) -> str:
        """Index a new version of a context table without serving it (raises
        InvalidInput if it does not fit the table's spec)."""
        spec = self.config.context_tables.get(name)
        if spec is None:
            raise NotFound(f"unknown context table {name!r}", field="table", code="unknown_table")
        self._staged_tables[name] = ContextTable.build(name, spec, table, version)
        return version

    def commit_context(self, name: str) -> str | None:
        """Serve the staged version from the next decision on (one assignment)."""
        staged = self._staged_tables.pop(name, None)
        if staged is not None:
            self.tables = {**self.tables, name: staged}
        return self.tables[name].version if name in self.tables else None

    def abort_context(self, name: str) -> None:
        self._staged_tables.pop(name, None)

    def context_status(self) -> dict[str, Any]:
        return {name: t.status() for name, t in self.tables.items()}

    def model_versions(self) -> dict[str, str]:
        return {name: m.manifest.ref for name, m in self.models.items()}

    def challenger_versions(self) -> dict[str, dict[str, Any]]:
        return {
            name: {"version": m.manifest.ref, "share": share, "shadow": shadow}
            for name, (m, share, shadow) in self.challengers.items()
        }

    def scorers(self) -> dict[str, str]:
        """How each served model is scored: "native" or "lightgbm"."""
        return {name: m.scorer_kind for name, m in self.models.items()}

    def flush_logs(self) -> dict[str, Any] | None:
        """Write the buffered decision and outcome logs now (before a training run); a
        failing disk does not hold the shard longer than 30 s (the status says what
        still waits, and why)."""
        if self.logs is None:
            return None
        self.logs.flush(timeout=30.0)
        return self.logs.status()

    # -- status --------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            "shard": self.shard_id,
            "customers": len(self.store),
            "models": self.model_versions(),
            "challengers": self.challenger_versions(),
            "variant_stats": self.variant_stats,
            "scorers": self.scorers(),
            "refused_models": self.refused,
            "catalog_version": self.catalog.version,
            "state_bytes": self.store.nbytes(),
            "durable": self.wal is not None,
            "fenced": self.owner is not None and self.owner.fenced,
            "wal_bytes": self.wal.bytes if self.wal is not None else 0,
            "last_snapshot_s_ago": round(time.monotonic() - self._snapshot_at, 1),
            "snapshotting": self._writing is not None,
            "last_snapshot": self.last_snapshot,
            "recovery": self.recovery,
            "logs": self.logs.status() if self.logs is not None else None,
            "outbound": self.outbound_status(),
            "context_tables": self.context_status(),
            **self.counters,
        }
