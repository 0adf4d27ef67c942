"""Customer events as the core sees them: validated, typed, `ts` in unix seconds.

Two event types are special: `profile_update` sets attributes and `consent` records a
yes, no or unknown per channel; every event type may feed aggregates.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CONSENT", "PROFILE_UPDATE", "Event", "event_from_wire"]

PROFILE_UPDATE = "profile_update"
CONSENT = "consent"


@dataclass(frozen=True, slots=True)
class Event:
    """A validated customer event; `ts` is unix seconds."""

    customer_id: str
    type: str
    ts: float
    properties: Mapping[str, Any] = field(default_factory=dict)
    event_id: str | None = None


def event_from_wire(e: Mapping[str, Any]) -> Event:
    """An event from its (already validated) wire dict."""
    return Event(
        customer_id=e["customer_id"],
        type=e["type"],
        ts=e["ts"],
        properties=e.get("properties") or {},
        event_id=e.get("event_id"),
    )
