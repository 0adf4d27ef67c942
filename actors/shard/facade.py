"""`Shard`: the facade over a shard's parts, and the only class callers see.

A request method (actors/calls.py: `REQUEST_METHODS`) takes one typed message and
answers with a typed result (both in `actors/messages.py`; the wire bodies are built
from them at the edge, never here), so it is unit-tested without Ray and made remote in
`actors/remote.py`. Each method hands its work to the part that owns the concern:

- `profiles.py`   profile store, idempotency keys, counters
- `intake.py`     events in: checked, deduplicated, logged, applied, triggers run
- `decider.py`    /v1/decide: the request, its variant, the decision, its record
- `decisions.py`  decision history (ring, recent lists, variant stats)
- `answers.py`    answers given under a request id, for retried decides
- `outcomes.py`   outcomes of decisions
- `allowance.py`  contact policies and budgets
- `triggers.py`   trigger timers and the outbound queue
- `identity.py`   links, forward pointers, merge steps
- `erasure.py`    erasure of a customer
- `slots.py`      which slots it serves (`Ownership`), and moving a range of slots to
                  another shard (`SlotMoves`)
- `served.py`     catalog, models, context tables (staged two-phase: `staged.py`)
- `journal.py`    the WAL's named records (decisioning/journal/records.py), replayed
                  through a dispatch table (`_replay_table` below)
- `durability.py` recovery, flush, snapshots; `state.py` what a snapshot holds
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from operator import attrgetter
from typing import Any

import pyarrow as pa

from actors import messages as m
from actors.shard import state
from actors.shard.allowance import Allowance
from actors.shard.answers import Answers
from actors.shard.decider import Decider
from actors.shard.decisions import DecisionHistory
from actors.shard.durability import Durability
from actors.shard.erasure import Erasure
from actors.shard.identity import Identity
from actors.shard.intake import Intake
from actors.shard.journal import Handler, Journal
from actors.shard.outcomes import Outcomes
from actors.shard.profiles import Profiles
from actors.shard.served import Served
from actors.shard.slots import Ownership, SlotMoves
from actors.shard.triggers import Triggers
from decisioning.config import Config, Secrets
from decisioning.errors import NextbestError
from decisioning.journal import records as rec
from decisioning.policy.decide import Stages
from decisioning.policy.scoring import ModelBundle
from decisioning.profile.identity import Book
from decisioning.profile.slots import SlotMap
from decisioning.stores.decision_log import DecisionLog

__all__ = ["Shard"]


def _view(path: str) -> Any:
    """A read-only view of a part's state, for the actor, ops and tests."""
    return property(attrgetter(path))


class Shard:
    """State and behaviour of one shard; one caller at a time (Ray actor semantics)."""

    # views of the parts' state
    config = _view("served.config")
    catalog = _view("served.catalog")
    models = _view("served.models")
    challengers = _view("served.challengers")
    tables = _view("served.tables")
    schema = _view("profiles.schema")
    store = _view("profiles.store")
    seen = _view("profiles.seen")
    counters = _view("profiles.counters")
    decisions = _view("history.ring")
    answers = _view("history.answers.held")
    recent = _view("history.recent")
    variant_stats = _view("history.variant_stats")
    policies = _view("allowance.policies")
    contacts = _view("allowance.contacts")
    budgets = _view("allowance.budgets")
    allotments = _view("allowance.allotments")
    timers = _view("triggers.timers")
    outbox = _view("triggers.outbox")
    aliases = _view("book.aliases")
    forwards = _view("book.forwards")
    wal = _view("journal.wal")
    owner = _view("durability.owner")
    recovery = _view("durability.recovery")

    def __init__(
        self,
        shard_id: int,
        config: Config,
        models: Iterable[ModelBundle] = (),
        clock: Callable[[], float] = time.time,
        log_dir: str | None = None,
        logs: DecisionLog | None = None,
        challengers: Iterable[tuple[ModelBundle, float, bool]] = (),
        slot_map: SlotMap | None = None,
    ) -> None:
        self.shard_id = shard_id
        self.ownership = ownership = Ownership(shard_id, slot_map)  # None: every slot
        self.clock = clock
        self.logs = logs  # decision and outcome logs (Parquet), if any
        self.profiles = profiles = Profiles(config)
        secrets = Secrets.resolve(config, os.environ)  # this process's own, never shipped
        self.served = served = Served(
            shard_id, config, profiles.schema, secrets, models, challengers
        )
        self.journal = journal = Journal()
        self.allowance = allowance = Allowance(config)
        self.book = book = Book()  # (decisioning/profile/identity.py)
        self.durability = durability = Durability(
            shard_id,
            config,
            journal,
            lambda seq: state.capture(self, seq),
            lambda st: state.restore(self, st),
            log_dir,
            logs,
        )
        answers = Answers(config.server.idempotency_keys)  # (kept like event ids)
        self.history = DecisionHistory(
            served, profiles.store, book.forwards, allowance, journal, answers
        )
        self.triggers = Triggers(
            shard_id,
            config,
            secrets.link_key,
            served,
            profiles,
            journal,
            lambda r: self.decider.decide(r),
            clock,
        )
        self.triggers.serves = ownership.serves_customer
        self.intake = Intake(profiles, served, self.triggers, allowance, book.forwards, journal)
        self.erasure = Erasure(
            profiles, self.history, allowance, self.triggers, durability, journal, logs
        )
        self.identity = Identity(
            book, profiles, allowance, self.erasure, durability, journal, clock
        )
        self.outcomes = Outcomes(
            self.history, self.intake, self.identity, allowance, profiles, logs, clock
        )
        self.decider = Decider(
            served, profiles, allowance, self.history, self.intake, self.identity, logs, clock
        )
        self.slot_moves = SlotMoves(
            ownership, profiles, self.history, allowance, self.triggers, book, journal
        )
        journal.handle(self._replay_table())
        if log_dir is not None:
            durability.recover(profiles.schema.layout_key)

    def _replay_table(self) -> dict[type[Any], Handler]:
        """Which part redoes each record type at recovery."""
        outbox = self.triggers.outbox
        return {
            rec.EventsApplied: self.intake.redo,
            rec.DecisionMade: self.history.redo_record,
            rec.ProfileErased: self.erasure.redo_erased,
            rec.ErasedWithIdentity: self.identity.redo_erased,
            rec.IdentityForgotten: self.identity.redo_forgotten,
            rec.MergedRowDropped: self.erasure.redo_dropped,
            rec.TimerSet: self.triggers.redo_timer,
            rec.TimerCleared: self.triggers.redo_timer,
            rec.Queued: lambda r: outbox.add(r.message),
            rec.Acked: lambda r: outbox.ack(r.ids),
            rec.Folded: self.identity.fold,
            rec.SlotsAbsorbed: self.slot_moves.redo_absorbed,
            rec.SlotsDropped: self.slot_moves.redo_dropped,
            **dict.fromkeys(rec.IDENTITY, self.identity.redo),
        }

    @property
    def stages(self) -> Stages | None:
        """Time per decision step, added up while set (the benchmark sets it)."""
        return self.decider.stages

    @stages.setter
    def stages(self, stages: Stages | None) -> None:
        self.decider.stages = stages

    def state_digest(self) -> str:
        """sha256 of the shard's state (profiles, decisions, idempotency keys): equal
        digests mean a restore gave back exactly what was there."""
        return state.digest(self)

    # -- durability ----------------------------------------------------------------------

    def flush(self) -> None:
        """Make what this call applied durable before it is acked (see durability.py)."""
        self.durability.flush()

    def snapshot(self) -> dict[str, Any]:
        """Write a snapshot now and wait for it (graceful stop; tests)."""
        return self.durability.snapshot()

    def stop(self) -> dict[str, Any]:
        """Graceful stop: a last snapshot, the log closed, the directory marked clean."""
        return self.durability.stop()

    def close(self) -> None:
        self.durability.close()

    # -- events, decisions, outcomes -----------------------------------------------------

    def apply_events(self, r: m.ApplyEvents) -> int:
        """Apply a batch of events: all are checked before any is applied."""
        fresh = self.intake.apply(list(r.events), self.clock())
        self.profiles.counters["events"] += len(fresh)
        self.allowance.count_outcomes(fresh)  # (outcomes forwarded after a merge)
        return len(r.events)

    def decide(self, r: m.Decide) -> m.Decided:
        """Decide for one customer; applies the request's triggering event first (the
        decision's trace, for the decision log, does not cross: see messages.py)."""
        return self.decider.decide(r)

    def decide_many(self, r: m.DecideMany) -> list[m.Decided | NextbestError]:
        """Decide for each request in order, each exactly as `decide` would: one refused
        answers its error, as a refused call does (actors/calls.py), and the rest go on.
        The caller checked every request's slot first and commits the WAL once for all."""
        answers: list[m.Decided | NextbestError] = []
        for request in r.requests:
            try:
                answers.append(self.decide(request))
            except NextbestError as e:
                answers.append(e.with_traceback(None))  # (the error itself, as a call's)
        return answers

    def check_outcomes(self, r: m.CheckOutcomes) -> int:
        """Check outcomes without recording them (first phase of a cross-shard batch)."""
        return len(self.outcomes.events(r.outcomes))

    def record_outcomes(self, r: m.RecordOutcomes) -> m.Recorded:
        """Record outcomes of earlier decisions (see outcomes.py)."""
        return self.outcomes.record(r.outcomes)

    # -- profiles ------------------------------------------------------------------------

    def get_profile(self, r: m.GetProfile) -> m.Profile:
        customer_id = r.customer_id
        self.identity.here(customer_id)
        view = self.profiles.store.profile_view(customer_id, self.clock())
        return m.Profile(
            customer_id,
            view["known"],
            view["attributes"],
            view["aggregates"],
            view["consent"],
            self.history.of(customer_id),
            self.shard_id,
        )

    def erase_profile(self, r: m.EraseProfile) -> m.Erased:
        """Forget a customer (see erasure.py). A merged id answers Moved: its person is
        erased where it lives now."""
        self.identity.here(r.customer_id)
        return self.erasure.erase_profile(r.customer_id)

    # -- identity (the protocol: decisioning/profile/identity.py) ------------------------

    def resolve(self, r: m.Resolve) -> m.Resolved:
        """The customer an identifier is linked to (None: not linked), and whether the
        merge its first link owes is still to finish."""
        book = self.book
        return m.Resolved(book.aliases.get(r.alias), r.alias in book.owed)

    def link(self, r: m.Link) -> m.Linked:
        """Link an identifier to a customer (the newest link wins; the first owes a merge)."""
        return self.identity.link(r.alias, r.customer_id)

    def merged_into(self, r: m.MergedInto) -> str | None:
        """The id a customer was merged into (None: it is live)."""
        return self.book.forwards.get(r.customer_id)

    def pin(self, r: m.Pin) -> bool:
        """Merge step 1, on the survivor's shard: it cannot be merged away meanwhile."""
        return self.identity.pin(r.survivor, r.token, r.merged)

    def unpin(self, r: m.Unpin) -> bool:
        return self.identity.unpin(r.survivor, r.token)

    def freeze(self, r: m.Freeze) -> m.Frozen:
        """Merge step 2, on the merged customer's shard: it forwards to `survivor` from now
        on; returns its state to fold there and the merge id (a repeat returns the same)."""
        return self.identity.freeze(r.merged, r.survivor, r.token, r.reason)

    def absorb(self, r: m.Absorb) -> bool:
        """Merge step 3, on the survivor's shard: fold the frozen state in, once per merge."""
        return self.identity.absorb(r.survivor, r.merge_id, r.state, r.contacts)

    def drop_merged(self, r: m.DropMerged) -> bool:
        """Merge step 5, on the merged customer's shard: its row goes, the pointer stays."""
        return self.identity.drop_merged(r.merged, r.alias)

    def settle(self, r: m.Settle) -> bool:
        """Nothing is owed for a live customer whose merge would fold it into itself."""
        return self.identity.settle(r.merged)

    def cancel_merge(self, r: m.CancelMerge) -> m.Cancelled:
        """Call off a stale attempt, unless it froze already (then it is to be finished)."""
        return self.identity.cancel(r.merged, r.survivor, r.token)

    def compress(self, r: m.Compress) -> bool:
        """Point a merged customer straight at the end of its chain of merges."""
        return self.identity.compress(r.merged, r.expected, r.target)

    def unfinished_merges(self, r: m.UnfinishedMerges) -> list[m.Unfinished]:
        """Merges owed here and pins held longer than `stale_s` (for the sweep)."""
        return self.book.unfinished(self.clock(), r.stale_s)

    def identity_of(self, r: m.IdentityOf) -> m.IdentityInfo:
        """This shard's link, forward pointer and owed merge of an id (`aliases`: a scan)."""
        return self.identity.of(r.key, r.aliases)

    def forget_identity(self, r: m.ForgetIdentity) -> list[str]:
        """Erasure of the customer's identity records here; returns the ids merged into it
        (the caller forgets them as well: they are the same person)."""
        return self.identity.forget_identity(r.customer_id)

    # -- triggers and the outbound queue -------------------------------------------------

    def tick(self, limit: int = 1000) -> dict[str, Any]:
        """Fire the timers that are due (the actor's ticker thread calls it)."""
        return self.triggers.tick(limit)

    def lease_outbound(self, r: m.LeaseOutbound) -> list[m.Leased]:
        """Hand out up to `n` undelivered messages of `channel` (at least once: each
        comes back after `lease_s` unless acked)."""
        return self.triggers.lease(r.channel, r.n, r.lease_s)

    def ack_outbound(self, r: m.AckOutbound) -> int:
        """Delivered: these messages leave the queue (unknown or already acked: ignored)."""
        return self.triggers.ack(r.ids)

    def release_outbound(self, r: m.ReleaseOutbound) -> int:
        """Not delivered: hand these out again at the next lease."""
        self.triggers.outbox.release(r.ids)
        return len(r.ids)

    def outbound_status(self) -> dict[str, Any]:
        return self.triggers.status()

    # -- slots moving between shards (slots.py; the supervisor's side: actors/slots.py) --

    def freeze_slots(self, r: m.FreezeSlots) -> m.SlotState:
        """Stop serving slots [lo, hi) and answer everything keyed by them."""
        return self.slot_moves.freeze(r)

    def absorb_slots(self, r: m.AbsorbSlots) -> int:
        """Hold the state of a range moved here, durably; served once the map says so."""
        return self.slot_moves.absorb(r)

    def drop_slots(self, r: m.DropSlots) -> int:
        """Forget everything keyed by slots [lo, hi) (a tombstone in the WAL)."""
        return self.slot_moves.drop(r)

    def unfreeze_slots(self, r: m.UnfreezeSlots) -> int:
        """A move rolled back: serve the range again."""
        return self.slot_moves.unfreeze(r)

    def set_slot_map(self, r: m.SetSlotMap) -> int:
        """Adopt the supervisor's newer slot map; answers the epoch now held."""
        return self.ownership.set_map(r.map)

    # -- models, catalog, context tables (two-phase: staged.py) --------------------------

    def stage_model(
        self,
        manifest: dict[str, Any],
        model_text: str,
        native: bytes | None = None,
        role: str = "champion",
        share: float = 0.0,
        shadow: bool = False,
    ) -> str:
        """Load and check a model without serving it (`role` challenger: for `share` of
        customers, or in `shadow`); raises ModelError if refused."""
        return self.served.stage_model(manifest, model_text, native, role, share, shadow)

    def stage_no_challenger(self, name: str) -> None:
        """At the next commit of `name`, its challenger (if any) stops."""
        self.served.stage_no_challenger(name)

    def commit_model(self, name: str) -> str:
        """Serve what is staged for `name` (champion, challenger or both) from the next
        decision on: one call, so no decision sees half of it."""
        return self.served.commit_model(name)

    def abort_model(self, name: str) -> None:
        self.served.abort_model(name)

    def stage_catalog(self, catalog: dict[str, Any]) -> str:
        """Check and prepare a new catalog without serving it (ConfigError, ModelError)."""
        return self.served.stage_catalog(catalog)

    def commit_catalog(self) -> str:
        """Serve the staged catalog, its policies and budgets from the next decision on
        (one call: no decision sees half of it)."""
        if self.served.commit_catalog():
            self.allowance.reload(self.served.config)
        return self.served.catalog.version

    def abort_catalog(self) -> None:
        self.served.abort_catalog()

    def stage_context(self, name: str, version: str, table: pa.Table) -> str:
        """Index a new version of a context table without serving it (InvalidInput)."""
        return self.served.stage_context(name, version, table)

    def commit_context(self, name: str) -> str | None:
        """Serve the staged version from the next decision on (one assignment)."""
        return self.served.commit_context(name)

    def abort_context(self, name: str) -> None:
        self.served.abort_context(name)

    def context_status(self) -> dict[str, Any]:
        return self.served.context_status()

    def model_versions(self) -> dict[str, str]:
        return self.served.model_versions()

    def challenger_versions(self) -> dict[str, dict[str, Any]]:
        return self.served.challenger_versions()

    def scorers(self) -> dict[str, str]:
        """How each served model is scored: "native" or "lightgbm"."""
        return self.served.scorers()

    def flush_logs(self) -> dict[str, Any] | None:
        """Write the buffered decision and outcome logs now (before a training run); a
        failing disk does not hold the shard longer than 30 s (the status says what
        still waits, and why)."""
        if self.logs is None:
            return None
        self.logs.flush(timeout=30.0)
        return self.logs.status()

    # -- status --------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            "shard": self.shard_id,
            "customers": len(self.profiles.store),
            **self.ownership.status(),
            "models": self.model_versions(),
            "challengers": self.challenger_versions(),
            "variant_stats": self.history.variant_stats,
            "scorers": self.scorers(),
            "refused_models": self.served.refused,
            "catalog_version": self.served.catalog.version,
            "state_bytes": self.profiles.store.nbytes(),
            **self.durability.status(),
            "logs": self.logs.status() if self.logs is not None else None,
            "outbound": self.outbound_status(),
            "context_tables": self.context_status(),
            **self.profiles.counters,
        }
