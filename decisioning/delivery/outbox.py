"""Trigger timers and the outbound queue of one shard (pure state; the shard logs every
change to its WAL and carries both in its snapshots).

Timers: one per (customer, trigger), set by the trigger's `on` event and cleared by a
`not_followed_by` event, by firing, or by erasure. Queue: messages (the decisions that
triggers made, held as typed records; the wire answer is built when one is leased)
waiting for delivery, at least once: a message is leased to a consumer and leaves the
queue only when acked; a lease that runs out hands it out again. Leases are not
persisted: after a restart every unacked message is handed out again.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from typing import Any

from decisioning.policy.decide import ChannelChoice, Decision, ScoredAction

__all__ = ["Message", "Outbox", "QueuedAction", "QueuedDecision", "Timers"]


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
class QueuedAction:
    """One action of a queued decision: what a message shows of it."""

    action_id: str
    group: str
    channel: str
    propensity: float
    value: float
    priority: float
    model_version: str | None

    @classmethod
    def of(cls, a: ScoredAction) -> QueuedAction:
        return cls(
            a.action_id, a.group, a.channel, a.propensity, a.value, a.priority, a.model_version
        )

    def to_wire(self) -> dict[str, Any]:
        return {
            "action_id": self.action_id,
            "group": self.group,
            "channel": self.channel,
            "propensity": self.propensity,
            "value": self.value,
            "priority": self.priority,
            "model_version": self.model_version,
        }


@dataclass(frozen=True, slots=True)
class QueuedDecision:
    """The decision a trigger made, as a message carries it (the wire answer is built
    from it when the message is leased, never stored)."""

    decision_id: str
    customer_id: str
    ts: float
    channel: str
    placement: str | None
    model_version: str | None
    actions: tuple[QueuedAction, ...]
    variant: str
    channel_choice: ChannelChoice | None = None

    @classmethod
    def of(cls, d: Decision, variant: str, choice: ChannelChoice | None) -> QueuedDecision:
        return cls(
            d.decision_id,
            d.customer_id,
            d.ts,
            d.channel,
            d.placement,
            ",".join(d.model_versions) or None,
            tuple(QueuedAction.of(a) for a in d.actions),
            variant,
            choice,
        )

    def to_wire(self) -> dict[str, Any]:
        """As /v1/decide answered it."""
        out: dict[str, Any] = {
            "decision_id": self.decision_id,
            "customer_id": self.customer_id,
            "ts": self.ts,
            "channel": self.channel,
            "placement": self.placement,
            "model_version": self.model_version,
            "actions": [a.to_wire() for a in self.actions],
            "variant": self.variant,
        }
        if self.channel_choice is not None:
            out["channel_choice"] = self.channel_choice.to_wire()
        return out

    def row(self) -> list[Any]:
        """Its form in the WAL and snapshots (a list; the wire dict was stored before)."""
        c = self.channel_choice
        return [
            self.decision_id,
            self.customer_id,
            self.ts,
            self.channel,
            self.placement,
            self.model_version,
            [[getattr(a, f) for f in _ACTION_FIELDS] for a in self.actions],
            self.variant,
            None if c is None else [c.channel, c.reason, c.channels],
        ]

    @classmethod
    def of_row(cls, row: list[Any] | dict[str, Any]) -> QueuedDecision:
        """From `row()`, or from the wire dict that older shards stored."""
        if isinstance(row, dict):
            return cls._of_wire(row)
        did, cid, ts, channel, placement, version, actions, variant, choice = row
        return cls(
            did,
            cid,
            ts,
            channel,
            placement,
            version,
            tuple(QueuedAction(*a) for a in actions),
            variant,
            None if choice is None else ChannelChoice(*choice),
        )

    @classmethod
    def _of_wire(cls, d: dict[str, Any]) -> QueuedDecision:
        choice = d.get("channel_choice")
        return cls(
            d["decision_id"],
            d["customer_id"],
            d["ts"],
            d["channel"],
            d.get("placement"),
            d.get("model_version"),
            tuple(QueuedAction(**a) for a in d.get("actions", ())),
            d.get("variant", "champion"),
            None if choice is None else ChannelChoice(**choice),
        )


_ACTION_FIELDS = tuple(f.name for f in fields(QueuedAction))


@dataclass(frozen=True, slots=True)
class Message:
    """A decision a trigger made, waiting for delivery; `id` is the decision id, which
    is also the idempotency key every sink passes on."""

    id: str
    customer_id: str
    channel: str
    trigger: str
    ts: float  # when it was queued
    decision: QueuedDecision

    def row(self) -> list[Any]:
        return [self.id, self.customer_id, self.channel, self.trigger, self.ts, self.decision.row()]

    @classmethod
    def of(cls, row: list[Any] | tuple[Any, ...]) -> Message:
        """From `row()`, in the WAL and snapshots (older shards stored the wire dict)."""
        mid, customer_id, channel, trigger, ts, decision = row
        return cls(mid, customer_id, channel, trigger, float(ts), QueuedDecision.of_row(decision))

    def to_wire(self, open_token: str | None = None) -> dict[str, Any]:
        decision = self.decision.to_wire()
        return {
            "id": self.id,
            "open_token": open_token,
            "idempotency_key": self.id,
            "customer_id": self.customer_id,
            "channel": self.channel,
            "trigger": self.trigger,
            "queued_at": self.ts,
            "actions": decision["actions"],
            "decision": decision,
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

    def lease(
        self,
        channel: str,
        n: int,
        now: float,
        lease_s: float,
        allow: Callable[[Message], bool] | None = None,
    ) -> list[Message]:
        """Up to `n` of the channel's oldest messages not leased now (and `allow`ed);
        leased for `lease_s` from `now`."""
        out: list[Message] = []
        for mid, m in self.by_channel.get(channel, {}).items():
            if len(out) >= n:
                break
            if self.leases.get(mid, -1.0) > now or (allow is not None and not allow(m)):
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
