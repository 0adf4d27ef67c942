"""customer_id -> one of 16384 fixed hash slots -> shard (by a map that can change)."""

from __future__ import annotations

import xxhash

__all__ = ["SLOTS", "bucket", "contiguous_map", "slot_of"]

SLOTS = 16384


def slot_of(customer_id: str) -> int:
    """Stable across processes and machines (xxh3, never Python's salted hash())."""
    return xxhash.xxh3_64_intdigest(customer_id.encode("utf-8")) % SLOTS


def contiguous_map(shards: int) -> list[int]:
    """slot -> shard, each shard owning one contiguous range of slots."""
    return [slot * shards // SLOTS for slot in range(SLOTS)]


def bucket(salt: str, customer_id: str) -> float:
    """A customer's sticky place in [0, 1) for `salt` (a model name): independent of the
    slot, so a challenger's share is spread over every shard."""
    h = xxhash.xxh3_64_intdigest(f"{salt}\0{customer_id}".encode("utf-8", "surrogatepass"))
    return h / 2.0**64
