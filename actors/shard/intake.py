"""How events reach a shard's profiles: all checked before any is applied, retried ones
dropped, logged, applied, with the triggers they cross, arm or fire; acked events are
never lost or doubled."""

from __future__ import annotations

from collections.abc import Mapping

from actors.shard.allowance import Allowance
from actors.shard.journal import Journal
from actors.shard.profiles import Profiles
from actors.shard.served import Served
from actors.shard.triggers import Triggers
from decisioning.errors import Backlogged, Moved
from decisioning.journal.records import EventsApplied
from decisioning.profile import Event

__all__ = ["Intake"]


class Intake:
    """Applies batches of events (and replays them)."""

    def __init__(
        self,
        profiles: Profiles,
        served: Served,
        triggers: Triggers,
        allowance: Allowance,
        forwards: Mapping[str, str],
        journal: Journal,
    ) -> None:
        self.profiles = profiles
        self.served = served
        self.triggers = triggers
        self.allowance = allowance
        self.forwards = forwards
        self.journal = journal

    def apply(self, events: list[Event], now: float | None) -> list[Event]:
        """Check all, drop duplicates, log, apply; returns the events applied. A batch
        naming a customer merged away is refused whole (Moved names every one, so the
        caller resends it once); one that would fire a trigger while the outbound queue
        is full waits (Backlogged)."""
        self.profiles.check(events, now)
        fw = self.forwards
        moved = {e.customer_id: fw[e.customer_id] for e in events if e.customer_id in fw}
        if moved:
            first = next(iter(moved))
            raise Moved(first, moved[first], moved)
        fresh = self.profiles.fresh(events)
        if not fresh:
            return fresh
        triggered = bool(self.served.catalog.triggers)
        outbox = self.triggers.outbox
        if triggered and outbox.full and self.triggers.fires_on(fresh):
            raise Backlogged(
                f"the outbound queue is full ({len(outbox)} messages undelivered): "
                "events that fire triggers wait until the sinks catch up"
            )
        self.journal.log(EventsApplied(fresh))
        store = self.profiles.store
        for e in fresh:
            if not triggered:
                store.apply(e)
                continue
            crossing = self.triggers.conditions(e, crossing_only=True)
            store.apply(e)
            self.triggers.on_event(e, crossing)
        self.profiles.remember(fresh)
        return fresh

    def redo(self, r: EventsApplied) -> None:
        """Replay: the events again, their idempotency keys, their outcomes as contacts
        (triggers do not fire again: what they did is in the log too)."""
        store = self.profiles.store
        for e in r.events:
            store.apply(e)
        self.profiles.remember(r.events)
        self.allowance.count_outcomes(r.events)
