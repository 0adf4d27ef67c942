"""Which slots a shard serves, and moving a range of slots to another shard.

Hazard: a customer must be served by exactly one shard at any moment, and their state
must move whole (profile, idempotency keys, contact history, tracked decisions, answers
given under a request id, timers, queued messages, identity records) or not at all,
whatever crashes when.

`Ownership` answers, before a request-path call runs (actors/calls.py), whether this
shard serves every key the call addresses: one it does not own is `SlotMoved` (owner
and epoch of its map), one moving right now is `SlotFrozen`; nothing of the call is
applied either way. The map is the supervisor's (decisioning/profile/slots.py: SlotMap);
a shard learns a newer one with `set_slot_map`, and starts with the stored one.

`SlotMoves` runs a shard's side of the migration protocol (the supervisor's side and
the crash table: actors/slots.py):

- `freeze(lo, hi)` on the source: the range answers SlotFrozen from now on, and the
  answer is a copy of everything keyed by those slots (a `SlotState`);
- `absorb(state)` on the destination: whatever it held for those slots is replaced by
  the state, logged as one `SlotsAbsorbed` record (flushed before the answer);
- `drop(lo, hi)` on the source once the map names the destination (or on the
  destination, to roll back): everything keyed by those slots goes, with a
  `SlotsDropped` tombstone in the WAL; `unfreeze` serves the range again (a rollback).

Keys of no slot (an idempotency key of a merge, a cancelled merge attempt, a finished
merge id) are copied, never dropped: they are small, pruned by time, and a copy on a
shard that does not need it changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from actors import messages as m
from actors.shard.allowance import Allowance
from actors.shard.decisions import DecisionHistory, Tracked
from actors.shard.journal import Journal
from actors.shard.profiles import Profiles
from actors.shard.triggers import Triggers
from decisioning.delivery.outbox import Message
from decisioning.errors import InvalidInput, NextbestError, SlotFrozen, SlotMoved
from decisioning.journal.records import SlotsAbsorbed, SlotsDropped
from decisioning.profile.identity import Book
from decisioning.profile.slots import SLOTS, SlotMap, decision_slot, slot_of

__all__ = ["KEYS", "PART", "Ownership", "SlotMoves", "plain", "split", "unplain"]

_MATRICES = ("f32", "f64", "i32", "u16")
# identity rows keyed by a customer id (their slot moves them); the others are copied
_KEYED_IDENTITY = frozenset(("alias", "forward", "owed", "pin"))


def _outcome_slots(r: m.CheckOutcomes | m.RecordOutcomes) -> list[int]:
    out = []
    for o in r.outcomes:
        try:
            out.append(decision_slot(o.decision_id))
        except NextbestError:
            continue  # an unknown decision: the call itself answers it
    return out


# The slots a request-path call addresses, by method (the ingress routes it by the same
# keys: serving/identity.py, serving/events.py). A method not here addresses no slot.
KEYS: dict[str, Callable[[Any], Iterable[int]]] = {
    "apply_events": lambda r: (slot_of(e.customer_id) for e in r.events),
    "decide": lambda r: (slot_of(r.customer_id),),
    "decide_many": lambda r: (slot_of(d.customer_id) for d in r.requests),
    "get_profile": lambda r: (slot_of(r.customer_id),),
    "erase_profile": lambda r: (slot_of(r.customer_id),),
    "resolve": lambda r: (slot_of(r.alias),),
    "link": lambda r: (slot_of(r.alias),),
    "merged_into": lambda r: (slot_of(r.customer_id),),
    "pin": lambda r: (slot_of(r.survivor),),
    "unpin": lambda r: (slot_of(r.survivor),),
    "freeze": lambda r: (slot_of(r.merged),),
    "absorb": lambda r: (slot_of(r.survivor),),
    "drop_merged": lambda r: (slot_of(r.merged),),
    "settle": lambda r: (slot_of(r.merged),),
    "cancel_merge": lambda r: (slot_of(r.merged),),
    "compress": lambda r: (slot_of(r.merged),),
    "identity_of": lambda r: () if r.aliases else (slot_of(r.key),),  # (a scan: everywhere)
    "check_outcomes": _outcome_slots,
    "record_outcomes": _outcome_slots,
}


class Ownership:
    """The slots this shard serves: those its map gives it, less a range frozen for a
    move. Without a map (a shard built by a test or a tool) it serves every slot."""

    def __init__(self, shard_id: int, slot_map: SlotMap | None = None) -> None:
        self.shard_id = shard_id
        self.map: SlotMap | None = None
        self.frozen: tuple[int, int, str] | None = None  # (lo, hi, migration id)
        if slot_map is not None:
            self.set_map(slot_map)

    @property
    def epoch(self) -> int:
        return 0 if self.map is None else self.map.epoch

    def set_map(self, slot_map: SlotMap) -> int:
        """Adopt a newer map (an older one is ignored); a migration it names as frozen on
        this shard freezes its range here (a restarted source comes back frozen)."""
        if self.map is not None and slot_map.epoch < self.map.epoch:
            return self.map.epoch
        self.map = slot_map
        mig = slot_map.frozen_on(self.shard_id)
        if mig is not None and mig.step == "frozen":
            self.frozen = (mig.lo, mig.hi, mig.id)
        elif self.frozen is not None and (mig is None or mig.id != self.frozen[2]):
            self.frozen = None  # rolled back or finished: the map says who owns it now
        return slot_map.epoch

    def serves(self, slot: int) -> bool:
        """Whether this shard answers for `slot` now."""
        f = self.frozen
        if f is not None and f[0] <= slot < f[1]:
            return False
        return self.map is None or self.map.owners[slot] == self.shard_id

    def serves_customer(self, customer_id: str) -> bool:
        return self.serves(slot_of(customer_id))

    def check(self, method: str, message: Any) -> None:
        """Raise SlotFrozen or SlotMoved for the first slot of the call not served here."""
        keys = KEYS.get(method)
        if keys is None or (self.map is None and self.frozen is None):
            return
        for slot in keys(message):
            if self.serves(slot):
                continue
            f = self.frozen
            if f is not None and f[0] <= slot < f[1]:
                raise SlotFrozen(slot, f[2])
            assert self.map is not None
            raise SlotMoved(slot, self.map.owners[slot], self.map.epoch)

    def slots(self) -> int:
        """How many slots the map gives this shard."""
        return SLOTS if self.map is None else self.map.count(self.shard_id)

    def status(self) -> dict[str, Any]:
        f = self.frozen
        return {
            "slots": self.slots(),
            "slot_epoch": self.epoch,
            "frozen": None if f is None else [f[0], f[1] - 1],
        }


class SlotMoves:
    """The shard's side of moving slots: export a range, absorb one, drop one."""

    def __init__(
        self,
        ownership: Ownership,
        profiles: Profiles,
        history: DecisionHistory,
        allowance: Allowance,
        triggers: Triggers,
        book: Book,
        journal: Journal,
    ) -> None:
        self.ownership = ownership
        self.profiles = profiles
        self.history = history
        self.allowance = allowance
        self.triggers = triggers
        self.book = book
        self.journal = journal

    # -- the protocol's steps ------------------------------------------------------------

    def freeze(self, r: m.FreezeSlots) -> m.SlotState:
        """Steps 1-2 on the source: stop serving [lo, hi), answer everything keyed by it."""
        self.ownership.frozen = (r.lo, r.hi, r.migration)
        return self.export(r.migration, r.lo, r.hi)

    def unfreeze(self, r: m.UnfreezeSlots) -> int:
        """A rolled-back move, on the source: the range is served again."""
        f = self.ownership.frozen
        if f is not None and f[2] == r.migration:
            self.ownership.frozen = None
        return r.hi - r.lo

    def absorb(self, r: m.AbsorbSlots) -> int:
        """Step 3 on the destination: durable before the answer (the caller's flush).
        Refused for a range this shard serves any slot of already (a late or repeated
        absorb after the map named it would overwrite what it acknowledged since)."""
        st = r.state
        owned = self.ownership.map
        if owned is not None and self.ownership.shard_id in owned.owners[st.lo : st.hi]:
            raise InvalidInput(
                f"slots [{st.lo}, {st.hi}) are served here already: absorb refused",
                code="slot_owned",
            )
        for k, part in enumerate(split(st, PART)):  # each WAL record well under its limit
            self.journal.log(SlotsAbsorbed(st.migration, st.lo, st.hi, plain(part), k))
        self.load(st)
        return st.profiles

    def drop(self, r: m.DropSlots) -> int:
        """Step 5 on the source (or a rollback on the destination)."""
        n = self.remove(r.lo, r.hi)
        self.journal.log(SlotsDropped(r.migration, r.lo, r.hi))
        f = self.ownership.frozen
        if f is not None and f[2] == r.migration:
            self.ownership.frozen = None
        return n

    # -- replay --------------------------------------------------------------------------

    def redo_absorbed(self, r: SlotsAbsorbed) -> None:
        self.load(unplain(r.migration, r.lo, r.hi, r.state), replace=r.part == 0)

    def redo_dropped(self, r: SlotsDropped) -> None:
        self.remove(r.lo, r.hi)

    # -- the state of a range ------------------------------------------------------------

    def export(self, migration: str, lo: int, hi: int) -> m.SlotState:
        """A copy of everything keyed by slots [lo, hi)."""
        store = self.profiles.store

        def inside(key: str) -> bool:
            return lo <= slot_of(key) < hi

        ids = [c for c in store.ids if inside(c)]
        rows = np.array([store.ids.get(c) for c in ids], dtype=np.int64)
        matrices = {k: getattr(store, k)[rows].copy() for k in _MATRICES}
        contacts = [r for r in self.allowance.contacts.rows() if inside(r[0])]
        timers = [r for r in self.triggers.timers.rows() if inside(r[0])]
        messages = self.triggers.outbox.messages()
        outbound = [tuple(x.row()) for x in messages if inside(x.customer_id)]
        decisions = [(did, *t) for did, t in self.history.ring.items() if lo <= _dslot(did, t) < hi]
        identity = [r for r in self.book.rows() if r[0] not in _KEYED_IDENTITY or inside(r[1])]
        return m.SlotState(
            migration,
            lo,
            hi,
            tuple(ids),
            matrices,
            tuple(self.profiles.keys_in(lo, hi)),
            tuple(contacts),
            tuple(timers),
            tuple(outbound),
            tuple(decisions),
            tuple(identity),
            tuple(self.history.answers.rows(lo, hi)),
        )

    def load(self, st: m.SlotState, replace: bool = True) -> None:
        """Replace what this shard holds for the state's slots by the state (not
        `replace`: add it, a later part of one absorb)."""
        if replace:
            self.remove(st.lo, st.hi)
        store = self.profiles.store
        for i, c in enumerate(st.ids):
            r = store.row(c)
            for k in _MATRICES:
                getattr(store, k)[r] = st.matrices[k][i]
        self.profiles.add_keys((bytes(k), int(s)) for k, s in st.seen)
        self.allowance.contacts.load(tuple(r) for r in st.contacts)
        self.triggers.timers.load(tuple(r) for r in st.timers)
        for row in st.outbound:
            self.triggers.outbox.add(Message.of(row))
        book = self.book  # (before the decisions: a merged customer keeps no list)
        keyed = [tuple(r) for r in st.identity if r[0] in _KEYED_IDENTITY]
        shared = [
            tuple(r)
            for r in st.identity
            if r[0] not in _KEYED_IDENTITY and r[1] not in _held(book, r[0])
        ]
        book.load([*keyed, *shared])
        for did, cid, actions, ts, channel, placement, version in st.decisions:
            if did not in self.history.ring:
                t = Tracked(cid, tuple(actions), ts, channel, placement, version)
                self.history.track(did, t)
        self.history.answers.load(st.answers, self.history.ring)

    def remove(self, lo: int, hi: int) -> int:
        """Everything keyed by slots [lo, hi) goes; the number of profiles that went."""

        def inside(key: str) -> bool:
            return lo <= slot_of(key) < hi

        store = self.profiles.store
        gone = [c for c in store.ids if inside(c)]
        for c in gone:
            store.erase(c)
        self.profiles.drop_keys(lo, hi)
        contacts = self.allowance.contacts
        for c in [c for c in contacts.entries if inside(c)]:
            contacts.forget(c)
        timers = self.triggers.timers
        for c, t in [k for k in timers.due if inside(k[0])]:
            timers.clear(c, t)
        outbox = self.triggers.outbox
        outbox.ack([x.id for x in outbox.messages() if inside(x.customer_id)])
        history = self.history
        for did in [d for d, t in history.ring.items() if lo <= _dslot(d, t) < hi]:
            tracked = history.ring.pop(did)
            recent = history.recent.get(tracked.customer_id)
            if recent is not None and did in recent:
                recent.remove(did)
                if not recent:
                    del history.recent[tracked.customer_id]
        history.answers.drop(lo, hi)
        book = self.book
        for table in (book.aliases, book.forwards, book.owed, book.pins):
            for key in [k for k in table if inside(k)]:
                del table[key]
        return len(gone)


def _dslot(decision_id: str, t: Tracked) -> int:
    """The slot a tracked decision lives in: its id's (outcomes are routed by it)."""
    try:
        return decision_slot(decision_id)
    except NextbestError:
        return slot_of(t.customer_id)


def _held(book: Book, kind: str) -> dict[str, Any]:
    return book.cancelled if kind == "cancelled" else book.absorbed


# -- a SlotState as plain values (the WAL's SlotsAbsorbed record) ------------------------

PART = 20_000  # items of each kind per WAL record: ~10 MB of profiles, far under MAX_RECORD


def split(st: m.SlotState, size: int) -> list[m.SlotState]:
    """The state in parts of at most `size` items of each kind (ids with their rows,
    keys, contacts, ...); loading them in order, the first replacing, is loading it."""
    kinds = ("seen", "contacts", "timers", "outbound", "decisions", "identity", "answers")
    longest = max([len(st.ids), *(len(getattr(st, k)) for k in kinds)])
    n = max(1, -(-longest // size))
    if n == 1:
        return [st]

    def cut(seq: Any, k: int) -> Any:
        step = -(-len(seq) // n)
        return seq[k * step : (k + 1) * step]

    return [
        m.SlotState(
            st.migration,
            st.lo,
            st.hi,
            cut(st.ids, k),
            {name: cut(rows, k) for name, rows in st.matrices.items()},
            *(cut(getattr(st, kind), k) for kind in kinds),
        )
        for k in range(n)
    ]


def plain(st: m.SlotState) -> dict[str, Any]:
    """The state as msgpack-able values (matrices as raw bytes and their shapes)."""
    return {
        "ids": list(st.ids),
        "matrices": {
            k: [np.ascontiguousarray(v).tobytes(), list(v.shape), v.dtype.str]
            for k, v in st.matrices.items()
        },
        "seen": [[bytes(k), int(s)] for k, s in st.seen],
        "contacts": [list(r) for r in st.contacts],
        "timers": [list(r) for r in st.timers],
        "outbound": [list(r) for r in st.outbound],
        "decisions": [[r[0], r[1], list(r[2]), *r[3:]] for r in st.decisions],
        "identity": [list(r) for r in st.identity],
        "answers": [[bytes(r[0]), int(r[1]), *r[2:4], list(r[4]), *r[5:]] for r in st.answers],
    }


def unplain(migration: str, lo: int, hi: int, d: dict[str, Any]) -> m.SlotState:
    """The state back from `plain`, as the WAL gave it."""
    matrices = {
        k: np.frombuffer(raw, dtype=np.dtype(dt)).reshape(shape).copy()
        for k, (raw, shape, dt) in d["matrices"].items()
    }

    def rows(key: str) -> tuple[tuple[Any, ...], ...]:
        return tuple(tuple(r) for r in d.get(key, ()))  # (answers: none in older records)

    return m.SlotState(
        migration,
        lo,
        hi,
        tuple(d["ids"]),
        matrices,
        tuple((bytes(k), int(s)) for k, s in d["seen"]),
        rows("contacts"),
        rows("timers"),
        rows("outbound"),
        rows("decisions"),
        rows("identity"),
        rows("answers"),
    )
