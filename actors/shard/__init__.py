"""A customer shard: live profiles, catalog and models of its customers, as plain
classes (no Ray: `actors/remote.py` makes `Shard` an actor). `Shard` is the facade;
each concern is its own part (the map is in `facade.py`)."""

from __future__ import annotations

from actors.shard.facade import Shard
from actors.shard.outcomes import OUTCOMES
from decisioning.profile.slots import decision_slot

__all__ = ["OUTCOMES", "Shard", "decision_slot"]
