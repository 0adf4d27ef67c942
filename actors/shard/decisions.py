"""The decisions a shard made lately: a bounded ring of what outcomes and the profile
view need, each customer's recent list, per model version the decisions it scored and
the outcomes of those decisions, and the answers given under a request id (answers.py)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import ItemsView, Iterator, Mapping, MutableMapping, ValuesView
from typing import TYPE_CHECKING, Any, NamedTuple

from actors.messages import RecentDecision
from actors.shard.allowance import Allowance
from actors.shard.journal import Journal
from actors.shard.served import Served
from decisioning.journal.records import DecisionMade
from decisioning.policy.decide import Decision
from decisioning.profile import ProfileStore

if TYPE_CHECKING:
    from actors.shard.answers import Answers

__all__ = ["MAX_TRACKED_DECISIONS", "DecisionHistory", "DecisionRing", "Tracked"]

MAX_TRACKED_DECISIONS = 200_000


class Tracked(NamedTuple):
    """What a shard remembers of a decision: enough for outcomes and the profile view."""

    customer_id: str
    actions: tuple[str, ...]
    ts: float
    channel: str
    placement: str | None
    model_version: str | None


class DecisionRing(MutableMapping[str, Tracked]):
    """Decision id -> `Tracked`, oldest first, each kept as a plain tuple.

    Why: the garbage collector stops tracking a plain tuple of strings and numbers at
    its first collection, never a NamedTuple. A ring of 200,000 `Tracked` records was
    200,000 more objects for every full collection to scan, and each decision added
    one more to the old generation, which brings full collections on sooner: pauses of
    hundreds of ms on the shard's one thread (see docs/benchmark.md, "GC pauses")."""

    __slots__ = ("_rows",)

    def __init__(self) -> None:
        self._rows: OrderedDict[str, tuple[Any, ...]] = OrderedDict()

    def __getitem__(self, decision_id: str) -> Tracked:
        return Tracked._make(self._rows[decision_id])

    def __setitem__(self, decision_id: str, record: Tracked) -> None:
        self._rows[decision_id] = tuple(record)

    def __delitem__(self, decision_id: str) -> None:
        del self._rows[decision_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, decision_id: object) -> bool:
        return decision_id in self._rows

    def items(self) -> ItemsView[str, Tracked]:
        return _Items(self)

    def values(self) -> ValuesView[Tracked]:
        return _Values(self)

    def pop_oldest(self) -> tuple[str, Tracked]:
        decision_id, row = self._rows.popitem(last=False)
        return decision_id, Tracked._make(row)

    def rows(self) -> list[tuple[str, tuple[Any, ...]]]:
        """(decision id, record as a plain tuple), oldest first: a snapshot's copy."""
        return list(self._rows.items())


class _Items(ItemsView[str, Tracked]):
    _mapping: DecisionRing

    def __iter__(self) -> Iterator[tuple[str, Tracked]]:
        make = Tracked._make
        return ((k, make(v)) for k, v in self._mapping._rows.items())


class _Values(ValuesView[Tracked]):
    _mapping: DecisionRing

    def __iter__(self) -> Iterator[Tracked]:
        return map(Tracked._make, self._mapping._rows.values())


class DecisionHistory:
    """Decision history, bounded by MAX_TRACKED_DECISIONS whatever the number of
    customers: the records live in one ring (oldest evicted first), and a customer's
    recent list holds only ids of records still in it."""

    def __init__(
        self,
        served: Served,
        store: ProfileStore,
        forwards: Mapping[str, str],
        allowance: Allowance,
        journal: Journal,
        answers: Answers,
    ) -> None:
        self.served = served
        self.store = store
        self.forwards = forwards  # merged customers: no recent list (they have no row)
        self.allowance = allowance
        self.journal = journal
        self.answers = answers  # answers given under a request id (their tracked decisions)
        self.ring = DecisionRing()
        self.recent: dict[str, list[str]] = {}
        self.variant_stats: dict[str, dict[str, int]] = {}

    def record(self, d: Decision, request: bytes | None = None, extra: Any = None) -> None:
        """A decision was made (not a dry run): logged, tracked, counted as a contact and
        against the model versions that scored it; made under a request id's key, its
        answer is remembered (`extra`: the rest of it, answers.extra_of)."""
        tracked = Tracked(
            d.customer_id,
            tuple(a.action_id for a in d.actions),
            d.ts,
            d.channel,
            d.placement,
            ",".join(d.model_versions) or None,
        )
        if self.journal.wal is not None:  # (no WAL: no record to build)
            self.journal.log(DecisionMade(d.decision_id, *tracked, request, extra))
        self.redo(d.decision_id, tracked, request, extra)
        for ref in d.model_versions:
            stats = self.variant_stats.setdefault(ref, {"decisions": 0})
            stats["decisions"] += 1

    def redo(
        self, decision_id: str, tracked: Tracked, request: bytes | None = None, extra: Any = None
    ) -> None:
        """Track a decision, count it as a contact and remember its answer under its
        request's key, if any (live, and in replay)."""
        self.track(decision_id, tracked)
        self.allowance.shown(tracked.customer_id, tracked.ts, tracked.channel, tracked.actions)
        if request is not None:
            self.answers.remember(request, decision_id, tracked, extra)

    def redo_record(self, r: DecisionMade) -> None:
        self.redo(
            r.decision_id,
            Tracked(r.customer_id, r.actions, r.ts, r.channel, r.placement, r.model_version),
            r.request,
            r.answer,
        )

    def track(self, decision_id: str, record: Tracked) -> None:
        self.ring[decision_id] = record
        keep = self.served.config.decisioning.recent_decisions
        if keep and record.customer_id not in self.forwards:  # (merged away: no row)
            self.store.row(record.customer_id)
            recent = self.recent.setdefault(record.customer_id, [])
            recent.append(decision_id)
            if len(recent) > keep:
                del recent[0]
        if len(self.ring) > MAX_TRACKED_DECISIONS:
            old_id, old = self.ring.pop_oldest()
            ids = self.recent.get(old.customer_id)
            if ids is not None and old_id in ids:
                ids.remove(old_id)
                if not ids:
                    del self.recent[old.customer_id]

    def outcome(self, decision_id: str, kind: str) -> None:
        """An outcome of a decision: counted for each model version that scored it."""
        version = self.ring[decision_id].model_version
        for ref in version.split(",") if version else ():
            stats = self.variant_stats.setdefault(ref, {"decisions": 0})
            stats[kind] = stats.get(kind, 0) + 1

    def forget(self, customer_id: str) -> int:
        """Erasure: the customer's decisions leave the ring, and their answers go; returns
        how many decisions went."""
        gone = [d for d, r in self.ring.items() if r.customer_id == customer_id]
        for d in gone:
            del self.ring[d]
        self.recent.pop(customer_id, None)
        self.answers.forget(customer_id)
        return len(gone)

    def of(self, customer_id: str) -> tuple[RecentDecision, ...]:
        """The customer's recent decisions, oldest first, as the profile view shows them."""
        out = []
        for i in self.recent.get(customer_id, ()):
            t = self.ring[i]
            out.append(RecentDecision(i, t.ts, t.channel, t.placement, t.actions, t.model_version))
        return tuple(out)
