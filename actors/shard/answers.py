"""The answers a shard gave to decide requests that carried a request id, so a retried
POST /v1/decide is answered with the decision it was given, never with a second one.

The hazard. A client that lost a decide's answer (a timeout, a dropped connection, a
shard that died before it answered) cannot tell whether the decision was recorded.
Retried without a key, a recorded decision is made twice: two contacts counted (a cap
is reached one contact early), budgets spent twice, and the channel may show one
decision while outcomes are credited to the other.

The protocol:

- a request id is its customer's own: the key kept is a 16-byte digest of the customer
  and the id (`request_key`), so no client id is stored, and another customer's decide
  under the same id is another request;
- a decide with a request id looks its key up before anything else, before its
  triggering event: a key answered already gives the recorded answer again (`again`),
  and nothing is applied, recorded, logged or counted but `decisions_repeated`. The
  same key asked with another channel or placement is refused (`RequestIdReused`, 409
  `request_id_reused`); the rest of a retry (context, limit, explain, event) is not
  compared;
- an unknown key is decided as ever; the decision's `DecisionMade` record carries the
  key and what the answer holds beyond the record (`extra_of`: variant, channel choice,
  the actions' scores, the explanation), and the answer is remembered as the tracked
  decision (`Tracked`, the very one the history keeps) plus those parts. Replay
  remembers it again from the record, so a restart answers the same body;
- keys are kept like event ids (`Profiles.seen`): the newest `server.idempotency_keys`
  of the shard, each with its customer's slot, so they move with their slots
  (`actors/shard/slots.py`) and go into snapshots (`answers.arrow`, format 4); an
  erasure forgets its customer's;
- a dry run neither looks a key up nor remembers one.

Guarantees: while its key is kept, a request id is answered with the same body (decision
id, actions, scores, variant, channel choice, explanation) however often it is retried,
across restarts (from the WAL alone, or snapshot and WAL) and slot moves. Not covered:
a retry after its customer was merged into another (the survivor decides anew), or
after its identifier came to resolve to another customer.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import msgpack

from actors.messages import Decide, Decided
from actors.shard.decisions import Tracked
from actors.shard.profiles import idem_key
from decisioning.config import OUTBOUND
from decisioning.errors import RequestIdReused
from decisioning.policy.decide import ChannelChoice, Decision, ScoredAction
from decisioning.profile.slots import slot_of

__all__ = ["Answer", "Answers", "decided_of", "extra_of", "request_key"]

# an action of an answer beyond its id (which the tracked decision holds)
_SCORES = ("group", "channel", "propensity", "value", "weight", "lever", "priority")


def request_key(customer_id: str, request_id: str) -> bytes:
    """The key of a customer's request id (a digest: the client's id is not kept)."""
    return idem_key(f"decide\x00{customer_id}\x00{request_id}")  # (ids hold no NUL)


class Answer(NamedTuple):
    """A remembered answer: the tracked decision and the rest of the answer (`extra_of`),
    with the slot its key moves with."""

    slot: int
    decision_id: str
    tracked: Tracked
    extra: list[Any]


def extra_of(d: Decided) -> list[Any]:
    """What an answer holds beyond its tracked decision, as plain values (the WAL's
    form; one msgpack round trip, so a live shard keeps what a recovered one reads)."""
    c, dec = d.channel_choice, d.decision
    extra = [
        d.variant,
        None if c is None else [c.channel, c.reason, c.channels],
        [[*(getattr(a, f) for f in _SCORES), a.model_version] for a in dec.actions],
        dec.explanation,
        dec.candidates,
        dec.eligible,
    ]
    packed = msgpack.packb(extra, use_bin_type=True)
    return msgpack.unpackb(packed, raw=False, strict_map_key=False)  # type: ignore[no-any-return]


def decided_of(decision_id: str, t: Tracked, extra: list[Any]) -> Decided:
    """The answer again, from its tracked decision and `extra_of` (no trace)."""
    variant, choice, scores, explanation, candidates, eligible = extra
    actions = [ScoredAction(a, *s) for a, s in zip(t.actions, scores, strict=True)]
    decision = Decision(
        decision_id,
        t.customer_id,
        t.ts,
        t.channel,
        t.placement,
        actions,
        candidates,
        eligible,
        t.model_version.split(",") if t.model_version else [],
        explanation,
        explored=variant == "explore",
    )
    return Decided(decision, variant, None if choice is None else ChannelChoice(*choice))


Row = tuple[Any, ...]  # (key, slot, decision_id, *Tracked, extra): snapshots, slot moves


class Answers:
    """The remembered answers by key, oldest first, at most `keep` (the event ids'
    bound, `server.idempotency_keys`)."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.held: OrderedDict[bytes, Answer] = OrderedDict()

    def __len__(self) -> int:
        return len(self.held)

    def get(self, key: bytes) -> Answer | None:
        return self.held.get(key)

    def again(self, a: Answer, request: Decide) -> Decided:
        """The answer to a retry of the request that `a` answered; RequestIdReused if it
        asks for another channel or placement."""
        t = a.tracked
        asked = OUTBOUND if a.extra[1] is not None else t.channel  # (a channel choice)
        if request.channel != asked or request.placement != t.placement:
            raise RequestIdReused(
                f"request_id {request.request_id!r} was used for a decision on channel "
                f"{asked!r}, placement {t.placement!r}: a retry must ask for the same; "
                "a new decision needs a new request_id",
                field="request_id",
            )
        return decided_of(a.decision_id, t, a.extra)

    def remember(self, key: bytes, decision_id: str, tracked: Tracked, extra: list[Any]) -> None:
        """A decision made under `key` (live, and in replay)."""
        self.held[key] = Answer(slot_of(tracked.customer_id), decision_id, tracked, extra)
        self._bound()

    def forget(self, customer_id: str) -> None:
        """Erasure: the customer's answers go."""
        for k in [k for k, a in self.held.items() if a.tracked.customer_id == customer_id]:
            del self.held[k]

    # -- as rows: snapshots and slot moves -----------------------------------------------

    def rows(self, lo: int = 0, hi: int | None = None) -> list[Row]:
        """Every answer as a row (those of slots [lo, hi), when `hi` is given)."""
        return [
            (k, a.slot, a.decision_id, *a.tracked, a.extra)
            for k, a in self.held.items()
            if hi is None or lo <= a.slot < hi
        ]

    def load(self, rows: Iterable[Row], tracked: Mapping[str, Tracked] | None = None) -> None:
        """Answers from rows, added (a key known already keeps its place and answer);
        `tracked`: the history's decisions, whose objects are shared when equal."""
        for key, slot, did, cid, actions, ts, channel, placement, version, extra in rows:
            t = Tracked(cid, tuple(actions), ts, channel, placement, version)
            same = tracked.get(did) if tracked is not None else None
            self.held.setdefault(
                bytes(key), Answer(int(slot), did, same if same == t else t, extra)
            )
        self._bound()

    def drop(self, lo: int, hi: int) -> None:
        """The answers of slots [lo, hi) go."""
        for k in [k for k, a in self.held.items() if lo <= a.slot < hi]:
            del self.held[k]

    def _bound(self) -> None:
        while len(self.held) > self.keep:
            self.held.popitem(last=False)
