"""What contact policies and budgets still allow a shard's customers: the contact history
the policies count, the budgets and this shard's allotments of them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from decisioning.config import Config
from decisioning.policy.budgets import Allotments, budgets_of, day_of
from decisioning.policy.contacts import ContactLog, Limits, Policies
from decisioning.policy.decide import ScoredAction
from decisioning.profile import Event

__all__ = ["Allowance"]

USED_UP = "budget: this shard's share of today's budget is used up"


class Allowance:
    """Contact policies over the contact history, and budgets over the allotments the
    actor refills in the background (a decision never waits for a refill)."""

    def __init__(self, config: Config) -> None:
        self.policies = Policies(config)  # contact policies
        self.budgets = budgets_of(config)  # action -> per day, across every shard
        self.allotments = Allotments()  # this shard's share of them (refilled by the actor)
        self.contacts = ContactLog()  # what they count (kept only while some policy exists)

    def reload(self, config: Config) -> None:
        """A new catalog: its policies and budgets (the history and allotments stay)."""
        self.policies = Policies(config)
        self.budgets = budgets_of(config)

    def limits(self, customer_id: str, now: float, channel: str) -> Limits | None:
        """What the contact policies and this shard's budget allotments allow now."""
        limits = None
        if self.policies.active:
            history = self.contacts.of(customer_id, now, self.policies.horizon)
            limits = self.policies.limits(history, now, channel)
        if self.budgets:
            day = day_of(now)
            used_up = {a: USED_UP for a in self.budgets if not self.allotments.available(a, day)}
            if used_up:
                limits = replace(limits or Limits(), exhausted=used_up)
        return limits

    def spend(self, actions: Iterable[ScoredAction], now: float) -> None:
        """A decision chose these: each budgeted one takes one of today's allotment
        (available: the decision checked it)."""
        if self.budgets:
            day = day_of(now)
            for a in actions:
                if a.action_id in self.budgets:
                    self.allotments.take(a.action_id, day)

    def shown(self, customer_id: str, ts: float, channel: str, actions: tuple[str, ...]) -> None:
        if self.policies.active:
            self.contacts.shown(customer_id, ts, channel, actions)

    def count_outcomes(self, events: Iterable[Event]) -> None:
        """Outcomes into the contact history (when a contact policy exists)."""
        if not self.policies.active:
            return
        for e in events:
            if e.type.startswith("outcome."):
                action = e.properties.get("action_id")
                if isinstance(action, str):
                    kind = e.type.removeprefix("outcome.")
                    self.contacts.outcome(e.customer_id, e.ts, action, kind)
