"""A shard's state as one whole: what each part puts in a snapshot, how a snapshot is
loaded back into the parts, and the digest that says two shards hold the same state."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import numpy as np

from actors.shard.decisions import Tracked
from decisioning.delivery.outbox import Message
from decisioning.journal.snapshot import State

if TYPE_CHECKING:
    from actors.shard.facade import Shard

__all__ = ["capture", "digest", "restore"]


def capture(shard: Shard, wal_seq: int) -> State:
    """A copy of the state for a snapshot that covers the WAL before segment `wal_seq`
    (the memcpy the shard's callers wait for)."""
    profiles, triggers = shard.profiles, shard.triggers
    blob, ends, matrices = profiles.store.export()
    return State(
        wal_seq=wal_seq,
        layout_key=profiles.schema.layout_key,
        id_blob=blob,
        id_ends=ends,
        matrices=matrices,
        decisions=shard.history.ring.rows(),
        seen=list(profiles.seen),
        seen_slots=list(profiles.seen.values()),
        counters=dict(profiles.counters),
        contacts=shard.allowance.contacts.rows(),
        timers=triggers.timers.rows(),
        outbound=[m.row() for m in triggers.outbox.messages()],
        identity=list(shard.book.rows()),
        answers=shard.history.answers.rows(),
    )


def restore(shard: Shard, st: State) -> None:
    """Load a snapshot (before the WAL after it is replayed)."""
    shard.profiles.store.load(st.id_blob, st.id_ends, st.matrices)
    shard.book.load(st.identity)  # (before decisions: forwards matter)
    for did, (cid, actions, ts, channel, placement, version) in st.decisions:
        shard.history.track(did, Tracked(cid, tuple(actions), ts, channel, placement, version))
    shard.history.answers.load(st.answers, shard.history.ring)  # (sharing what is tracked)
    shard.profiles.load(st.seen, st.counters, st.seen_slots)
    shard.allowance.contacts.load(st.contacts)
    shard.triggers.timers.load(st.timers)
    for row in st.outbound:
        shard.triggers.outbox.add(Message.of(row))


def digest(shard: Shard) -> str:
    """sha256 of the state: profiles, decisions, idempotency keys, contacts, timers,
    messages, identity records, answers under a request id."""
    h = hashlib.sha256()
    blob, ends, matrices = shard.profiles.store.export()
    h.update(blob)
    h.update(ends.tobytes())
    for name in sorted(matrices):
        h.update(np.ascontiguousarray(matrices[name]).tobytes())
    h.update(repr(list(shard.history.ring.items())).encode())
    h.update(b"".join(shard.profiles.seen))
    h.update(repr(sorted(shard.allowance.contacts.rows())).encode())
    h.update(repr(sorted(shard.triggers.timers.rows())).encode())
    h.update(repr([m.row() for m in shard.triggers.outbox.messages()]).encode())
    h.update(shard.book.digest().encode())
    h.update(repr(shard.history.answers.rows()).encode())
    return h.hexdigest()
