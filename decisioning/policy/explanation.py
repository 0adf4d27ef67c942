"""Step 4 of a decision, on request: every candidate and why it won or lost (the
eligibility stage and rule that removed it, its scores, why it is not in the answer),
and doing nothing, which always competes."""

from __future__ import annotations

from typing import Any

from decisioning.config import DecisioningSpec
from decisioning.policy.arbitration import Arbitration
from decisioning.policy.decision import DecisionRequest, ScoredAction
from decisioning.policy.eligibility import Candidates

__all__ = ["explain"]


def explain(r: DecisionRequest, c: Candidates, a: Arbitration) -> list[dict[str, Any]]:
    """The removed candidates first, then the scored ones best first, then doing nothing."""
    chosen = a.chosen
    out = c.removed + [
        {
            "action_id": s.action_id,
            "eligible": True,
            "propensity": s.propensity,
            "value": s.value,
            "weight": s.weight,
            "lever": s.lever,
            "priority": s.priority,
            "chosen": s in chosen,
            **({} if s in chosen else {"why_not": _why_not(s, a, r.settings)}),
        }
        for s in a.scored
    ]
    out.append(
        {
            "action_id": None,
            "do_nothing": True,
            "eligible": True,  # doing nothing always competes
            "priority": a.threshold,
            "chosen": not chosen,
            **({} if r.contact_cost is None else {"contact_cost": r.contact_cost}),
        }
    )
    return out


def _why_not(s: ScoredAction, a: Arbitration, settings: DecisioningSpec) -> str:
    """Why an eligible candidate is not in the answer."""
    chosen, left = a.chosen, a.left
    if s.priority <= a.threshold:
        return "priority not above doing nothing"
    if s.group in left and sum(c.group == s.group for c in chosen) >= left[s.group]:
        return f"group cap: only {left[s.group]} more of group {s.group} may go now"
    per_group = settings.max_per_group
    if per_group is not None and sum(c.group == s.group for c in chosen) >= per_group:
        return f"max_per_group: {per_group} of group {s.group} already chosen"
    return "limit: the answer is full"
