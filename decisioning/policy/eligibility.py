"""Step 1 of a decision: which of the channel's live actions may go to this customer
(consent, budgets, contact policies, the actions' rules, the outbound channel's rule),
with their values and context weights."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from decisioning.policy.catalog import Action, context_of
from decisioning.policy.decision import DecisionRequest
from decisioning.policy.rules import Env, Rule

__all__ = ["Candidates", "eligible"]


@dataclass(slots=True)
class Candidates:
    """The eligible actions of one decision, in the catalog's order, and what the later
    steps need of eligibility: the rule environment, the context, the live count."""

    env: Env
    ctx: dict[str, Any]
    live: int  # live actions of the channel (the decision's `candidates`)
    actions: list[Action]
    values: list[float]
    weights: list[float]
    removed: list[dict[str, Any]]  # with explain: why each of the others went


def eligible(r: DecisionRequest) -> Candidates:
    """The actions that may go, each checked in order: consent (mandatory actions may
    ignore it), budgets (for everyone), contact limits (not for mandatory actions), then
    the action's rules and, for an outbound decision, the channel's outbound rule."""
    catalog, channel, limits, explain = r.catalog, r.channel, r.limits, r.explain
    ctx = context_of(channel, r.placement, r.context)
    env = Env(r.profile.tolist(), ctx, tables=r.tables)
    for name, lookup in catalog.derived_context:  # e.g. a context table joined by key
        if ctx.get(name) is None:
            ctx[name] = lookup(env)
    live = catalog.live(channel, r.now)
    actions: list[Action] = []
    values: list[float] = []
    weights: list[float] = []
    removed: list[dict[str, Any]] = []
    consented, recorded = catalog.consented(env.profile, channel)
    outbound_rule = catalog.outbound_rules.get(channel) if r.contact_cost is not None else None
    for a in live:
        if not consented and not (a.mandatory and r.settings.mandatory_ignores_consent):
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
        failed = _first_failing(a, env, outbound_rule)
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
        actions.append(a)
        values.append(value)
        weights.append(catalog.weight(env))
    return Candidates(env, ctx, len(live), actions, values, weights, removed)


def _first_failing(a: Action, env: Env, outbound: Rule | None) -> tuple[str, Rule] | None:
    """The first of the action's rules (group ones first) that does not hold, then the
    outbound channel's rule."""
    for stage, rule in a.rules:
        if not rule.holds(env):
            return stage, rule
    if outbound is not None and not outbound.holds(env):
        return "outbound channel rule", outbound
    return None
