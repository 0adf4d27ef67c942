"""Arbitration and the decision itself: candidates -> eligibility -> scoring -> top-k.

priority = propensity × value × context weight × lever. An action whose priority is not
above the do-nothing threshold is dropped; if none is left the decision is [] (do nothing).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from decisioning.config import DecisioningSpec
from decisioning.policy.catalog import Action, Catalog, context_of
from decisioning.policy.contacts import Limits
from decisioning.policy.exploration import Explorer
from decisioning.policy.features import FeaturePlan
from decisioning.policy.rules import Env, Rule
from decisioning.policy.scoring import ModelManifest, Scorer

__all__ = [
    "ChannelChoice",
    "Decision",
    "LoadedModel",
    "ScoredAction",
    "Trace",
    "choose_channel",
    "decide",
    "rank",
]


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A verified model ready to score: manifest, scorer and its feature plan."""

    manifest: ModelManifest
    scorer: Scorer
    plan: FeaturePlan
    scorer_kind: str = "lightgbm"


@dataclass(frozen=True, slots=True)
class ScoredAction:
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


def decide(
    *,
    decision_id: str,
    customer_id: str,
    profile: np.ndarray,
    channel: str,
    placement: str | None,
    context: Mapping[str, Any],
    limit: int,
    catalog: Catalog,
    models: Mapping[str, LoadedModel],
    settings: DecisioningSpec,
    now: float,
    explain: bool = False,
    stages: Stages | None = None,
    trace: bool = False,
    explorer: Explorer | None = None,
    limits: Limits | None = None,
    contact_cost: float | None = None,
    tables: Mapping[str, Any] | None = None,
) -> Decision:
    """Decide the best actions for one customer from their profile feature vector.

    `contact_cost` makes it an outbound decision on `channel`: the channel's outbound
    rule applies, and an action must beat doing nothing by the cost of the contact."""
    t0 = time.perf_counter_ns() if stages is not None else 0
    ctx = context_of(channel, placement, context)
    env = Env(profile.tolist(), ctx, tables=tables)
    for name, lookup in catalog.derived_context:  # e.g. a context table joined by key
        if ctx.get(name) is None:
            ctx[name] = lookup(env)
    live = catalog.live(channel, now)
    eligible: list[Action] = []
    values: list[float] = []
    weights: list[float] = []
    removed: list[dict[str, Any]] = []
    consented, recorded = catalog.consented(env.profile, channel)
    for a in live:
        if not consented and not (a.mandatory and settings.mandatory_ignores_consent):
            if explain:
                removed.append(
                    {
                        "action_id": a.id,
                        "eligible": False,
                        "rule": f"consent ({catalog.consent[channel][1]})",
                        "values": {f"consent.{channel}": recorded},
                    }
                )
            continue
        why = None
        if limits is not None:  # a budget holds for everyone; the contact limits not for
            why = limits.exhausted.get(a.id)  # mandatory actions
            if why is None and not a.mandatory:
                why = limits.why(a.id, a.group)
        if why is not None:  # a contact policy (mandatory actions pass, and are counted)
            if explain:
                removed.append(
                    {"action_id": a.id, "eligible": False, "stage": "contact policy", "rule": why}
                )
            continue
        env.action = a
        env.value = value = a.value(env)
        failed = _first_failing(a, env)
        if failed is None and contact_cost is not None and channel in catalog.outbound_rules:
            rule = catalog.outbound_rules[channel]
            if not rule.holds(env):
                failed = ("outbound channel rule", rule)
        if failed is not None:
            if explain:
                stage, rule = failed
                removed.append(
                    {
                        "action_id": a.id,
                        "eligible": False,
                        "stage": stage,
                        "rule": rule.source,
                        "values": rule.values(env),
                    }
                )
            continue
        eligible.append(a)
        values.append(value)
        weights.append(catalog.weight(env))
    t1 = time.perf_counter_ns() if stages is not None else 0

    propensity = np.full(len(eligible), settings.default_propensity, dtype=np.float64)
    versions: dict[str, str | None] = {}
    used: list[str] = []
    by_model: dict[str, list[int]] = {}
    for i, a in enumerate(eligible):
        if a.model is not None and a.model in models:
            by_model.setdefault(a.model, []).append(i)
    feat_ns = score_ns = 0
    blocks: list[tuple[str, list[int], np.ndarray]] = []
    for name, idx in by_model.items():
        m = models[name]
        f0 = time.perf_counter_ns() if stages is not None else 0
        x = m.plan.matrix(
            profile, [eligible[i] for i in idx], [values[i] for i in idx], channel, ctx
        )
        f1 = time.perf_counter_ns() if stages is not None else 0
        propensity[idx] = m.scorer.predict(x)
        if stages is not None:
            feat_ns += f1 - f0
            score_ns += time.perf_counter_ns() - f1
        versions[name] = m.manifest.ref
        used.append(m.manifest.ref)
        if trace:
            blocks.append((m.manifest.ref, idx, x))
    t2 = time.perf_counter_ns() if stages is not None else 0

    scored = rank(
        eligible,
        propensity,
        values,
        weights,
        channel,
        versions,
        None
        if explain or explorer is not None or settings.max_per_group or limits is not None
        else limit,
        threshold := max(settings.do_nothing_threshold, catalog.do_nothing(env))
        + (contact_cost or 0.0),
    )
    above = [s for s in scored if s.priority > threshold]
    left = limits.group_left if limits is not None else {}
    mandatory = frozenset(a.id for a in eligible if a.mandatory)
    chosen = _diverse(above, limit, settings.max_per_group, left, mandatory)
    probability: dict[str, float] | None = None
    explored = False
    if explorer is not None and above:
        pick = explorer.pick(
            [s.propensity for s in above], [s.value * s.weight * s.lever for s in above]
        )
        first = above[pick.index]
        rest = [s for s in above if s is not first]
        chosen = _diverse([first, *rest], limit, settings.max_per_group, left, mandatory)
        probability = {s.action_id: float(q) for s, q in zip(above, pick.probability, strict=True)}
        explored = pick.explored
    explanation = None
    if explain:

        def why_not(s: ScoredAction) -> str:
            return _why_not(s, chosen, threshold, settings, left)

        explanation = removed + [
            {
                "action_id": s.action_id,
                "eligible": True,
                "propensity": s.propensity,
                "value": s.value,
                "weight": s.weight,
                "lever": s.lever,
                "priority": s.priority,
                "chosen": s in chosen,
                **({} if s in chosen else {"why_not": why_not(s)}),
            }
            for s in scored
        ]
        explanation.append(
            {
                "action_id": None,
                "do_nothing": True,
                "eligible": True,  # doing nothing always competes
                "priority": threshold,
                "chosen": not chosen,
                **({} if contact_cost is None else {"contact_cost": contact_cost}),
            }
        )
    if stages is not None:
        stages.eligibility += t1 - t0
        stages.features += feat_ns
        stages.scoring += score_ns
        stages.arbitration += time.perf_counter_ns() - t2
        stages.count += 1
    traced = None
    if trace:
        levers = np.array([a.lever for a in eligible], dtype=np.float64)
        # ((p × v) × w) × lever, in rank()'s order: the same float64 bits as the answer's
        priority = propensity * np.array(values) * np.array(weights) * levers
        traced = Trace(
            action_ids=[a.id for a in eligible],
            models=[a.model for a in eligible],
            propensity=propensity,
            priority=priority,
            blocks=blocks,
        )
    return Decision(
        decision_id=decision_id,
        customer_id=customer_id,
        ts=now,
        channel=channel,
        placement=placement,
        actions=chosen,
        candidates=len(live),
        eligible=len(eligible),
        model_versions=sorted(set(used)),
        explanation=explanation,
        trace=traced,
        probability=probability,
        explored=explored,
    )


def _first_failing(a: Action, env: Env) -> tuple[str, Rule] | None:
    """The first of the action's rules (group ones first) that does not hold."""
    for stage, rule in a.rules:
        if not rule.holds(env):
            return stage, rule
    return None


def _why_not(
    s: ScoredAction,
    chosen: list[ScoredAction],
    threshold: float,
    settings: DecisioningSpec,
    left: Mapping[str, int],
) -> str:
    """Why an eligible candidate is not in the answer."""
    if s.priority <= threshold:
        return "priority not above doing nothing"
    if s.group in left and sum(c.group == s.group for c in chosen) >= left[s.group]:
        return f"group cap: only {left[s.group]} more of group {s.group} may go now"
    per_group = settings.max_per_group
    if per_group is not None and sum(c.group == s.group for c in chosen) >= per_group:
        return f"max_per_group: {per_group} of group {s.group} already chosen"
    return "limit: the answer is full"


def _diverse(
    ranked: list[ScoredAction],
    limit: int,
    per_group: int | None,
    left: Mapping[str, int] | None = None,
    mandatory: frozenset[str] = frozenset(),
) -> list[ScoredAction]:
    """The first `limit` of `ranked`, at most `per_group` of any one group and at most
    `left[group]` more of a group under a contact cap. Mandatory actions always go, and
    they count: one displaces the lowest-ranked other action of its capped group."""
    if per_group is None and not left:
        return ranked[:limit]
    out: list[ScoredAction] = []
    taken: dict[str, int] = {}
    for s in ranked:
        n = taken.get(s.group, 0)
        room = (left or {}).get(s.group, limit)
        if s.action_id in mandatory and n >= room:
            bumped = [c for c in out if c.group == s.group and c.action_id not in mandatory]
            if bumped:
                out.remove(bumped[-1])
                n -= 1
        cap = min(per_group or limit, room)
        if n < cap or s.action_id in mandatory:
            out.append(s)
            taken[s.group] = n + 1
            if len(out) == limit:
                break
    return out


def rank(
    actions: list[Action],
    propensity: np.ndarray,
    values: list[float],
    weights: list[float],
    channel: str,
    versions: Mapping[str, str | None],
    top: int | None = None,
    threshold: float = -math.inf,
) -> list[ScoredAction]:
    """Score the candidates and sort by priority (highest first, then by action id).

    With `top`, only the first `top` whose priority clears `threshold` are built: a
    decision needs those, an explanation needs them all.
    """
    p_list = propensity.tolist()
    keyed = sorted(
        (-(p * v * w * a.lever), a.id, i)
        for i, (a, p, v, w) in enumerate(zip(actions, p_list, values, weights, strict=True))
    )
    if top is not None:
        keyed = [k for k in keyed if -k[0] > threshold][:top]
    out = []
    for neg_priority, _, i in keyed:
        a = actions[i]
        out.append(
            ScoredAction(
                action_id=a.id,
                group=a.group,
                channel=channel,
                propensity=p_list[i],
                value=values[i],
                weight=weights[i],
                lever=a.lever,
                priority=-neg_priority,
                model_version=versions.get(a.model) if a.model else None,
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class ChannelChoice:
    """The channel of an outbound decision and how it was chosen."""

    channel: str
    reason: str  # "preferred", "best net priority" or "nothing goes anywhere"
    # per outbound channel: its best action, that action's priority, the cost, and
    # priority minus cost (None where nothing would go on the channel)
    channels: dict[str, dict[str, Any]]

    def to_wire(self) -> dict[str, Any]:
        return {"channel": self.channel, "reason": self.reason, "channels": self.channels}


def choose_channel(
    probes: Mapping[str, Decision], costs: Mapping[str, float], preferred: str | None
) -> ChannelChoice:
    """Pick the channel for an outbound decision from one probe decision per channel
    (in the catalog's order, each already net of consent, rules, contact policies and
    the channel's cost): the customer's preferred channel if something would go on it,
    else the channel whose best action has the highest priority minus cost (the first
    on a tie), else the first channel (the decision is then to do nothing)."""
    table: dict[str, dict[str, Any]] = {}
    for ch, d in probes.items():
        cost = float(costs.get(ch, 0.0))
        top = d.actions[0] if d.actions else None
        table[ch] = {
            "action_id": top.action_id if top else None,
            "priority": top.priority if top else None,
            "cost": cost,
            "net": top.priority - cost if top else None,
        }
    going = [ch for ch, row in table.items() if row["net"] is not None]
    if not going:
        return ChannelChoice(next(iter(probes)), "nothing goes anywhere", table)
    if preferred in going:
        return ChannelChoice(str(preferred), "preferred", table)
    best = max(going, key=lambda ch: table[ch]["net"])  # max keeps the first of ties
    return ChannelChoice(best, "best net priority", table)
