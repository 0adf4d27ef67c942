"""Which shard owns a customer, and where that shard listens (the published slot map).

A customer's slot is xxh3_64 of the UTF-8 of its NFC-normalised id, modulo 16384: the
server computes the same (decisioning/profile/slots.py `slot_of`, after serving/wire.py
normalises ids), so "é" typed as one code point or as "e" + a combining accent is one
customer, in one slot, on one shard. A decision id carries its customer's slot
(`d-<4 hex digits>-<random>`), so an outcome goes where its decision was made.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import xxhash

__all__ = ["SLOTS", "SlotMap", "decision_slot", "slot_of"]

SLOTS = 16384


def slot_of(customer_id: str) -> int:
    """The slot of a customer (or `<kind>:<value>` identifier), as the server has it."""
    if not (customer_id.isascii() and customer_id.isprintable()):  # NFC is a no-op there
        customer_id = unicodedata.normalize("NFC", customer_id)
    return xxhash.xxh3_64_intdigest(customer_id.encode("utf-8", "surrogatepass")) % SLOTS


def decision_slot(decision_id: str) -> int | None:
    """The customer slot a decision was made for; None for an id not of that shape
    (the server then answers it 404 `unknown_decision`, wherever it is sent)."""
    parts = decision_id.split("-")
    if len(parts) != 3 or parts[0] != "d" or len(parts[1]) != 4:
        return None
    try:
        slot = int(parts[1], 16)
    except ValueError:
        return None
    return slot if slot < SLOTS else None


@dataclass(frozen=True, slots=True)
class SlotMap:
    """`GET /v1/cluster/slots`: each slot's shard, each shard's own endpoint (None while
    it restarts or when shard ports are off), and the map's epoch (it grows at every
    change)."""

    epoch: int
    ranges: tuple[tuple[int, int, int], ...]  # (first, last (inclusive), shard)
    endpoints: Mapping[int, str | None]
    owners: tuple[int, ...]  # slot -> shard, SLOTS long

    @classmethod
    def from_wire(cls, body: Mapping[str, Any]) -> SlotMap:
        ranges = tuple((int(a), int(b), int(s)) for a, b, s in body["slots"])
        owners = [-1] * SLOTS
        for first, last, shard in ranges:
            owners[first : last + 1] = [shard] * (last - first + 1)
        endpoints = {int(s["shard"]): s.get("endpoint") or None for s in body.get("shards", [])}
        return cls(int(body["epoch"]), ranges, endpoints, tuple(owners))

    def shard_of(self, slot: int) -> int:
        """The owner of `slot` (-1: no range names it)."""
        return self.owners[slot]

    def endpoint_of(self, slot: int) -> str | None:
        """Where the owner of `slot` listens (None: send it to the ingress)."""
        return self.endpoints.get(self.owners[slot])
