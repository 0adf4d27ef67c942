"""The decision itself: eligible -> score -> arbitrate -> explain, for one request.

Each step is its own function in its own module (`eligibility`, here `score`,
`arbitration`, `explanation`); `decide` runs them in order and times them when asked
(the benchmark's per-stage figures). The value types live in `decision.py` and are
re-exported here, as are `rank` and the outbound channel choice.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from decisioning.policy.arbitration import ChannelChoice, arbitrate, choose_channel, rank
from decisioning.policy.decision import (
    Decision,
    DecisionRequest,
    LoadedModel,
    ScoredAction,
    Stages,
    Trace,
)
from decisioning.policy.eligibility import Candidates, eligible
from decisioning.policy.explanation import explain

__all__ = [
    "ChannelChoice",
    "Decision",
    "DecisionRequest",
    "LoadedModel",
    "ScoredAction",
    "Scores",
    "Stages",
    "Trace",
    "choose_channel",
    "decide",
    "rank",
    "score",
]


def decide(r: DecisionRequest) -> Decision:
    """Decide the best actions for one customer from their profile feature vector."""
    stages = r.stages
    t0 = time.perf_counter_ns() if stages is not None else 0
    c = eligible(r)
    t1 = time.perf_counter_ns() if stages is not None else 0
    s = score(r, c)
    t2 = time.perf_counter_ns() if stages is not None else 0
    a = arbitrate(r, c, s.propensity, s.versions)
    explanation = explain(r, c, a) if r.explain else None
    if stages is not None:
        stages.eligibility += t1 - t0
        stages.features += s.features_ns
        stages.scoring += s.scoring_ns
        stages.arbitration += time.perf_counter_ns() - t2
        stages.count += 1
    return Decision(
        decision_id=r.decision_id,
        customer_id=r.customer_id,
        ts=r.now,
        channel=r.channel,
        placement=r.placement,
        actions=a.chosen,
        candidates=c.live,
        eligible=len(c.actions),
        model_versions=sorted(set(s.used)),
        explanation=explanation,
        trace=_trace(c, s) if r.trace else None,
        probability=a.probability,
        explored=a.explored,
    )


@dataclass(slots=True)
class Scores:
    """Step 2's result: a propensity per eligible candidate (the default where no model
    scores it), the model versions used, and (traced) the matrices they scored."""

    propensity: np.ndarray
    versions: dict[str, str | None] = field(default_factory=dict)  # model name -> ref
    used: list[str] = field(default_factory=list)
    blocks: list[tuple[str, list[int], np.ndarray]] = field(default_factory=list)
    features_ns: int = 0
    scoring_ns: int = 0


def score(r: DecisionRequest, c: Candidates) -> Scores:
    """Step 2: each model served scores the candidates that name it, in one batch."""
    timed = r.stages is not None
    propensity = np.full(len(c.actions), r.settings.default_propensity, dtype=np.float64)
    out = Scores(propensity, {}, [], [])
    by_model: dict[str, list[int]] = {}
    for i, a in enumerate(c.actions):
        if a.model is not None and a.model in r.models:
            by_model.setdefault(a.model, []).append(i)
    for name, idx in by_model.items():
        m = r.models[name]
        f0 = time.perf_counter_ns() if timed else 0
        x = m.plan.matrix(
            r.profile, [c.actions[i] for i in idx], [c.values[i] for i in idx], r.channel, c.ctx
        )
        f1 = time.perf_counter_ns() if timed else 0
        out.propensity[idx] = m.scorer.predict(x)
        if timed:
            out.features_ns += f1 - f0
            out.scoring_ns += time.perf_counter_ns() - f1
        out.versions[name] = m.manifest.ref
        out.used.append(m.manifest.ref)
        if r.trace:
            out.blocks.append((m.manifest.ref, idx, x))
    return out


def _trace(c: Candidates, s: Scores) -> Trace:
    """Every eligible candidate as it was scored, for the decision log."""
    levers = np.array([a.lever for a in c.actions], dtype=np.float64)
    # ((p × v) × w) × lever, in rank()'s order: the same float64 bits as the answer's
    priority = s.propensity * np.array(c.values) * np.array(c.weights) * levers
    return Trace(
        action_ids=[a.id for a in c.actions],
        models=[a.model for a in c.actions],
        propensity=s.propensity,
        priority=priority,
        blocks=s.blocks,
    )
