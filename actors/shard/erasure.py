"""Erasure on a shard: a customer's profile, tracked decisions, contact history, timers
and undelivered messages go at once; a tombstone in the WAL makes it survive a crash,
and a snapshot follows at once, after which the WAL segments, snapshots and decision log
rows that held the customer are deleted too. (Its identity records: `identity.py`.)"""

from __future__ import annotations

from actors.messages import Erased
from actors.shard.allowance import Allowance
from actors.shard.decisions import DecisionHistory
from actors.shard.durability import Durability
from actors.shard.journal import Journal
from actors.shard.profiles import Profiles
from actors.shard.triggers import Triggers
from decisioning.journal.records import MergedRowDropped, ProfileErased
from decisioning.stores.decision_log import DecisionLog

__all__ = ["Erasure"]


class Erasure:
    """Forgets customers: erased ones whole, merged-away ones' rows."""

    def __init__(
        self,
        profiles: Profiles,
        decisions: DecisionHistory,
        allowance: Allowance,
        triggers: Triggers,
        durability: Durability,
        journal: Journal,
        logs: DecisionLog | None,
    ) -> None:
        self.profiles = profiles
        self.decisions = decisions
        self.allowance = allowance
        self.triggers = triggers
        self.durability = durability
        self.journal = journal
        self.logs = logs

    def erase_profile(self, customer_id: str) -> Erased:
        """Forget a customer here (the caller made sure it is not merged away)."""
        known, decisions = self.forget_profile(customer_id)
        erased = known or decisions > 0
        if erased:
            self.profiles.counters["erasures"] += 1
        # the tombstone makes the erasure survive a crash; for a customer unknown here it
        # is needed only when the decision logs may still hold them (it goes with the
        # snapshot that follows). Its links and merges go with forget_identity, which the
        # ingress calls on every shard next.
        if self.journal.wal is not None and (erased or self.logs is not None):
            self.journal.log(ProfileErased(customer_id))
            self.durability.erase_soon()
        self.erase_logs(customer_id)  # logs may hold a customer the profile store lost
        return Erased(customer_id, erased, decisions)

    def forget_profile(self, customer_id: str) -> tuple[bool, int]:
        """Whether the customer had a profile here, and how many decisions went."""
        known = self.profiles.store.erase(customer_id)
        gone = self.decisions.forget(customer_id)
        self.allowance.contacts.forget(customer_id)
        self.triggers.forget(customer_id)
        return known, gone

    def erase_logs(self, customer_id: str) -> None:
        """Out of the log buffers now; out of the log files before the next snapshot lets
        the WAL tombstone go (without a WAL: now, in this call)."""
        if self.logs is None:
            return
        self.logs.erase(customer_id)
        if self.durability.log_dir is None:
            self.logs.rewrite_without({customer_id})
        else:
            self.durability.erase_soon(customer_id)

    def drop_row(self, customer_id: str) -> bool:
        """A customer merged away: its row, contacts, timers and recent list go; its
        decisions stay tracked, for late outcomes. Whether it had a row here."""
        known = self.profiles.store.erase(customer_id)
        self.allowance.contacts.forget(customer_id)
        self.triggers.timers.drop_customer(customer_id)
        self.decisions.recent.pop(customer_id, None)
        return known

    def redo_erased(self, r: ProfileErased) -> None:
        self.forget_profile(r.customer_id)
        self.erase_logs(r.customer_id)

    def redo_dropped(self, r: MergedRowDropped) -> None:
        self.drop_row(r.customer_id)
