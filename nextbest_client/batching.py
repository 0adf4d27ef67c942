"""Events waiting to be sent, per owner, as a Kafka producer holds records per partition:
a batch leaves when it holds `batch_size` events or its first event has waited
`linger_s`, and at most one batch per owner is in flight, so a customer's events reach
its shard in the order they were sent. Plain state; the producers (producer.py) do the
sending and the waiting."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["Batches"]

K = TypeVar("K")
T = TypeVar("T")


@dataclass
class _Queue(Generic[T]):
    items: deque[T] = field(default_factory=deque)
    since: float = 0.0  # when its oldest waiting item came


class Batches(Generic[K, T]):
    """Items queued per key; `take` hands out the batches due."""

    def __init__(self, linger_s: float, batch_size: int) -> None:
        self.linger_s = linger_s
        self.batch_size = batch_size
        self.queues: dict[K, _Queue[T]] = {}
        self.in_flight: set[K] = set()
        self.waiting = 0

    def add(self, key: K, item: T, now: float) -> bool:
        """Queue `item`; True when its key now has a full batch (worth a wake-up)."""
        q = self.queues.get(key)
        if q is None:
            q = self.queues[key] = _Queue()
        if not q.items:
            q.since = now
        q.items.append(item)
        self.waiting += 1
        return len(q.items) >= self.batch_size

    def take(self, now: float, flush: bool = False) -> list[tuple[K, list[T]]]:
        """The batches due now (all that wait when `flush`), their keys now in flight."""
        out: list[tuple[K, list[T]]] = []
        for key, q in self.queues.items():
            if key in self.in_flight or not q.items:
                continue
            if flush or len(q.items) >= self.batch_size or now - q.since >= self.linger_s:
                n = min(len(q.items), self.batch_size)
                batch = [q.items.popleft() for _ in range(n)]
                self.waiting -= n
                q.since = now  # the rest (a full batch's overflow) waits from now
                self.in_flight.add(key)
                out.append((key, batch))
        for key in [k for k, q in self.queues.items() if not q.items and k not in self.in_flight]:
            del self.queues[key]
        return out

    def done(self, key: K) -> None:
        """The batch of `key` in flight got its answer (or its error)."""
        self.in_flight.discard(key)
        q = self.queues.get(key)
        if q is not None and not q.items:
            del self.queues[key]

    def next_due(self) -> float | None:
        """When the earliest waiting batch is due (None: nothing waits to be taken)."""
        due = [q.since + self.linger_s for k, q in self.queues.items()
               if q.items and k not in self.in_flight]  # fmt: skip
        return min(due) if due else None

    @property
    def idle(self) -> bool:
        """Nothing waits and nothing is in flight."""
        return self.waiting == 0 and not self.in_flight
