"""Trigger timers and the outbound queue of one shard (pure state; the shard logs every
change to its WAL and carries both in its snapshots).

Timers: one per (customer, trigger), set by the trigger's `on` event and cleared by a
`not_followed_by` event, by firing, or by erasure. Queue: messages (the decisions that
triggers made) waiting for delivery, at least once: a message is leased to a consumer
and leaves the queue only when acked; a lease that runs out hands it out again. Leases
are not persisted: after a restart every unacked message is handed out again.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["Message", "Outbox", "Timers"]


class Timers:
    """Due times per (customer, trigger), with a heap to find the due ones."""

    def __init__(self) -> None:
        self.due: dict[tuple[str, str], tuple[float, float]] = {}  # key -> (due, armed at)
        self._heap: list[tuple[float, str, str]] = []

    def __len__(self) -> int:
        return len(self.due)

    def set(self, customer_id: str, trigger: str, due: float, armed: float) -> None:
        self.due[(customer_id, trigger)] = (due, armed)
        heapq.heappush(self._heap, (due, customer_id, trigger))
        if len(self._heap) > 2 * len(self.due) + 1024:  # re-armed often: drop stale entries
            self._heap = [(d, c, t) for (c, t), (d, _) in self.due.items()]
            heapq.heapify(self._heap)

    def get(self, customer_id: str, trigger: str) -> tuple[float, float] | None:
        return self.due.get((customer_id, trigger))

    def clear(self, customer_id: str, trigger: str) -> bool:
        return self.due.pop((customer_id, trigger), None) is not None

    def next_due(self) -> float | None:
        while self._heap:
            due, c, t = self._heap[0]
            if self.due.get((c, t), (None,))[0] == due:
                return due
            heapq.heappop(self._heap)  # stale: re-armed or cleared since
        return None

    def take_due(self, now: float, limit: int) -> list[tuple[str, str, float, float]]:
        """Up to `limit` timers due at `now`, earliest first, taken off the heap: the
        caller clears each one it fires and gives the rest back with `put_back`."""
        out: list[tuple[str, str, float, float]] = []
        while self._heap and len(out) < limit and self._heap[0][0] <= now:
            due, c, t = heapq.heappop(self._heap)
            current = self.due.get((c, t))
            if current is not None and current[0] == due:
                out.append((c, t, due, current[1]))
        return out

    def put_back(self, items: Iterable[tuple[str, str, float, float]]) -> None:
        for c, t, due, _ in items:
            if self.due.get((c, t), (None,))[0] == due:
                heapq.heappush(self._heap, (due, c, t))

    def drop_customer(self, customer_id: str) -> int:
        keys = [k for k in self.due if k[0] == customer_id]
        for k in keys:
            del self.due[k]
        return len(keys)

    def rows(self) -> list[tuple[str, str, float, float]]:
        return [(c, t, d, a) for (c, t), (d, a) in self.due.items()]

    def load(self, rows: Iterable[tuple[str, str, float, float]]) -> None:
        for c, t, d, a in rows:
            self.set(c, t, d, a)


@dataclass(frozen=True, slots=True)
class Message:
    """A decision a trigger made, waiting for delivery; `id` is the decision id, which
    is also the idempotency key every sink passes on."""

    id: str
    customer_id: str
    channel: str
    trigger: str
    ts: float  # when it was queued
    decision: dict[str, Any]  # the decision as /v1/decide answers it

    def row(self) -> list[Any]:
        return [self.id, self.customer_id, self.channel, self.trigger, self.ts, self.decision]

    @classmethod
    def of(cls, row: list[Any] | tuple[Any, ...]) -> Message:
        mid, customer_id, channel, trigger, ts, decision = row
        return cls(mid, customer_id, channel, trigger, float(ts), dict(decision))

    def to_wire(self, open_token: str | None = None) -> dict[str, Any]:
        return {
            "id": self.id,
            "open_token": open_token,
            "idempotency_key": self.id,
            "customer_id": self.customer_id,
            "channel": self.channel,
            "trigger": self.trigger,
            "queued_at": self.ts,
            "actions": self.decision.get("actions", []),
            "decision": self.decision,
        }


class Outbox:
    """Undelivered messages per channel, oldest first, bounded."""

    def __init__(self, max_backlog: int) -> None:
        self.max_backlog = max_backlog
        self.by_channel: dict[str, OrderedDict[str, Message]] = {}
        self.leases: dict[str, float] = {}  # message id -> lease end
        self.count = 0

    def __len__(self) -> int:
        return self.count

    @property
    def full(self) -> bool:
        return self.count >= self.max_backlog

    def add(self, m: Message) -> None:
        q = self.by_channel.setdefault(m.channel, OrderedDict())
        if m.id not in q:
            q[m.id] = m
            self.count += 1

    def lease(self, channel: str, n: int, now: float, lease_s: float) -> list[Message]:
        """Up to `n` of the channel's oldest messages not leased now; leased for
        `lease_s` from `now`."""
        out: list[Message] = []
        for mid, m in self.by_channel.get(channel, {}).items():
            if len(out) >= n:
                break
            if self.leases.get(mid, -1.0) > now:
                continue
            self.leases[mid] = now + lease_s
            out.append(m)
        return out

    def release(self, ids: Iterable[str]) -> None:
        """Hand these out again at the next lease (a delivery attempt failed)."""
        for mid in ids:
            self.leases.pop(mid, None)

    def ack(self, ids: Iterable[str]) -> list[str]:
        """Remove delivered messages; returns the ids that were still queued."""
        done = []
        for mid in ids:
            for q in self.by_channel.values():
                if q.pop(mid, None) is not None:
                    self.count -= 1
                    done.append(mid)
                    break
            self.leases.pop(mid, None)
        return done

    def drop_customer(self, customer_id: str) -> list[str]:
        gone = [
            mid
            for q in self.by_channel.values()
            for mid, m in q.items()
            if m.customer_id == customer_id
        ]
        self.ack(gone)
        return gone

    def stats(self, now: float) -> dict[str, Any]:
        oldest = min(
            (next(iter(q.values())).ts for q in self.by_channel.values() if q), default=None
        )
        return {
            "backlog": self.count,
            "max_backlog": self.max_backlog,
            "leased": sum(1 for end in self.leases.values() if end > now),
            "by_channel": {ch: len(q) for ch, q in self.by_channel.items() if q},
            "oldest_s": None if oldest is None else round(max(now - oldest, 0.0), 3),
        }

    def messages(self) -> list[Message]:
        return [m for q in self.by_channel.values() for m in q.values()]
