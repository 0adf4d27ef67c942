"""A shard's profile state: the profile store, the idempotency keys of what it applied
lately, and its counters."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable

from decisioning.config import Config
from decisioning.profile import Event, ProfileSchema, ProfileStore
from decisioning.profile.slots import slot_of

__all__ = ["COUNTERS", "Profiles", "idem_key"]

COUNTERS = (
    "events",
    "decisions",
    "decisions_repeated",  # retried decides answered again (a request id answered before)
    "outcomes",
    "duplicates",
    "erasures",
    "triggers_fired",  # decisions triggers made
    "messages_queued",  # ... that chose an action (the rest chose nothing)
    "messages_acked",
    "trigger_errors",
)


def idem_key(event_id: str) -> bytes:
    """The idempotency key of a client's event id: a 16-byte blake2b digest (no client
    id, which may name a customer, is kept)."""
    return hashlib.blake2b(event_id.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class Profiles:
    """Profiles, and which events (and outcomes, and merges) were applied already, so a
    retry is applied once."""

    def __init__(self, config: Config) -> None:
        self.schema = ProfileSchema(config)
        self.store = ProfileStore(self.schema)
        self.keep = config.server.idempotency_keys
        # idempotency keys applied lately, oldest first (popitem(last=False) is O(1)),
        # each with the slot of its customer (-1: a merge's, kept by every shard it
        # reaches), so the keys move with their slots
        self.seen: OrderedDict[bytes, int] = OrderedDict()
        self.counters = dict.fromkeys(COUNTERS, 0)

    def check(self, events: Iterable[Event], now: float | None) -> None:
        """Raise InvalidInput for the first event that does not fit the schema."""
        for e in events:
            self.schema.check_event(e, now)

    def fresh(self, events: list[Event]) -> list[Event]:
        """The events not applied before (by event id); retried duplicates are dropped."""
        out, ids = [], set()
        for e in events:
            if e.event_id is not None:
                key = idem_key(e.event_id)
                if key in self.seen or key in ids:
                    self.counters["duplicates"] += 1
                    continue
                ids.add(key)
            out.append(e)
        return out

    def remember(self, events: Iterable[Event]) -> None:
        """These events were applied: a retry of one is a duplicate from now on."""
        for e in events:
            if e.event_id is not None:
                self.seen[idem_key(e.event_id)] = slot_of(e.customer_id)
        self._bound()

    def folded(self, merge_id: str) -> bool:
        """Whether this merge was folded here already."""
        return idem_key(f"merge:{merge_id}") in self.seen

    def fold(self, merge_id: str) -> None:
        self.seen[idem_key(f"merge:{merge_id}")] = -1

    def load(
        self, seen: Iterable[bytes], counters: dict[str, int], slots: Iterable[int] = ()
    ) -> None:
        """From a snapshot (`slots`: each key's slot; none: -1 for all, an old snapshot)."""
        keys = list(seen)
        slot_list = list(slots) or [-1] * len(keys)
        self.seen = OrderedDict(zip(keys, slot_list, strict=True))
        self.counters.update(counters)

    def keys_in(self, lo: int, hi: int) -> list[tuple[bytes, int]]:
        """The idempotency keys of slots [lo, hi), and every key of no slot (-1)."""
        return [(k, s) for k, s in self.seen.items() if lo <= s < hi or s < 0]

    def add_keys(self, keys: Iterable[tuple[bytes, int]]) -> None:
        """Keys moved here with their slots (a key known already keeps its place)."""
        for k, s in keys:
            self.seen.setdefault(k, s)
        self._bound()

    def drop_keys(self, lo: int, hi: int) -> None:
        """The keys of slots [lo, hi) leave (a key of no slot stays: it is not theirs)."""
        for k in [k for k, s in self.seen.items() if lo <= s < hi]:
            del self.seen[k]

    def _bound(self) -> None:
        while len(self.seen) > self.keep:
            self.seen.popitem(last=False)
