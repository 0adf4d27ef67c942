"""The API's requests as `Call`s, built the same for the sync and the async client.

Events get their `event_id` here, on a copy, before anything is sent: every attempt of
a request, and a caller's resend of the `pending` events of an error, carries the same
ids, so the server counts each event once.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote

from nextbest_client.codec import encode
from nextbest_client.exchange import Call
from nextbest_client.slots import decision_slot, slot_of

__all__ = [
    "MAX_BATCH",
    "decide_call",
    "event_of",
    "events_call",
    "outcome_call",
    "profile_call",
    "with_id",
]

MAX_BATCH = 1000  # the server's default `max_batch`: events in one request at most


def _ts(ts: float | str | datetime | None) -> float | str | None:
    if isinstance(ts, datetime):
        if ts.tzinfo is None:
            raise ValueError("a datetime ts needs a time zone (the server takes no naive time)")
        return ts.timestamp()
    return ts


def with_id(event: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `event` with an `event_id` (a new uuid4 hex unless it has one) and a
    datetime `ts` as unix seconds."""
    out = dict(event)
    if not out.get("event_id"):
        out["event_id"] = uuid.uuid4().hex
    if "ts" in out:
        out["ts"] = _ts(out["ts"])
    return out


def event_of(
    customer_id: str | None,
    type: str,
    properties: Mapping[str, Any] | None,
    ts: float | str | datetime | None,
    event_id: str | None,
) -> dict[str, Any]:
    """An event body (with an id); `customer_id` None: the event a decision applies."""
    ev: dict[str, Any] = {} if customer_id is None else {"customer_id": customer_id}
    ev["type"] = type
    if properties:
        ev["properties"] = dict(properties)
    if ts is not None:
        ev["ts"] = ts
    if event_id is not None:
        ev["event_id"] = event_id
    return with_id(ev)


def events_call(events: list[dict[str, Any]], use_msgpack: bool) -> Call:
    """One `POST /v1/events` of events that already have their ids."""
    slots = tuple(sorted({slot_of(str(e.get("customer_id", ""))) for e in events}))
    return Call("POST", "/v1/events", encode(events, use_msgpack), slots)


def decide_call(
    use_msgpack: bool,
    customer_id: str,
    channel: str,
    placement: str | None = None,
    context: Mapping[str, Any] | None = None,
    limit: int | None = None,
    explain: bool = False,
    dry_run: bool = False,
    event: Mapping[str, Any] | None = None,
    request_id: str | None = None,
) -> Call:
    """`POST /v1/decide`; fields left at their default are not sent, and `request_id`
    only when given (a server without idempotent decisions refuses the field)."""
    body: dict[str, Any] = {"customer_id": customer_id, "channel": channel}
    if placement is not None:
        body["placement"] = placement
    if context:
        body["context"] = dict(context)
    if limit is not None:
        body["limit"] = limit
    if explain:
        body["explain"] = True
    if dry_run:
        body["dry_run"] = True
    if event is not None:  # its id makes a retried decision apply it once
        body["event"] = with_id(event)
    if request_id is not None:
        body["request_id"] = request_id
    return Call("POST", "/v1/decide", encode(body, use_msgpack), (slot_of(customer_id),))


def outcome_call(
    use_msgpack: bool,
    decision_id: str,
    action_id: str,
    outcome: str,
    ts: float | str | datetime | None = None,
) -> Call:
    """`POST /v1/outcomes`, sent where the decision was made (its id names the slot)."""
    body: dict[str, Any] = {"decision_id": decision_id, "action_id": action_id, "outcome": outcome}
    if ts is not None:
        body["ts"] = _ts(ts)
    slot = decision_slot(decision_id)
    return Call("POST", "/v1/outcomes", encode(body, use_msgpack), () if slot is None else (slot,))


def profile_call(customer_id: str) -> Call:
    return Call("GET", f"/v1/profiles/{quote(customer_id, safe='')}", None, (slot_of(customer_id),))


def chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
