"""A customer shard: live profiles, catalog and models of its customers, as plain
classes (no Ray: `actors/remote.py` makes `Shard` an actor). `Shard` is the facade;
each concern is its own part (the map is in `facade.py`)."""

from __future__ import annotations

from actors.shard.facade import Shard
from actors.shard.outcomes import OUTCOMES
from decisioning.errors import NotFound

__all__ = ["OUTCOMES", "Shard", "decision_slot"]


def decision_slot(decision_id: str) -> int:
    """The customer slot a decision id was made for ('d-<4 hex slot>-<random>')."""
    parts = decision_id.split("-")
    if len(parts) != 3 or parts[0] != "d" or len(parts[1]) != 4:
        raise NotFound(
            f"unknown decision {decision_id!r}", field="decision_id", code="unknown_decision"
        )
    try:
        return int(parts[1], 16)
    except ValueError:
        raise NotFound(
            f"unknown decision {decision_id!r}", field="decision_id", code="unknown_decision"
        ) from None
