"""What a decision is made from and what it gives: the request, the models it scores
with, the scored actions, the decision and its trace (plain values, no behaviour)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from decisioning.config import DecisioningSpec
from decisioning.policy.catalog import Catalog
from decisioning.policy.contacts import Limits
from decisioning.policy.exploration import Explorer
from decisioning.policy.features import FeaturePlan
from decisioning.policy.scoring import ModelManifest, Scorer

__all__ = ["DecisionRequest", "Decision", "LoadedModel", "ScoredAction", "Stages", "Trace"]


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A verified model ready to score: manifest, scorer and its feature plan."""

    manifest: ModelManifest
    scorer: Scorer
    plan: FeaturePlan
    scorer_kind: str = "lightgbm"


@dataclass(frozen=True, slots=True)
class ScoredAction:
    """An eligible action as scored: priority = propensity × value × weight × lever."""

    action_id: str
    group: str
    channel: str
    propensity: float
    value: float
    weight: float
    lever: float
    priority: float
    model_version: str | None

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
class Decision:
    """What was decided for whom, when, and with which models."""

    decision_id: str
    customer_id: str
    ts: float
    channel: str
    placement: str | None
    actions: list[ScoredAction]
    candidates: int
    eligible: int
    model_versions: list[str]
    explanation: list[dict[str, Any]] | None = None
    trace: Trace | None = None
    # with exploration: P(first) per candidate above the threshold (absent: 0)
    probability: dict[str, float] | None = None
    explored: bool = False

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "decision_id": self.decision_id,
            "customer_id": self.customer_id,
            "ts": self.ts,
            "channel": self.channel,
            "placement": self.placement,
            "model_version": ",".join(self.model_versions) or None,
            "actions": [a.to_wire() for a in self.actions],
        }
        if self.explanation is not None:
            out["explanation"] = self.explanation
        return out


@dataclass(frozen=True, slots=True)
class Trace:
    """Every eligible candidate of one decision as it was scored, for the decision log.

    `blocks` holds, per model, the candidates' indexes and the very feature matrix the
    model scored (not a copy made later); candidates without a model have no features.
    """

    action_ids: list[str]
    models: list[str | None]
    propensity: np.ndarray  # float64, one per candidate
    priority: np.ndarray  # float64
    blocks: list[tuple[str, list[int], np.ndarray]]  # model ref, candidate indexes, x


@dataclass(slots=True)
class Stages:
    """Nanoseconds spent per stage, accumulated (for the benchmark)."""

    eligibility: int = 0
    features: int = 0
    scoring: int = 0
    arbitration: int = 0
    count: int = 0


class DecisionRequest(NamedTuple):
    """Everything one decision depends on: who, where, what is served, what limits it.
    Immutable; a NamedTuple rather than a frozen dataclass, whose 18 checked field
    assignments would cost the hot path about a microsecond per decision.

    `contact_cost` makes it an outbound decision on `channel`: the channel's outbound
    rule applies, and an action must beat doing nothing by the cost of the contact.
    `stages` accumulates the time of each step (the benchmark); `trace` keeps what was
    scored, for the decision log; `explorer` may pick another first action."""

    decision_id: str
    customer_id: str
    profile: np.ndarray
    channel: str
    placement: str | None
    context: Mapping[str, Any]
    limit: int
    catalog: Catalog
    models: Mapping[str, LoadedModel]
    settings: DecisioningSpec
    now: float
    explain: bool = False
    stages: Stages | None = None
    trace: bool = False
    explorer: Explorer | None = None
    limits: Limits | None = None
    contact_cost: float | None = None
    tables: Mapping[str, Any] | None = None
