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
from typing import Any

from pydantic import BaseModel

from decisioning.errors import NextbestError
from decisioning.profile import ProfileSchema, event_from_wire
from serving.errors import http_error, ok
from serving.fanout import group
from serving.identity import Identities

__all__ = ["apply_events", "checked_events", "ingest", "record_outcomes"]


def checked_events(
    schema: ProfileSchema, items: list[BaseModel], batch: bool, now: float
) -> list[dict[str, Any]]:
    """Validated events as wire dicts (no `ts`: now), each checked against the profile
    schema; the first that fails is the error, at its place in the batch."""
    wires: list[dict[str, Any]] = []
    for i, ev in enumerate(items):
        wire = ev.model_dump()
        if wire["ts"] is None:
            wire["ts"] = now
        try:
            schema.check_event(event_from_wire(wire), now)
        except NextbestError as e:
            raise http_error(e, prefix=f"[{i}]." if batch else "") from None
        wires.append(wire)
    return wires


async def apply_events(ident: Identities, wires: list[dict[str, Any]]) -> int:
    """Apply checked events: identifiers resolved to their customers, merged customers
    followed to where they went (a shard applies nothing of a batch that names a merged
    customer: it answers `moved` with all of them, and that part goes again). Rewrites
    each event's customer_id to the customer it was applied to."""
    if ident.kinds:
        aliases = {w["customer_id"] for w in wires if ident.is_alias(w["customer_id"])}
        resolved = {a: await ident.canonical(a) for a in aliases}
        for w in wires:
            w["customer_id"] = resolved.get(w["customer_id"], w["customer_id"])

    def rehome(wire: dict[str, Any], customer: str) -> dict[str, Any]:
        wire["customer_id"] = customer  # (in place: the caller links what was applied)
        return wire

    parts = await ident.fanout.follow("apply_events", wires, lambda w: w["customer_id"], rehome)
    return sum(part.answer for part in parts)


async def ingest(ident: Identities, wires: list[dict[str, Any]]) -> dict[str, Any]:
    """POST /v1/events after validation: `{"accepted": n}`, plus `links_pending` when a
    link the events make could not finish."""
    accepted = await apply_events(ident, wires)
    pending = []
    for alias, customer in ident.linked_by(wires):  # e.g. a login
        err = await ident.link(alias, customer)
        if err is not None:
            pending.append({"identifier": alias, "customer_id": customer, "error": err})
    return {"accepted": accepted, **({"links_pending": pending} if pending else {})}


async def record_outcomes(
    ident: Identities, items: list[dict[str, Any]], shard_of: Callable[[str], int], batch: bool
) -> int:
    """POST /v1/outcomes after validation: each outcome to the shard of its decision.
    A batch over several shards is checked on every one before any records it (never
    half a batch). Outcomes of customers merged away since come back as events for
    their survivors, applied there."""
    for i, o in enumerate(items):
        try:
            shard_of(o["decision_id"])
        except NextbestError as e:
            raise http_error(e, prefix=f"[{i}]." if batch else "") from None
    parts = group(items, lambda o: shard_of(o["decision_id"]))
    if len(parts) > 1:
        for part in await ident.fanout.send("check_outcomes", parts):
            ok(part.answer)
    accepted, forward = 0, []
    for part in await ident.fanout.send("record_outcomes", parts):
        r = ok(part.answer)
        if isinstance(r, dict):  # outcomes of customers merged away since
            accepted += r["accepted"]
            forward += r["forward"]
        else:
            accepted += r
    if forward:
        await apply_events(ident, forward)
    return accepted
