"""Volume budgets: the ledger never grants more than the budget; a shard shows a
budgeted action only from its allotment, so the total never exceeds the budget."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from actors.shard import Shard
from decisioning.budgets import Allotments, Ledger, chunk_size, day_of
from decisioning.loader import config_from_dict
from tests.conftest import SMALL, examples
from tests.unit.test_decide import NOW, Clock


def _config(per_day: int) -> Any:
    actions = [
        {
            "id": "hot",
            "group": "g",
            "channels": ["web"],
            "value": 100,
            "budget": {"per_day": per_day},
        },
        {"id": "plain", "group": "g", "channels": ["web"], "value": 1},
    ]
    return config_from_dict(
        {**SMALL, "actions": actions, "decisioning": {"default_propensity": 0.5}}
    )


def test_ledger_never_grants_more_than_the_budget() -> None:
    ledger = Ledger()
    got = [ledger.grant("hot", "2026-11-24", 7, 20) for _ in range(5)]
    assert got == [7, 7, 6, 0, 0]
    assert ledger.grant("hot", "2026-11-25", 7, 20) == 7  # a new day
    assert chunk_size(100, 2) == 13 and chunk_size(1, 8) == 1


@examples(60)
@given(
    budget=st.integers(0, 60),
    shards=st.integers(1, 4),
    traffic=st.lists(st.integers(0, 3), min_size=1, max_size=200),  # which shard decides
)
def test_shards_never_show_more_than_the_budget(
    budget: int, shards: int, traffic: list[int]
) -> None:
    cfg = _config(budget)
    ledger = Ledger()
    day = day_of(NOW)
    fleet = [Shard(i, cfg, clock=Clock()) for i in range(shards)]
    shown = 0
    for step, k in enumerate(traffic):
        shard = fleet[k % shards]
        if step % 5 == 0:  # the background refill, now and then
            for s in fleet:
                s.allotments.refill(
                    s.budgets,
                    day,
                    lambda b: chunk_size(b, shards),
                    lambda a, d, w: ledger.grant(a, d, w, budget),
                )
        d = shard.decide({"customer_id": f"c-{step}", "channel": "web"})
        shown += d["actions"][0]["action_id"] == "hot"
    assert shown <= budget
    granted = ledger.granted.get(day, {}).get("hot", 0)
    left = sum(s.allotments.left.get(("hot", day), 0) for s in fleet)
    assert shown + left == granted  # every granted unit is shown or still allotted


def test_no_allotment_no_candidate_and_explain_says_so() -> None:
    shard = Shard(0, _config(10), clock=Clock())
    d = shard.decide({"customer_id": "c", "channel": "web", "explain": True})
    assert [a["action_id"] for a in d["actions"]] == ["plain"]
    hot = next(e for e in d["explanation"] if e["action_id"] == "hot")
    assert hot["stage"] == "contact policy" and "budget" in hot["rule"]
    shard.allotments.add("hot", day_of(NOW), 1)
    assert shard.decide({"customer_id": "c", "channel": "web"})["actions"][0]["action_id"] == "hot"
    assert (
        shard.decide({"customer_id": "d", "channel": "web"})["actions"][0]["action_id"] == "plain"
    )
    allot = Allotments()
    allot.add("hot", "2026-11-24", 3)
    allot.add("hot", "2026-11-25", 1)  # a new day voids yesterday's
    assert ("hot", "2026-11-24") not in allot.left
