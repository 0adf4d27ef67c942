"""Step 3 of a decision: rank the scored candidates, drop those not above doing
nothing, take the best within the limit and the group caps (exploration may pick
another first); and, for an outbound decision, the choice of its channel.

priority = propensity × value × context weight × lever. An action whose priority is not
above the do-nothing threshold is dropped; if none is left the decision is [] (do nothing).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from decisioning.policy.catalog import Action
from decisioning.policy.decision import Decision, DecisionRequest, ScoredAction
from decisioning.policy.eligibility import Candidates

__all__ = ["Arbitration", "ChannelChoice", "arbitrate", "choose_channel", "diverse", "rank"]


@dataclass(slots=True)
class Arbitration:
    """What arbitration chose and what an explanation needs to say why."""

    scored: list[ScoredAction]  # every eligible candidate (or the top ones), best first
    chosen: list[ScoredAction]
    threshold: float  # the priority of doing nothing (plus the contact's cost)
    left: Mapping[str, int]  # group -> how many more may go (contact caps)
    probability: dict[str, float] | None = None  # with exploration: P(first) per candidate
    explored: bool = False


def arbitrate(
    r: DecisionRequest,
    c: Candidates,
    propensity: np.ndarray,
    versions: Mapping[str, str | None],
) -> Arbitration:
    """Rank, drop what does not beat doing nothing, take the best within the caps."""
    settings, limits = r.settings, r.limits
    threshold = max(settings.do_nothing_threshold, r.catalog.do_nothing(c.env)) + (
        r.contact_cost or 0.0
    )
    everyone = r.explain or r.explorer is not None or settings.max_per_group
    top = None if everyone or limits is not None else r.limit
    scored = rank(c.actions, propensity, c.values, c.weights, r.channel, versions, top, threshold)
    above = [s for s in scored if s.priority > threshold]
    left = limits.group_left if limits is not None else {}
    mandatory = frozenset(a.id for a in c.actions if a.mandatory)
    chosen = diverse(above, r.limit, settings.max_per_group, left, mandatory)
    out = Arbitration(scored, chosen, threshold, left)
    if r.explorer is not None and above:
        pick = r.explorer.pick(
            [s.propensity for s in above], [s.value * s.weight * s.lever for s in above]
        )
        first = above[pick.index]
        rest = [s for s in above if s is not first]
        out.chosen = diverse([first, *rest], r.limit, settings.max_per_group, left, mandatory)
        out.probability = {
            s.action_id: float(q) for s, q in zip(above, pick.probability, strict=True)
        }
        out.explored = pick.explored
    return out


def diverse(
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
