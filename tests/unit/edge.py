"""A shard called as the ingress calls it, from the dicts a test writes: each request
becomes the typed message serving builds from a validated body (actors/messages.py),
and each result the wire body serving builds from it (serving/bodies.py), so a test
reads what a client would. Errors are raised, as the shard raises them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from actors.messages import (
    AckOutbound,
    ApplyEvents,
    CheckOutcomes,
    Decide,
    EraseProfile,
    GetProfile,
    LeaseOutbound,
    Outcome,
    Recorded,
    RecordOutcomes,
    ReleaseOutbound,
)
from actors.shard import Shard
from decisioning.profile import Event, event_from_wire
from serving.bodies import decision_body, erased_body, message_body, profile_body

__all__ = [
    "ack_outbound",
    "apply_events",
    "check_outcomes",
    "decide",
    "decide_message",
    "erase_profile",
    "events",
    "get_profile",
    "lease_outbound",
    "outcomes",
    "record_outcomes",
    "release_outbound",
]


def decide_message(request: Mapping[str, Any]) -> Decide:
    """A /v1/decide body as the message the ingress sends (its event, if any, is the
    decision's customer's)."""
    event = request.get("event")
    fields = {k: v for k, v in request.items() if k != "event"}
    if event is not None:
        event = event_from_wire({**event, "customer_id": request["customer_id"]})
    return Decide(**fields, event=event)


def decide(shard: Shard, request: Mapping[str, Any]) -> dict[str, Any]:
    """POST /v1/decide's answer."""
    return decision_body(shard.decide(decide_message(request)))


def events(wires: Iterable[Mapping[str, Any]]) -> ApplyEvents:
    return ApplyEvents(tuple(event_from_wire(e) for e in wires))


def apply_events(shard: Shard, wires: Iterable[Mapping[str, Any] | Event]) -> int:
    """A shard's part of POST /v1/events: the events accepted."""
    batch = [e if isinstance(e, Event) else event_from_wire(e) for e in wires]
    return shard.apply_events(ApplyEvents(tuple(batch)))


def outcomes(wires: Iterable[Mapping[str, Any]]) -> tuple[Outcome, ...]:
    return tuple(
        Outcome(o["decision_id"], o["action_id"], o["outcome"], o.get("ts")) for o in wires
    )


def check_outcomes(shard: Shard, wires: Iterable[Mapping[str, Any]]) -> int:
    return shard.check_outcomes(CheckOutcomes(outcomes(wires)))


def record_outcomes(shard: Shard, wires: Iterable[Mapping[str, Any]]) -> Recorded:
    return shard.record_outcomes(RecordOutcomes(outcomes(wires)))


def get_profile(shard: Shard, customer_id: str) -> dict[str, Any]:
    """GET /v1/profiles/{customer_id}'s answer."""
    return profile_body(shard.get_profile(GetProfile(customer_id)))


def erase_profile(shard: Shard, customer_id: str) -> dict[str, Any]:
    """DELETE /v1/profiles/{customer_id}'s answer."""
    return erased_body(shard.erase_profile(EraseProfile(customer_id)))


def lease_outbound(
    shard: Shard, channel: str, n: int, lease_s: float | None = None
) -> list[dict[str, Any]]:
    """The messages of GET /v1/outbound, as this shard leases them."""
    return [message_body(m) for m in shard.lease_outbound(LeaseOutbound(channel, n, lease_s))]


def ack_outbound(shard: Shard, ids: Iterable[str]) -> int:
    return shard.ack_outbound(AckOutbound(tuple(ids)))


def release_outbound(shard: Shard, ids: Iterable[str]) -> int:
    return shard.release_outbound(ReleaseOutbound(tuple(ids)))
