"""Outbound messages at the ingress: the long poll that leases them from every shard, and
the acks that take them off their queues.

A message is leased for `delivery.lease_s`: acked once delivered, or handed out again
(at least once; its `id` is the idempotency key). A poll takes at most `limit` over all
shards; what the shards leased beyond that goes back to their queues at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

from actors.messages import AckOutbound, Leased, LeaseOutbound, ReleaseOutbound
from decisioning.errors import NextbestError
from serving.bodies import message_body
from serving.errors import ok
from serving.fanout import Fanout
from serving.wire import WireError

__all__ = ["OUTBOUND_PARAMS", "Poll", "ack", "poll_of", "take"]

OUTBOUND_PARAMS = [
    {
        "name": "channel",
        "in": "query",
        "required": True,
        "description": "The channel whose messages to take (one without a sink).",
        "schema": {"type": "string", "maxLength": 64},
    },
    {
        "name": "limit",
        "in": "query",
        "description": "At most this many messages.",
        "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
    },
    {
        "name": "wait_s",
        "in": "query",
        "description": "With none queued, wait up to this long for one (long poll).",
        "schema": {"type": "number", "minimum": 0, "maximum": 30, "default": 0},
    },
]
Poll = tuple[str, int, float]  # channel, limit, wait_s
ShardOf = Callable[[str], int]  # a message id -> its shard


def _number(
    q: Mapping[str, str], name: str, default: Any, low: float, high: float, kind: type
) -> Any:
    raw = q.get(name)
    if raw is None:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise WireError(422, "invalid_field", f"{name} must be a number", name) from None
    if not low <= value <= high:  # (NaN fails this too)
        raise WireError(422, "invalid_field", f"{name} must be between {low:g} and {high:g}", name)
    return value


def poll_of(q: Mapping[str, str], channels: frozenset[str], sinks: frozenset[str]) -> Poll:
    """GET /v1/outbound's query, checked: a known channel without a sink, and limits."""
    stray = sorted(set(q) - {"channel", "limit", "wait_s"})
    if stray:
        raise WireError(422, "unknown_field", f"unknown parameter {stray[0]!r}", stray[0])
    channel = q.get("channel")
    if channel is None:
        raise WireError(422, "missing_field", "channel is required", "channel")
    limit = _number(q, "limit", 100, 1, 1000, int)
    wait_s = _number(q, "wait_s", 0.0, 0.0, 30.0, float)
    if channel not in channels:
        raise WireError(422, "unknown_channel", f"unknown channel {channel!r}", "channel")
    if channel in sinks:
        raise WireError(
            409,
            "channel_has_sink",
            f"{channel} is delivered by its sink (delivery.sinks), not pulled",
            "channel",
        )
    return channel, limit, wait_s


async def take(fanout: Fanout, shard_of: ShardOf, poll: Poll) -> list[dict[str, Any]]:
    """Up to `limit` messages of the channel (their wire bodies), oldest first per
    shard; with none queued, asked again every 0.1 s until `wait_s` has passed."""
    channel, limit, wait_s = poll
    deadline = time.monotonic() + wait_s
    lease = LeaseOutbound(channel, limit)
    while True:
        answers = await fanout.everywhere("lease_outbound", lease)
        taken: list[Leased] = sorted((m for a in answers for m in ok(a)), key=_queued_at)
        left = deadline - time.monotonic()
        if taken or left <= 0:
            break
        await asyncio.sleep(min(0.1, left))
    extra = [m.message.id for m in taken[limit:]]  # more than asked, over every shard
    if extra:
        await fanout.send("release_outbound", extra, shard_of, _release)
    return [message_body(m) for m in taken[:limit]]


def _queued_at(leased: Leased) -> float:
    return leased.message.ts


def _release(ids: list[str]) -> ReleaseOutbound:
    return ReleaseOutbound(tuple(ids))


def _ack(ids: list[str]) -> AckOutbound:
    return AckOutbound(tuple(ids))


async def ack(fanout: Fanout, shard_of: ShardOf, ids: list[str]) -> int:
    """Messages delivered: off their shards' queues (unknown or acked already: ignored).
    An id that no shard could have handed out is an invalid field of the body."""
    for i, mid in enumerate(ids):
        try:
            shard_of(mid)
        except NextbestError as e:  # a malformed id: the body is at fault, not a lookup
            raise WireError(422, "invalid_field", str(e), f"ids[{i}]") from None
    parts = await fanout.send("ack_outbound", ids, shard_of, _ack)
    return sum(ok(p.answer) for p in parts)
