"""The messages between the ingress and a shard: one frozen type per request the
ingress sends, and the typed results a shard answers with (no Ray, no HTTP: serving/
builds the requests and actors/ runs them, and unit tests use both without Ray).

Protocol: a request is a call of the `Shard` method of the same name (actors/calls.py:
`REQUEST_METHODS`) with the message as its one argument; the answer is a result below
(or a plain `int`, `bool`, `str`), or the error itself when the call is refused.

Guarantees: nothing that crosses is a wire dict. A result holds core values (a
`Decision`, a queued `Message`, the `Event`s of forwarded outcomes), and the HTTP body is
built from it once, at the edge (serving/bodies.py); nothing a shard keeps is ever an
HTTP answer. The types on the hot path (a decision, a batch of events or outcomes) are
NamedTuples: one is built per request, and a NamedTuple is about three times cheaper to
build than a frozen dataclass; the rest are frozen dataclasses.

Pickling: what crosses most often holds core dataclasses (a `Decision` and its actions,
`Event`s, a queued `Message`), which pickle field by field through `__setattr__` (about
20 µs for a decision, against 4 µs for its wire dict). `Decided`, `ApplyEvents` and
`Leased` therefore pickle as rows of plain values and are rebuilt from them on the other
side (equal values, same types); a decision's trace (the decision log's feature
matrices) never crosses.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from operator import attrgetter
from typing import Any, NamedTuple

from decisioning.delivery.outbox import Message
from decisioning.policy.decide import ChannelChoice, Decision, ScoredAction
from decisioning.profile import Event
from decisioning.profile.identity import Unfinished
from decisioning.profile.slots import SlotMap

__all__ = [
    "AbsorbSlots",
    "DropSlots",
    "FreezeSlots",
    "SetSlotMap",
    "SlotState",
    "UnfreezeSlots",
    "Absorb",
    "AckOutbound",
    "ApplyEvents",
    "Cancelled",
    "CancelMerge",
    "CheckOutcomes",
    "Compress",
    "Decide",
    "DecideMany",
    "Decided",
    "DropMerged",
    "EraseProfile",
    "Erased",
    "ForgetIdentity",
    "Freeze",
    "Frozen",
    "GetProfile",
    "IdentityInfo",
    "IdentityOf",
    "LeaseOutbound",
    "Leased",
    "Link",
    "Linked",
    "MergedInto",
    "Outcome",
    "Owed",
    "Pin",
    "Profile",
    "RecentDecision",
    "RecordOutcomes",
    "Recorded",
    "ReleaseOutbound",
    "Resolve",
    "Resolved",
    "Settle",
    "Unfinished",
    "UnfinishedMerges",
    "Unpin",
]

# -- events, decisions, outcomes (the hot path) ----------------------------------------


class Decide(NamedTuple):
    """POST /v1/decide (and a trigger's or an open link's decision): decide for one
    customer; `event`, when given, is applied first (not in a dry run). With
    `request_id`, a retry gets the answer given before (actors/shard/answers.py)."""

    customer_id: str
    channel: str
    placement: str | None = None
    context: dict[str, Any] | None = None  # (logged as JSON with the decision)
    limit: int | None = None
    explain: bool = False
    dry_run: bool = False
    event: Event | None = None
    request_id: str | None = None  # the client's id of the request (idempotency)

    def for_customer(self, customer_id: str) -> Decide:
        """The same request for the customer a merged one became (its event too)."""
        event = self.event
        if event is not None:
            event = replace(event, customer_id=customer_id)
        return self._replace(customer_id=customer_id, event=event)


class DecideMany(NamedTuple):
    """POST /v1/decide/batch, a shard's part of the batch: each request decided on its
    own, in order, as `decide` decides it; the answer is a list with one answer per
    request (its `Decided`, or its refusal: one refused does not stop the others)."""

    requests: tuple[Decide, ...]


class Decided(NamedTuple):
    """A decision as the shard made it, the variant that made it, and (channel
    "outbound") how its channel was chosen. Pickled as a row (see the module docstring);
    the decision's trace stays on the shard."""

    decision: Decision
    variant: str
    channel_choice: ChannelChoice | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        values = list(_DECISION_ROW(self.decision))
        values[_ACTIONS] = [_ACTION_ROW(a) for a in self.decision.actions]
        values[_TRACE] = None
        c = self.channel_choice
        choice = None if c is None else (c.channel, c.reason, c.channels)
        return _decided, (values, self.variant, choice)


def _names(cls: Any) -> list[str]:
    return [f.name for f in fields(cls)]


_DECISION_ROW = attrgetter(*_names(Decision))
_ACTION_ROW = attrgetter(*_names(ScoredAction))
_ACTIONS, _TRACE = _names(Decision).index("actions"), _names(Decision).index("trace")
_EVENT_ROW = attrgetter(*_names(Event))


def _decided(values: list[Any], variant: str, choice: tuple[Any, ...] | None) -> Decided:
    values[_ACTIONS] = [ScoredAction(*a) for a in values[_ACTIONS]]
    return Decided(Decision(*values), variant, None if choice is None else ChannelChoice(*choice))


class ApplyEvents(NamedTuple):
    """POST /v1/events, a shard's part of the batch: all checked before any is applied.
    Pickled as rows (see the module docstring)."""

    events: tuple[Event, ...]

    def __reduce__(self) -> tuple[Any, ...]:
        return _apply_events, ([_EVENT_ROW(e) for e in self.events],)


def _apply_events(rows: list[tuple[Any, ...]]) -> ApplyEvents:
    return ApplyEvents(tuple(Event(*row) for row in rows))


class Outcome(NamedTuple):
    """An outcome of a decision (`ts` None: when the shard records it)."""

    decision_id: str
    action_id: str
    outcome: str
    ts: float | None = None


class CheckOutcomes(NamedTuple):
    """Check outcomes without recording them (the first phase of a cross-shard batch)."""

    outcomes: tuple[Outcome, ...]


class RecordOutcomes(NamedTuple):
    """POST /v1/outcomes, a shard's part of the batch."""

    outcomes: tuple[Outcome, ...]


class Recorded(NamedTuple):
    """Outcomes accepted; those of customers merged away since come back in `forward`,
    as events of their survivors, for the caller to apply there."""

    accepted: int
    forward: tuple[Event, ...] = ()


# -- profiles --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GetProfile:
    customer_id: str


class RecentDecision(NamedTuple):
    """A decision as a customer's profile lists it."""

    decision_id: str
    ts: float
    channel: str
    placement: str | None
    actions: tuple[str, ...]
    model_version: str | None


class Profile(NamedTuple):
    """A customer's live profile, decoded for people, and where it lives."""

    customer_id: str
    known: bool
    attributes: dict[str, Any]
    aggregates: dict[str, Any]
    consent: dict[str, bool | None]
    recent_decisions: tuple[RecentDecision, ...]
    shard: int


@dataclass(frozen=True, slots=True)
class EraseProfile:
    customer_id: str


class Erased(NamedTuple):
    customer_id: str
    erased: bool
    decisions_removed: int


# -- identity (the protocol: decisioning/profile/identity.py) --------------------------
# Resolve: the customer an identifier is linked to. Link: the newest link wins, the
# first owes a merge. MergedInto: where a customer went (None: live). The merge steps:
# Pin (1, the survivor stays put), Freeze (2, the merged one forwards from now; gives
# Frozen), Absorb (3, fold once per merge), DropMerged (5, the row goes, the pointer
# stays), Unpin; Settle (nothing owed for a merge into itself), CancelMerge (a stale
# attempt, unless it froze), Compress (a pointer to the end of its chain). The sweep
# asks UnfinishedMerges; IdentityOf and ForgetIdentity read and erase a key's records.


@dataclass(frozen=True, slots=True)
class Resolve:
    alias: str


@dataclass(frozen=True, slots=True)
class Resolved:
    customer_id: str | None  # None: not linked
    owed: bool  # the merge its first link owes is still to finish


@dataclass(frozen=True, slots=True)
class Link:
    alias: str
    customer_id: str


@dataclass(frozen=True, slots=True)
class Linked:
    alias: str
    customer_id: str
    previous: str | None
    owed: str | None  # the survivor of the merge this link owes, if it owes one


@dataclass(frozen=True, slots=True)
class MergedInto:
    customer_id: str


@dataclass(frozen=True, slots=True)
class Pin:
    survivor: str
    token: str
    merged: str


@dataclass(frozen=True, slots=True)
class Unpin:
    survivor: str
    token: str


@dataclass(frozen=True, slots=True)
class Freeze:
    merged: str
    survivor: str
    token: str | None = None
    reason: str = "merge"


@dataclass(frozen=True, slots=True)
class Frozen:
    """What a freeze gives: the merge id, and the state to fold into the survivor
    (`done`: the merge was finished before, nothing is left to fold)."""

    merge_id: str | None
    reason: str
    done: bool
    known: bool  # the merged customer had a profile here
    state: list[bytes] | None  # its row's arrays (as the WAL's fold record holds them)
    contacts: list[list[Any]]  # its contact history


@dataclass(frozen=True, slots=True)
class Absorb:
    survivor: str
    merge_id: str
    state: list[bytes] | None
    contacts: list[list[Any]]


@dataclass(frozen=True, slots=True)
class DropMerged:
    merged: str
    alias: bool = False


@dataclass(frozen=True, slots=True)
class Settle:
    merged: str


@dataclass(frozen=True, slots=True)
class CancelMerge:
    merged: str
    survivor: str
    token: str


@dataclass(frozen=True, slots=True)
class Cancelled:
    frozen: bool
    owed: bool


@dataclass(frozen=True, slots=True)
class Compress:
    merged: str
    expected: str
    target: str


@dataclass(frozen=True, slots=True)
class UnfinishedMerges:
    stale_s: float


@dataclass(frozen=True, slots=True)
class IdentityOf:
    key: str
    aliases: bool = True


@dataclass(frozen=True, slots=True)
class Owed:
    survivor: str
    reason: str


@dataclass(frozen=True, slots=True)
class IdentityInfo:
    linked_to: str | None
    merged_into: str | None
    owed: Owed | None
    aliases: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ForgetIdentity:
    customer_id: str


# -- the outbound queue ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LeaseOutbound:
    """Up to `n` undelivered messages of `channel`, each leased for `lease_s`
    (None: `delivery.lease_s`)."""

    channel: str
    n: int
    lease_s: float | None = None


class Leased(NamedTuple):
    """A message handed out, and the token that opens it (None: open links are off).
    Pickled as the message's row (its form in the WAL)."""

    message: Message
    open_token: str | None

    def __reduce__(self) -> tuple[Any, ...]:
        return _leased, (self.message.row(), self.open_token)


def _leased(row: list[Any], open_token: str | None) -> Leased:
    return Leased(Message.of(row), open_token)


@dataclass(frozen=True, slots=True)
class AckOutbound:
    """Delivered: these messages leave the queue."""

    ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ReleaseOutbound:
    """Not delivered: hand these out again at the next lease."""

    ids: tuple[str, ...]


# -- moving slots between shards (actors/slots.py runs the protocol) --------------------


@dataclass(frozen=True, slots=True)
class FreezeSlots:
    """Migration step 1 and 2, on the source shard: from now on slots [lo, hi) answer
    `SlotFrozen`; the answer is a `SlotState` of everything keyed by them (a repeat
    answers the same state again)."""

    migration: str
    lo: int
    hi: int


@dataclass(frozen=True, slots=True)
class SlotState:
    """Everything a shard holds keyed by slots [lo, hi): the profiles (ids and their rows
    of each state matrix), idempotency keys (with their slot), contact history, trigger
    timers, queued messages, tracked decisions, identity records and the answers given
    under a request id. Its parts have the row shapes of a snapshot
    (decisioning/journal/snapshot.py: `State`)."""

    migration: str
    lo: int
    hi: int
    ids: tuple[str, ...] = ()
    matrices: dict[str, Any] = field(default_factory=dict)  # name -> rows (numpy)
    seen: tuple[tuple[bytes, int], ...] = ()  # (idempotency key, slot; -1: unknown)
    contacts: tuple[tuple[Any, ...], ...] = ()
    timers: tuple[tuple[Any, ...], ...] = ()
    outbound: tuple[tuple[Any, ...], ...] = ()
    decisions: tuple[tuple[Any, ...], ...] = ()
    identity: tuple[tuple[Any, ...], ...] = ()
    answers: tuple[tuple[Any, ...], ...] = ()  # (key, slot, decision_id, *Tracked, extra)

    @property
    def profiles(self) -> int:
        return len(self.ids)


@dataclass(frozen=True, slots=True)
class AbsorbSlots:
    """Migration step 3, on the destination shard: whatever it held keyed by the state's
    slots is replaced by `state`, durably (logged and flushed before the answer: the
    number of profiles absorbed). It does not serve them until the map names it."""

    state: SlotState


@dataclass(frozen=True, slots=True)
class DropSlots:
    """Migration step 5 on the source (or a rollback on the destination): everything
    keyed by slots [lo, hi) goes, with a record in the WAL; the range is no longer
    frozen. Answers the number of profiles dropped (0 on a repeat)."""

    migration: str
    lo: int
    hi: int


@dataclass(frozen=True, slots=True)
class UnfreezeSlots:
    """A migration rolled back, on the source: slots [lo, hi) are served again."""

    migration: str
    lo: int
    hi: int


@dataclass(frozen=True, slots=True)
class SetSlotMap:
    """The supervisor's slot map, after a change (a shard answers its new epoch; an
    older map than the one it has is ignored)."""

    map: SlotMap
