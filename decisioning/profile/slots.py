"""customer_id -> one of 16384 fixed hash slots -> shard (by a map that can change)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import xxhash

from decisioning.errors import NotFound

__all__ = [
    "SLOTS",
    "Migration",
    "SlotMap",
    "bucket",
    "contiguous_map",
    "decision_slot",
    "ranges",
    "slot_of",
]

SLOTS = 16384


def slot_of(customer_id: str) -> int:
    """Stable across processes and machines (xxh3, never Python's salted hash())."""
    return xxhash.xxh3_64_intdigest(customer_id.encode("utf-8")) % SLOTS


def decision_slot(decision_id: str) -> int:
    """The customer slot a decision id was made for ('d-<4 hex slot>-<random>')."""
    parts = decision_id.split("-")
    if len(parts) != 3 or parts[0] != "d" or len(parts[1]) != 4:
        raise NotFound(
            f"unknown decision {decision_id!r}", field="decision_id", code="unknown_decision"
        )
    try:
        slot = int(parts[1], 16)
    except ValueError:
        slot = SLOTS
    if not 0 <= slot < SLOTS:  # "d-ffff-…": 4 hex digits reach past the last slot
        raise NotFound(
            f"unknown decision {decision_id!r}", field="decision_id", code="unknown_decision"
        )
    return slot


def contiguous_map(shards: int) -> list[int]:
    """slot -> shard, each shard owning one contiguous range of slots."""
    return [slot * shards // SLOTS for slot in range(SLOTS)]


def bucket(salt: str, customer_id: str) -> float:
    """A customer's sticky place in [0, 1) for `salt` (a model name): independent of the
    slot, so a challenger's share is spread over every shard."""
    h = xxhash.xxh3_64_intdigest(f"{salt}\0{customer_id}".encode("utf-8", "surrogatepass"))
    return h / 2.0**64


def ranges(owners: Sequence[int]) -> list[tuple[int, int, int]]:
    """The map as runs: (first slot, end slot (exclusive), shard), in slot order."""
    out: list[tuple[int, int, int]] = []
    start = 0
    for slot in range(1, len(owners) + 1):
        if slot == len(owners) or owners[slot] != owners[start]:
            out.append((start, slot, owners[start]))
            start = slot
    return out


@dataclass(frozen=True)
class Migration:
    """One step of moving slots [lo, hi) from shard `src` to shard `dst`, as the
    supervisor journals it (decisioning/stores/slotmap.py). `step` is "frozen" (the range
    is frozen on src, maybe absorbed on dst; the map is not flipped: a crash rolls it
    back) or "flipped" (the map names dst: a crash finishes it, dropping the range on src)."""

    id: str
    lo: int
    hi: int
    src: int
    dst: int
    step: str = "frozen"

    def covers(self, slot: int) -> bool:
        return self.lo <= slot < self.hi


@dataclass(frozen=True)
class SlotMap:
    """Which shard owns each of the SLOTS slots, at which epoch (it grows by one at every
    change), how many shards the deployment runs, and the migration in flight (if any)."""

    epoch: int
    owners: tuple[int, ...]
    shards: int
    migration: Migration | None = None

    @classmethod
    def contiguous(cls, shards: int, epoch: int = 1) -> SlotMap:
        return cls(epoch, tuple(contiguous_map(shards)), shards)

    def owner(self, slot: int) -> int:
        return self.owners[slot]

    def frozen_on(self, shard: int) -> Migration | None:
        """The migration that freezes a range of `shard` (its source) right now."""
        m = self.migration
        return m if m is not None and m.src == shard else None

    def count(self, shard: int) -> int:
        """Slots `shard` owns."""
        return sum(1 for o in self.owners if o == shard)
