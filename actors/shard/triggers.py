"""Triggers and the outbound queue of a shard: conditions checked as events arrive,
timers for `not_followed_by`, decisions made when a trigger fires, and the messages
queued for delivery (leased, acked or released by sinks and consumers)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from actors.messages import Decide, Decided, Leased
from actors.shard.journal import Journal
from actors.shard.profiles import Profiles
from actors.shard.served import Served
from decisioning.config import Config
from decisioning.delivery.links import OpenLink, seal_link
from decisioning.delivery.outbox import Message, Outbox, QueuedDecision, Timers
from decisioning.errors import NextbestError
from decisioning.journal.records import Acked, Queued, TimerCleared, TimerSet
from decisioning.policy.catalog import Trigger
from decisioning.policy.rules import Env
from decisioning.profile import Event

__all__ = ["DecideFn", "Triggers"]

log = logging.getLogger("nextbest.shard")
DecideFn = Callable[[Decide], Decided]  # the shard's decision for a request


class Triggers:
    """Trigger timers and the outbox; `decide` makes a trigger's decision (every policy
    applies, and it is recorded like any other)."""

    def __init__(
        self,
        shard_id: int,
        config: Config,
        link_key: bytes | None,
        served: Served,
        profiles: Profiles,
        journal: Journal,
        decide: DecideFn,
        clock: Callable[[], float],
    ) -> None:
        self.shard_id = shard_id
        self.delivery = config.delivery
        self.served = served
        self.profiles = profiles
        self.journal = journal
        self.decide = decide
        self.clock = clock
        self.timers = Timers()  # trigger timers (not_followed_by)
        self.outbox = Outbox(config.delivery.max_backlog)  # what triggers chose, undelivered
        self.link_key = link_key  # seals open links, if any
        # whether this shard serves a customer now (a slot moving away: its timers wait,
        # its messages are not handed out; actors/shard/slots.py sets it)
        self.serves: Callable[[str], bool] = lambda customer_id: True

    def fires_on(self, events: list[Event]) -> bool:
        """Whether any of these events fires a trigger at once (not a timed one)."""
        on = self.served.catalog.triggers_on
        return any(not t.timed for e in events for t in on.get(e.type, ()))

    def conditions(self, e: Event, crossing_only: bool = False) -> dict[str, bool]:
        """Whether each trigger on `e`'s type has its condition true now (before `e` is
        applied, for crossing triggers; after, for the rest)."""
        out: dict[str, bool] = {}
        env = None
        for t in self.served.catalog.triggers_on.get(e.type, ()):
            if crossing_only and not t.crossing:
                continue
            if t.when is None:
                out[t.id] = True
                continue
            if env is None:
                env = self._env(e)
            out[t.id] = t.when.holds(env)
        return out

    def _env(self, e: Event) -> Env:
        served = self.served
        vector = self.profiles.store.features(e.customer_id, self.clock())

        def score(name: str, v: np.ndarray = vector) -> float | None:
            return served.customer_score(name, v)

        event = {**e.properties, "type": e.type}
        return Env(vector.tolist(), {}, event=event, tables=served.tables, scorer=score)

    def on_event(self, e: Event, before: dict[str, bool]) -> None:
        """After `e` is applied: cancel the timers it follows up, arm or fire the
        triggers it matches."""
        cid, catalog = e.customer_id, self.served.catalog
        for t in catalog.cancels.get(e.type, ()):
            armed = self.timers.get(cid, t.id)
            if armed is not None and e.ts >= armed[1]:  # follows the event that armed it
                self.timers.clear(cid, t.id)
                self.journal.log(TimerCleared(cid, t.id))
        matched = catalog.triggers_on.get(e.type)
        if not matched:
            return
        holds = self.conditions(e)
        for t in matched:
            if not holds.get(t.id):
                continue
            if t.crossing and before.get(t.id, True):
                continue  # it was already true: no crossing
            if t.timed:
                assert t.within is not None
                due = e.ts + t.within
                self.timers.set(cid, t.id, due, e.ts)
                self.journal.log(TimerSet(cid, t.id, due, e.ts))
            else:
                self._fire(t, cid)

    def _fire(self, t: Trigger, customer_id: str) -> None:
        """Decide for the trigger's channel (every policy applies; doing nothing may win)
        and queue what was chosen."""
        request = Decide(customer_id, t.channel, t.placement, {"trigger": t.id})
        counters = self.profiles.counters
        try:
            d, variant, choice = self.decide(request)
        except NextbestError as err:  # e.g. a catalog without the channel's actions
            counters["trigger_errors"] += 1
            log.error("shard %d: trigger %s failed for a customer: %s", self.shard_id, t.id, err)
            return
        counters["triggers_fired"] += 1
        if d.actions:
            queued = QueuedDecision.of(d, variant, choice)
            m = Message(d.decision_id, customer_id, d.channel, t.id, self.clock(), queued)
            self.journal.log(Queued(m))
            self.outbox.add(m)
            counters["messages_queued"] += 1

    def tick(self, limit: int = 1000) -> dict[str, Any]:
        """Fire the timers that are due (at most `limit`); while the outbound queue is
        full they wait."""
        now = self.clock()
        fired = 0
        due = [] if self.outbox.full else self.timers.take_due(now, limit)
        held = [d for d in due if not self.serves(d[0])]
        if held:  # moving to another shard: it fires them there (they move with the slot)
            self.timers.put_back(held)
            due = [d for d in due if self.serves(d[0])]
        for i, (cid, trigger, _, _) in enumerate(due):
            if self.outbox.full:
                self.timers.put_back(due[i:])
                break
            self.timers.clear(cid, trigger)
            self.journal.log(TimerCleared(cid, trigger))
            t = self.served.catalog.trigger_by_id.get(trigger)
            if t is None or not t.timed:
                continue  # the trigger left the catalog since it was armed
            self._fire(t, cid)
            fired += 1
        return {"fired": fired, "pending": len(self.timers), "next_due": self.timers.next_due()}

    # -- the outbound queue --------------------------------------------------------------

    def lease(self, channel: str, n: int, lease_s: float | None = None) -> list[Leased]:
        """Hand out up to `n` undelivered messages of `channel` (at least once: each
        comes back after `lease_s` unless acked), each with the token that opens it."""
        d = self.delivery
        lease = d.lease_s if lease_s is None else lease_s
        now = self.clock()
        key = self.link_key
        out = []
        for m in self.outbox.lease(channel, n, now, lease, lambda m: self.serves(m.customer_id)):
            token = None
            if key is not None:  # the message decides its content again when opened
                placement = m.decision.placement
                link = OpenLink(m.customer_id, m.channel, placement, m.id, now + d.link_ttl)
                token = seal_link(key, link)
            out.append(Leased(m, token))
        return out

    def ack(self, ids: Iterable[str]) -> int:
        """Delivered: these messages leave the queue (unknown or already acked: ignored)."""
        done = self.outbox.ack(ids)
        if done:
            self.journal.log(Acked(tuple(done)))
            self.profiles.counters["messages_acked"] += len(done)
        return len(done)

    def status(self) -> dict[str, Any]:
        now = self.clock()
        due = self.timers.next_due()
        return {
            **self.outbox.stats(now),
            "timers": len(self.timers),
            "next_due_s": None if due is None else round(max(due - now, 0.0), 3),
        }

    def forget(self, customer_id: str) -> None:
        """Erasure: the customer's timers and undelivered messages go."""
        self.timers.drop_customer(customer_id)
        self.outbox.drop_customer(customer_id)  # not delivered after the erasure

    def redo_timer(self, r: TimerSet | TimerCleared) -> None:
        if isinstance(r, TimerSet):
            self.timers.set(r.customer_id, r.trigger, r.due, r.armed)
        else:
            self.timers.clear(r.customer_id, r.trigger)
