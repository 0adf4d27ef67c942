"""The request bodies the HTTP figures send (JSON, as a client would; decide also as
msgpack), one or a batch per customer: pure, so they can be checked without a server."""

from __future__ import annotations

import json
from typing import Any

import msgpack

__all__ = ["batch_bodies", "decide_bodies", "decide_msgpack_bodies", "event_bodies"]


def _decide(customer: str) -> dict[str, Any]:
    """A decision for the web home hero, three actions."""
    return {"customer_id": customer, "channel": "web", "placement": "home_hero", "limit": 3}


def decide_bodies(customers: list[str]) -> list[bytes]:
    """A /v1/decide body (JSON) per customer."""
    return [json.dumps(_decide(c)).encode() for c in customers]


def decide_msgpack_bodies(customers: list[str]) -> list[bytes]:
    """The same requests as `decide_bodies`, encoded as msgpack."""
    return [msgpack.packb(_decide(c)) for c in customers]


def event_bodies(customers: list[str], now: float) -> list[bytes]:
    """A single page view per customer."""
    return [
        json.dumps(
            {"customer_id": c, "type": "page_view", "ts": now, "properties": {"page": "cards"}}
        ).encode()
        for c in customers
    ]


def batch_bodies(customers: list[str], now: float) -> list[bytes]:
    """20 batches of 100 page views, going round the customers."""
    return [
        json.dumps(
            [
                {
                    "customer_id": customers[(i * 100 + j) % 1000],
                    "type": "page_view",
                    "ts": now,
                    "properties": {"page": "loans"},
                }
                for j in range(100)
            ]
        ).encode()
        for i in range(20)
    ]
