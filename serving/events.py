"""Events and outcomes at the ingress: events checked against the profile schema,
identifiers resolved to their customers, each shard's part of a batch sent to it, merged
customers followed, and the links the events make; outcomes sent to the shards of
their decisions.

Once a shard has applied events the answer says so, whatever happens to the links that
follow: a link or merge that could not finish is listed in `links_pending` (its merge is
owed durably on the identifier's shard and finishes later), never turned into an error
for events that were in fact applied.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from actors.messages import ApplyEvents, CheckOutcomes, Outcome, Recorded, RecordOutcomes
from decisioning.errors import NextbestError
from decisioning.profile import Event, ProfileSchema
from serving.errors import http_error, ok
from serving.fanout import group
from serving.identity import Identities

__all__ = ["apply_events", "checked_events", "ingest", "record_outcomes"]


def checked_events(schema: ProfileSchema, items: list[Any], batch: bool, now: float) -> list[Event]:
    """Validated events (`EventIn`; no `ts`: now) as the core's events, each checked
    against the profile schema; the first that fails is the error, at its place in the
    batch."""
    events: list[Event] = []
    for i, ev in enumerate(items):
        ts = now if ev.ts is None else ev.ts
        event = Event(ev.customer_id, ev.type, ts, ev.properties, ev.event_id)
        try:
            schema.check_event(event, now)
        except NextbestError as e:
            raise http_error(e, prefix=f"[{i}]." if batch else "") from None
        events.append(event)
    return events


Placed = tuple[int, Event]  # an event and its place in the request


def _customer(item: Placed) -> str:
    return item[1].customer_id


def _rehome(item: Placed, customer: str) -> Placed:
    return item[0], replace(item[1], customer_id=customer)


def _apply(items: list[Placed]) -> ApplyEvents:
    return ApplyEvents(tuple(e for _, e in items))


async def apply_events(ident: Identities, events: list[Event]) -> tuple[int, list[Event]]:
    """Apply checked events: identifiers resolved to their customers, merged customers
    followed to where they went (a shard applies nothing of a batch that names a merged
    customer: it answers `moved` with all of them, and that part goes again). The
    events accepted, and the events as applied (each with the customer it was applied
    to, in the request's order)."""
    items = list(enumerate(events))
    if ident.kinds:
        aliases = {e.customer_id for e in events if ident.is_alias(e.customer_id)}
        resolved = {a: await ident.canonical(a) for a in aliases}
        items = [_rehome(i, resolved[_customer(i)]) if _customer(i) in resolved else i
                 for i in items]  # fmt: skip
    parts = await ident.fanout.follow("apply_events", items, _customer, _rehome, _apply)
    applied = sorted((i for part in parts for i in part.items), key=lambda i: i[0])
    return sum(part.answer for part in parts), [e for _, e in applied]


async def ingest(ident: Identities, events: list[Event]) -> dict[str, Any]:
    """POST /v1/events after validation: `{"accepted": n}`, plus `links_pending` when a
    link the events make could not finish."""
    accepted, applied = await apply_events(ident, events)
    pending = []
    for alias, customer in ident.linked_by(applied):  # e.g. a login
        err = await ident.link(alias, customer)
        if err is not None:
            pending.append({"identifier": alias, "customer_id": customer, "error": err})
    return {"accepted": accepted, **({"links_pending": pending} if pending else {})}


async def record_outcomes(
    ident: Identities, outcomes: list[Outcome], shard_of: Callable[[str], int], batch: bool
) -> int:
    """POST /v1/outcomes after validation: each outcome to the shard of its decision.
    A batch over several shards is checked on every one before any records it (never
    half a batch). Outcomes of customers merged away since come back as events for
    their survivors, applied there."""
    for i, o in enumerate(outcomes):
        try:
            shard_of(o.decision_id)
        except NextbestError as e:
            raise http_error(e, prefix=f"[{i}]." if batch else "") from None

    def shard(o: Outcome) -> int:
        return shard_of(o.decision_id)

    if len(group(outcomes, shard)) > 1:
        for part in await ident.fanout.send("check_outcomes", outcomes, shard, _check):
            ok(part.answer)
    accepted, forward = 0, list[Event]()
    for part in await ident.fanout.send("record_outcomes", outcomes, shard, _record):
        r: Recorded = ok(part.answer)
        accepted += r.accepted
        forward += r.forward  # outcomes of customers merged away since
    if forward:
        await apply_events(ident, forward)
    return accepted


def _check(outcomes: list[Outcome]) -> CheckOutcomes:
    return CheckOutcomes(tuple(outcomes))


def _record(outcomes: list[Outcome]) -> RecordOutcomes:
    return RecordOutcomes(tuple(outcomes))
