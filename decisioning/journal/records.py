"""The records of a shard's write-ahead log: one named type per kind of change.

A shard logs every change it applies as one of these records before it acknowledges it,
and recovery replays them through one handler per type (a dispatch table, see
`actors/shard/journal.py`). On disk a record is the msgpack row `[tag, body]`.

The hazard. Data directories outlive the code that wrote them: a WAL written by an
older shard must replay to the same state under a newer one, and a tag that once meant
one change must never be read as another (an erasure replayed as something else would
bring a customer back).

The protocol:

- every type is written under its own named tag (`TAG`), with the body `body()` gives;
- the one-letter tags older shards wrote (`e`, `d`, `x`, `X`, `D`, `T`, `L`, `F`, `M`,
  `o`, `k`, and `erase`, whose body was a bare id) are still read, and map to the same
  types (`LEGACY`); no new record is written under them, and no tag is ever reused;
- a row with a tag this code does not know decodes to None (the caller reports it).

Guarantees: `decode(encode(r)) == r` for every record (a property test checks it), and
a WAL written with the old tags recovers to the state the older shard recovered to
(tests/unit/decisioning/journal/test_journal_records.py, with a WAL the older shard wrote).

The identity book's records (links, forwards, owed merges, pins, ...) are defined in
`identity_records.py`, since they also carry the book's own name for the change; they
are re-exported here, so every record type is `records.<Type>`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, get_args

from decisioning.delivery.outbox import Message
from decisioning.journal.identity_records import (
    IDENTITY,
    Absorbed,
    Cancelled,
    Forwarded,
    IdentityRecord,
    Linked,
    Owed,
    Pinned,
    Unpinned,
    from_book,
    to_book,
)
from decisioning.profile import Event

__all__ = [
    "IDENTITY",
    "LEGACY",
    "TAGS",
    "Absorbed",
    "Acked",
    "Cancelled",
    "DecisionMade",
    "ErasedWithIdentity",
    "EventsApplied",
    "Folded",
    "Forwarded",
    "IdentityForgotten",
    "IdentityRecord",
    "Linked",
    "MergedRowDropped",
    "Owed",
    "Pinned",
    "ProfileErased",
    "Queued",
    "Record",
    "SlotsAbsorbed",
    "SlotsDropped",
    "TimerCleared",
    "TimerSet",
    "Unpinned",
    "decode",
    "encode",
    "from_book",
    "to_book",
]


# -- profiles and decisions ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventsApplied:
    """Events applied to profiles, in order (retried duplicates were dropped before)."""

    TAG: ClassVar[str] = "events"
    events: Sequence[Event]

    def body(self) -> list[Any]:
        return [[e.customer_id, e.type, e.ts, dict(e.properties), e.event_id] for e in self.events]

    @classmethod
    def from_body(cls, body: list[Any]) -> EventsApplied:
        return cls([Event(c, t, ts, p or {}, i) for c, t, ts, p, i in body])


@dataclass(frozen=True, slots=True)
class DecisionMade:
    """A decision recorded (not a dry run): what outcomes and contact policies need.
    Made under a client's request id, it also carries the request's key and the rest of
    the answer (`actors/shard/answers.py`), so a retry gets the same answer after a
    restart; the body then has two more items (records written before have seven)."""

    TAG: ClassVar[str] = "decision"
    decision_id: str
    customer_id: str
    actions: tuple[str, ...]
    ts: float
    channel: str
    placement: str | None
    model_version: str | None
    request: bytes | None = None  # the request id's key (a digest, never the id)
    answer: list[Any] | None = None  # with `request`: the answer's other parts (plain)

    def body(self) -> list[Any]:
        body = [
            self.decision_id,
            self.customer_id,
            list(self.actions),
            self.ts,
            self.channel,
            self.placement,
            self.model_version,
        ]
        if self.request is not None:
            body += [self.request, self.answer]
        return body

    @classmethod
    def from_body(cls, body: list[Any]) -> DecisionMade:
        did, cid, actions, ts, channel, placement, version, *request = body
        return cls(did, cid, tuple(actions), ts, channel, placement, version, *request)


# -- erasure -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProfileErased:
    """A customer's profile, decisions, contacts, timers and messages are gone."""

    TAG: ClassVar[str] = "erase_profile"
    customer_id: str

    def body(self) -> list[Any]:
        return [self.customer_id]


@dataclass(frozen=True, slots=True)
class ErasedWithIdentity:
    """An erasure of the profile and the identity records at once, as shards wrote it
    before the two went separately (read only: `x`)."""

    TAG: ClassVar[str] = "erase_with_identity"
    customer_id: str

    def body(self) -> list[Any]:
        return [self.customer_id]


@dataclass(frozen=True, slots=True)
class IdentityForgotten:
    """Every link, forward pointer and merge naming the customer is gone."""

    TAG: ClassVar[str] = "forget_identity"
    customer_id: str

    def body(self) -> list[Any]:
        return [self.customer_id]


@dataclass(frozen=True, slots=True)
class MergedRowDropped:
    """The row of a customer merged away is gone (its forward pointer stays)."""

    TAG: ClassVar[str] = "drop_merged"
    customer_id: str

    def body(self) -> list[Any]:
        return [self.customer_id]


# -- triggers and the outbox ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TimerSet:
    """A trigger timer armed at `armed`, due at `due`."""

    TAG: ClassVar[str] = "timer_set"
    customer_id: str
    trigger: str
    due: float
    armed: float

    def body(self) -> list[Any]:
        return [self.customer_id, self.trigger, self.due, self.armed]


@dataclass(frozen=True, slots=True)
class TimerCleared:
    """A trigger timer cleared: fired, followed up, or its trigger gone."""

    TAG: ClassVar[str] = "timer_cleared"
    customer_id: str
    trigger: str

    def body(self) -> list[Any]:
        return [self.customer_id, self.trigger]


@dataclass(frozen=True, slots=True)
class Queued:
    """A message a trigger queued for delivery."""

    TAG: ClassVar[str] = "queue"
    message: Message

    def body(self) -> list[Any]:
        return self.message.row()

    @classmethod
    def from_body(cls, body: list[Any]) -> Queued:
        return cls(Message.of(body))


@dataclass(frozen=True, slots=True)
class Acked:
    """Messages delivered: they leave the queue."""

    TAG: ClassVar[str] = "ack"
    ids: tuple[str, ...]

    def body(self) -> list[Any]:
        return list(self.ids)

    @classmethod
    def from_body(cls, body: list[Any]) -> Acked:
        return cls(tuple(body))


# -- identity: the book's records are in identity_records.py; a merge's fold is here ----


@dataclass(frozen=True, slots=True)
class Folded:
    """Merge step 3: another customer's frozen state folded into the survivor."""

    TAG: ClassVar[str] = "fold"
    survivor: str
    merge_id: str
    state: list[bytes] | None
    contacts: list[Any]
    ts: float | None = None  # (absent in records written before it was kept)

    def body(self) -> list[Any]:
        return [self.survivor, self.merge_id, self.state, self.contacts, self.ts]


# -- slots moving between shards (actors/shard/slots.py) --------------------------------


@dataclass(frozen=True, slots=True)
class SlotsAbsorbed:
    """Migration step 3, on the destination: the state of slots [lo, hi) moved here
    (whatever was held for them before is replaced). `state` is the plain form of the
    source's export (actors/shard/slots.py: `plain`)."""

    TAG: ClassVar[str] = "slots+"
    migration: str
    lo: int
    hi: int
    state: dict[str, Any]
    part: int = 0  # a big range is logged in parts; part 0 replaces, the rest add

    def body(self) -> list[Any]:
        return [self.migration, self.lo, self.hi, self.state, self.part]


@dataclass(frozen=True, slots=True)
class SlotsDropped:
    """Migration step 5 on the source (or a rollback on the destination): everything
    keyed by slots [lo, hi) left this shard (the tombstone of the range)."""

    TAG: ClassVar[str] = "slots-"
    migration: str
    lo: int
    hi: int

    def body(self) -> list[Any]:
        return [self.migration, self.lo, self.hi]


Record = (
    EventsApplied
    | DecisionMade
    | ProfileErased
    | ErasedWithIdentity
    | IdentityForgotten
    | MergedRowDropped
    | TimerSet
    | TimerCleared
    | Queued
    | Acked
    | IdentityRecord
    | Folded
    | SlotsAbsorbed
    | SlotsDropped
)
_TYPES: tuple[type[Any], ...] = get_args(Record)


def _plain(cls: type[Any]) -> Callable[[Any], Any]:
    from_body = getattr(cls, "from_body", None)
    return from_body if from_body is not None else lambda body: cls(*body)


def _timer(body: list[Any]) -> TimerSet | TimerCleared:
    cid, trigger, due, armed = body  # one tag for both: a cleared timer had due None
    return TimerCleared(cid, trigger) if due is None else TimerSet(cid, trigger, due, armed)


TAGS: dict[str, Callable[[Any], Any]] = {cls.TAG: _plain(cls) for cls in _TYPES}
# The tags older shards wrote, read as the same types; never written again.
LEGACY: dict[str, Callable[[Any], Any]] = {
    "e": EventsApplied.from_body,
    "d": DecisionMade.from_body,
    "x": ErasedWithIdentity,  # (the body was the bare customer id)
    "erase": ProfileErased,
    "X": IdentityForgotten,
    "D": MergedRowDropped,
    "T": _timer,
    "L": _plain(Linked),
    "F": _plain(Forwarded),
    "M": _plain(Folded),
    "o": Queued.from_body,
    "k": Acked.from_body,
}
_DECODERS = {**LEGACY, **TAGS}


def encode(record: Record) -> list[Any]:
    """The WAL row of a record: `[tag, body]`."""
    return [record.TAG, record.body()]


def decode(row: list[Any] | tuple[Any, ...]) -> Record | None:
    """The record of a WAL row, under its named or its legacy tag (None: unknown tag)."""
    tag, body = row
    decoder = _DECODERS.get(tag)
    return None if decoder is None else decoder(body)
