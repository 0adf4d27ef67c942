"""A customer shard: live profiles, catalog and models of its customers, as a plain class.

It is the only writer of its customers' state. Every method takes and returns plain
data (dicts, lists), so it is unit-tested without Ray and made remote in `remote.py`.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from decisioning.arbitration import Decision, LoadedModel, Stages, decide
from decisioning.catalog import Catalog
from decisioning.config import Config
from decisioning.errors import InvalidInput, ModelError, NotFound
from decisioning.features import FeaturePlan
from decisioning.model import LightGBMScorer, ModelBundle, ModelManifest, scorer_for
from decisioning.profile import Event, ProfileSchema, ProfileStore, event_from_wire
from decisioning.slots import slot_of

__all__ = ["OUTCOMES", "Shard", "decision_slot"]

OUTCOMES = ("impression", "click", "accept", "reject", "convert")
MAX_TRACKED_DECISIONS = 200_000


class _Record(NamedTuple):
    """What a shard remembers of a decision: enough for outcomes and the profile view."""

    customer_id: str
    actions: tuple[str, ...]
    ts: float
    channel: str
    placement: str | None
    model_version: str | None

    def to_wire(self, decision_id: str) -> dict[str, Any]:
        return {
            "decision_id": decision_id,
            "ts": self.ts,
            "channel": self.channel,
            "placement": self.placement,
            "actions": list(self.actions),
            "model_version": self.model_version,
        }


def decision_slot(decision_id: str) -> int:
    """The customer slot a decision id was made for ('d-<4 hex slot>-<random>')."""
    parts = decision_id.split("-")
    if len(parts) != 3 or parts[0] != "d" or len(parts[1]) != 4:
        raise NotFound(
            f"unknown decision {decision_id!r}", field="decision_id", code="unknown_decision"
        )
    try:
        return int(parts[1], 16)
    except ValueError:
        raise NotFound(
            f"unknown decision {decision_id!r}", field="decision_id", code="unknown_decision"
        ) from None


class Shard:
    """State and behaviour of one shard; one caller at a time (Ray actor semantics)."""

    def __init__(
        self,
        shard_id: int,
        config: Config,
        models: Iterable[ModelBundle] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.shard_id = shard_id
        self.config = config
        self.clock = clock
        self.schema = ProfileSchema(config)
        self.store = ProfileStore(self.schema)
        self.catalog = Catalog(config, self.schema)
        self.models: dict[str, LoadedModel] = {}
        self._staged: dict[str, LoadedModel] = {}
        # Decision history, bounded by MAX_TRACKED_DECISIONS whatever the number of
        # customers: the records live in one ring (oldest evicted first), and a customer's
        # recent list holds only ids of records still in it.
        self.decisions: OrderedDict[str, _Record] = OrderedDict()
        self.recent: dict[str, list[str]] = {}
        self.counters = {"events": 0, "decisions": 0, "outcomes": 0}
        self.stages: Stages | None = None
        for bundle in models:
            self.models[bundle.manifest.name] = self._load(bundle)

    # -- events --------------------------------------------------------------------------

    def apply_events(self, events: list[dict[str, Any]]) -> int:
        """Apply a batch of events: all are checked before any is applied."""
        batch = [event_from_wire(e) for e in events]
        n = self.store.apply_many(batch, self.clock())
        self.counters["events"] += n
        return n

    # -- decisions -----------------------------------------------------------------------

    def decide(self, request: dict[str, Any]) -> dict[str, Any]:
        """Decide for one customer; applies the request's triggering event first."""
        cfg = self.config.decisioning
        customer_id = request["customer_id"]
        channel = request["channel"]
        if channel not in self.catalog.by_channel:
            raise InvalidInput(
                f"unknown channel {channel!r}", field="channel", code="unknown_channel"
            )
        limit = request.get("limit") or cfg.default_limit
        if not 1 <= limit <= cfg.max_limit:
            raise InvalidInput(f"limit must be between 1 and {cfg.max_limit}", field="limit")
        dry_run = bool(request.get("dry_run"))
        if request.get("event") is not None:
            event = event_from_wire({**request["event"], "customer_id": customer_id})
            try:
                self.schema.check_event(event, self.clock())
            except InvalidInput as e:
                field = f"event.{e.field}" if e.field else "event"
                raise InvalidInput(e.message, field=field, code=e.code) from None
            if not dry_run:
                self.store.apply(event)
                self.counters["events"] += 1
        now = self.clock()
        decision_id = f"d-{slot_of(customer_id):04x}-{os.urandom(8).hex()}"
        decision = decide(
            decision_id=decision_id,
            customer_id=customer_id,
            profile=self.store.features(customer_id, now),
            channel=channel,
            placement=request.get("placement"),
            context=request.get("context") or {},
            limit=limit,
            catalog=self.catalog,
            models=self.models,
            settings=cfg,
            now=now,
            explain=bool(request.get("explain")),
            stages=self.stages,
        )
        if not dry_run:
            self._record(decision)
        self.counters["decisions"] += 1
        return decision.to_wire()

    def _record(self, d: Decision) -> None:
        self.decisions[d.decision_id] = _Record(
            d.customer_id,
            tuple(a.action_id for a in d.actions),
            d.ts,
            d.channel,
            d.placement,
            ",".join(d.model_versions) or None,
        )
        keep = self.config.decisioning.recent_decisions
        if keep:
            self.store.row(d.customer_id)
            recent = self.recent.setdefault(d.customer_id, [])
            recent.append(d.decision_id)
            if len(recent) > keep:
                del recent[0]
        if len(self.decisions) > MAX_TRACKED_DECISIONS:
            old_id, old = self.decisions.popitem(last=False)
            ids = self.recent.get(old.customer_id)
            if ids is not None and old_id in ids:
                ids.remove(old_id)
                if not ids:
                    del self.recent[old.customer_id]

    # -- outcomes ------------------------------------------------------------------------

    def check_outcomes(self, outcomes: list[dict[str, Any]]) -> int:
        """Check outcomes without recording them (first phase of a cross-shard batch)."""
        return len(self._outcome_events(outcomes))

    def record_outcomes(self, outcomes: list[dict[str, Any]]) -> int:
        """Record outcomes of earlier decisions; all are checked before any is applied."""
        n = self.store.apply_many(self._outcome_events(outcomes))
        self.counters["outcomes"] += n
        return n

    def _outcome_events(self, outcomes: list[dict[str, Any]]) -> list[Event]:
        events = []
        for i, o in enumerate(outcomes):
            tracked = self.decisions.get(o["decision_id"])
            if tracked is None:
                raise NotFound(
                    f"unknown decision {o['decision_id']!r} (too old, or never made here)",
                    field=f"[{i}].decision_id",
                    code="unknown_decision",
                )
            customer_id, actions = tracked.customer_id, tracked.actions
            if o["action_id"] not in actions:
                raise InvalidInput(
                    f"action {o['action_id']!r} was not part of decision {o['decision_id']!r}",
                    field=f"[{i}].action_id",
                    code="action_not_in_decision",
                )
            if o["outcome"] not in OUTCOMES:
                raise InvalidInput(
                    f"outcome must be one of {', '.join(OUTCOMES)}", field=f"[{i}].outcome"
                )
            events.append(
                Event(
                    customer_id=customer_id,
                    type=f"outcome.{o['outcome']}",
                    ts=o.get("ts") or self.clock(),
                    properties={"action_id": o["action_id"], "decision_id": o["decision_id"]},
                )
            )
        return events

    # -- profiles ------------------------------------------------------------------------

    def get_profile(self, customer_id: str) -> dict[str, Any]:
        view = self.store.profile_view(customer_id, self.clock())
        view["recent_decisions"] = [
            self.decisions[i].to_wire(i) for i in self.recent.get(customer_id, ())
        ]
        view["shard"] = self.shard_id
        return view

    # -- models --------------------------------------------------------------------------

    def _load(self, bundle: ModelBundle) -> LoadedModel:
        m = bundle.manifest
        ModelBundle.verified(m, bundle.model_text)
        plan = FeaturePlan.build(
            m.ref, m.features, m.categories, self.config, self.schema, self.catalog
        )
        reference = LightGBMScorer(bundle.model_text)
        if reference.feature_names != list(m.features):
            raise ModelError(
                f"{m.ref}: the model file's features do not match the manifest's "
                f"(file: {reference.feature_names[:5]}…, manifest: {list(m.features)[:5]}…)"
            )
        sizes = {c: len(m.categories.get(m.features[c], ())) for c in plan.categorical}
        use_native = self.config.server.scorer == "native"
        scorer, kind = scorer_for(bundle, reference, sizes, use_native)
        return LoadedModel(m, scorer, plan, kind)

    def stage_model(
        self, manifest: dict[str, Any], model_text: str, native: bytes | None = None
    ) -> str:
        """Load and check a model without serving it; raises ModelError if refused."""
        bundle = ModelBundle.verified(ModelManifest.from_dict(manifest), model_text, native)
        loaded = self._load(bundle)
        self._staged[loaded.manifest.name] = loaded
        return loaded.manifest.ref

    def commit_model(self, name: str) -> str:
        """Serve the staged model `name` from the next decision on."""
        loaded = self._staged.pop(name)
        self.models[name] = loaded
        return loaded.manifest.ref

    def abort_model(self, name: str) -> None:
        self._staged.pop(name, None)

    def model_versions(self) -> dict[str, str]:
        return {name: m.manifest.ref for name, m in self.models.items()}

    def scorers(self) -> dict[str, str]:
        """How each served model is scored: "native" or "lightgbm"."""
        return {name: m.scorer_kind for name, m in self.models.items()}

    # -- status --------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            "shard": self.shard_id,
            "customers": len(self.store),
            "models": self.model_versions(),
            "scorers": self.scorers(),
            "catalog_version": self.catalog.version,
            "state_bytes": self.store.nbytes(),
            **self.counters,
        }
