"""Outcomes of a shard's decisions (impression, click, accept, reject, convert): checked
against the decision they name, then applied as events of its customer (once: a retried
outcome is the same event), counted per model version, and logged for training."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from actors.messages import Outcome, Recorded
from actors.shard.allowance import Allowance
from actors.shard.decisions import DecisionHistory
from actors.shard.identity import Identity
from actors.shard.intake import Intake
from actors.shard.profiles import Profiles
from decisioning.errors import InvalidInput, NotFound
from decisioning.profile import Event
from decisioning.stores.decision_log import DecisionLog

__all__ = ["OUTCOMES", "Outcomes"]

OUTCOMES = ("impression", "click", "accept", "reject", "convert")


class Outcomes:
    """Records outcomes; those of a customer merged away since go to its survivor."""

    def __init__(
        self,
        history: DecisionHistory,
        intake: Intake,
        identity: Identity,
        allowance: Allowance,
        profiles: Profiles,
        logs: DecisionLog | None,
        clock: Callable[[], float],
    ) -> None:
        self.history = history
        self.intake = intake
        self.identity = identity
        self.allowance = allowance
        self.profiles = profiles
        self.logs = logs
        self.clock = clock

    def record(self, outcomes: Sequence[Outcome]) -> Recorded:
        """All are checked before any is applied. Outcomes of a customer merged away
        since come back as events for the survivor (`forward`), which the caller
        applies there."""
        events = self.events(outcomes)
        forwards = self.identity.book.forwards
        moved = [e for e in events if e.customer_id in forwards]
        if moved:
            events = [e for e in events if e.customer_id not in forwards]
        fresh = self.intake.apply(events, None)
        self.profiles.counters["outcomes"] += len(fresh)
        self.allowance.count_outcomes(fresh)
        for e in fresh:
            self.history.outcome(e.properties["decision_id"], e.type.removeprefix("outcome."))
        if self.logs is not None:
            self.logs.outcomes(
                (
                    e.properties["decision_id"],
                    e.properties["action_id"],
                    e.customer_id,
                    e.type.removeprefix("outcome."),
                    e.ts,
                )
                for e in fresh
            )
        if moved:
            survivor = self.identity.survivor
            forward = tuple(replace(e, customer_id=survivor(e.customer_id)) for e in moved)
            return Recorded(len(events) + len(moved), forward)
        return Recorded(len(events))

    def events(self, outcomes: Sequence[Outcome]) -> list[Event]:
        """The outcomes as events of their decisions' customers (raises for the first
        that names an unknown decision, an action not in it, or an unknown outcome)."""
        ring, events = self.history.ring, []
        for i, o in enumerate(outcomes):
            tracked = ring.get(o.decision_id)
            if tracked is None:
                raise NotFound(
                    f"unknown decision {o.decision_id!r} (too old, or never made here)",
                    field=f"[{i}].decision_id",
                    code="unknown_decision",
                )
            if o.action_id not in tracked.actions:
                raise InvalidInput(
                    f"action {o.action_id!r} was not part of decision {o.decision_id!r}",
                    field=f"[{i}].action_id",
                    code="action_not_in_decision",
                )
            if o.outcome not in OUTCOMES:
                raise InvalidInput(
                    f"outcome must be one of {', '.join(OUTCOMES)}", field=f"[{i}].outcome"
                )
            events.append(
                Event(
                    customer_id=tracked.customer_id,
                    type=f"outcome.{o.outcome}",
                    ts=o.ts or self.clock(),
                    properties={"action_id": o.action_id, "decision_id": o.decision_id},
                    # a retried outcome is the same outcome: it counts once
                    event_id=f"outcome:{o.decision_id}:{o.action_id}:{o.outcome}",
                )
            )
        return events
