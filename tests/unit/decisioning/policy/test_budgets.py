"""Volume budgets: the ledger never grants more than the budget; a shard shows a
budgeted action only from its allotment, so the total never exceeds the budget."""

from __future__ import annotations

import calendar
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
from hypothesis import given
from hypothesis import strategies as st

from actors.shard import Shard
from decisioning.config.loader import config_from_dict
from decisioning.policy.budgets import Allotments, Ledger, chunk_size, day_of
from decisioning.stores.ledger import LedgerStore
from tests.conftest import SMALL, examples
from tests.unit import edge
from tests.unit.decisioning.policy.test_decide import NOW, Clock

MIDNIGHT = float(calendar.timegm((2026, 11, 25, 0, 0, 0)))
DAY = 86400.0


def _config(per_day: int, **hot: Any) -> Any:
    actions = [
        {
            "id": "hot",
            "group": "g",
            "channels": ["web", "email"],
            "value": 100,
            "budget": {"per_day": per_day},
            **hot,
        },
        {"id": "plain", "group": "g", "channels": ["web", "email"], "value": 1},
    ]
    decisioning = {"default_propensity": 0.5, "consent": {"email": "opt_in"}}
    decisioning |= {"mandatory_ignores_consent": True, "channel_caps": {"email": {"per_day": 1}}}
    return config_from_dict({**SMALL, "actions": actions, "decisioning": decisioning})


class Granting:
    """A supervisor's lease: grants from `store` and counts every answer per day."""

    def __init__(self, store: LedgerStore, budget: int) -> None:
        self.store, self.budget = store, budget
        self.answered: Counter[str] = Counter()

    def __call__(self, action: str, day: str, want: int) -> int:
        n = self.store.grant(action, day, want, self.budget)
        self.answered[day] += n
        return n

    def refill(self, shard: Shard) -> None:
        shard.allotments.refill(shard.budgets, day_of(shard.clock()), lambda b: 2, self)


def _show(shard: Shard, customer: str, channel: str = "web") -> bool:
    d = edge.decide(shard, {"customer_id": customer, "channel": channel})
    return bool(d["actions"]) and d["actions"][0]["action_id"] == "hot"


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
        d = edge.decide(shard, {"customer_id": f"c-{step}", "channel": "web"})
        shown += d["actions"][0]["action_id"] == "hot"
    assert shown <= budget
    granted = ledger.granted.get(day, {}).get("hot", 0)
    left = sum(s.allotments.left.get(("hot", day), 0) for s in fleet)
    assert shown + left == granted  # every granted unit is shown or still allotted


def test_no_allotment_no_candidate_and_explain_says_so() -> None:
    shard = Shard(0, _config(10), clock=Clock())
    d = edge.decide(shard, {"customer_id": "c", "channel": "web", "explain": True})
    assert [a["action_id"] for a in d["actions"]] == ["plain"]
    hot = next(e for e in d["explanation"] if e["action_id"] == "hot")
    assert hot["stage"] == "contact policy" and "budget" in hot["rule"]
    shard.allotments.add("hot", day_of(NOW), 1)
    assert (
        edge.decide(shard, {"customer_id": "c", "channel": "web"})["actions"][0]["action_id"]
        == "hot"
    )
    assert (
        edge.decide(shard, {"customer_id": "d", "channel": "web"})["actions"][0]["action_id"]
        == "plain"
    )
    allot = Allotments()
    allot.add("hot", "2026-11-24", 3)
    allot.add("hot", "2026-11-25", 1)  # a new day voids yesterday's
    assert ("hot", "2026-11-24") not in allot.left


def test_shards_on_both_sides_of_midnight_share_one_ledger(tmp_path: Path) -> None:
    """A shard past midnight does not make the ledger forget the day a lagging shard is
    still in; once the day is forgotten, it is refused, never granted again."""
    budget = 6
    supervisor = Clock(MIDNIGHT)
    lease = Granting(LedgerStore.at(str(tmp_path), clock=supervisor), budget)
    before, after = day_of(MIDNIGHT - 10), day_of(MIDNIGHT + 10)
    lagging = Shard(0, _config(budget), clock=Clock(MIDNIGHT - 10))
    ahead = Shard(1, _config(budget), clock=Clock(MIDNIGHT + 10))
    shown: Counter[str] = Counter()
    for i in range(40):  # both shards ask, both decide, turn by turn
        for shard, day in ((lagging, before), (ahead, after)):
            lease.refill(shard)
            shown[day] += _show(shard, f"c-{shard.shard_id}-{i}")
    assert shown == {before: budget, after: budget}  # each day's budget, used and no more
    assert lease.answered == {before: budget, after: budget}
    supervisor.t = ahead.clock.t = MIDNIGHT + 3 * DAY  # days later, the lagging clock is stuck
    lease.refill(ahead)
    assert lease("hot", before, 2) == 0  # refused: forgotten (not reset to a fresh budget)
    lease.refill(lagging)
    assert not _show(lagging, "late") and lease.answered[before] == budget
    lease("hot", day_of(ahead.clock.t), 1)  # the next grant stores the pruned ledger
    ledger = lease.store.load()
    assert ledger.forgotten(before) and before not in ledger.granted


def test_one_clock_far_ahead_does_not_make_the_ledger_forget_today(tmp_path: Path) -> None:
    """Forgetting a day needs the supervisor's clock and the newest grant to agree."""
    today, later = day_of(MIDNIGHT), day_of(MIDNIGHT + 365 * DAY)
    shard_ahead = LedgerStore.at(str(tmp_path / "a"), clock=Clock(MIDNIGHT))
    supervisor_ahead = LedgerStore.at(str(tmp_path / "b"), clock=Clock(MIDNIGHT + 365 * DAY))
    assert shard_ahead.grant("hot", today, 2, 10) == 2
    assert shard_ahead.grant("hot", later, 2, 10) == 2  # a shard's clock a year ahead
    assert supervisor_ahead.grant("hot", today, 2, 10) == 2  # (its node's clock is wrong)
    for store in (shard_ahead, supervisor_ahead):
        assert store.grant("hot", today, 9, 10) == 8  # today is still known, and granted
        assert store.load().granted[today] == {"hot": 10}


def test_a_mandatory_budgeted_action_is_held_to_the_budget(tmp_path: Path) -> None:
    """Mandatory lets an action past consent and contact caps, not past its budget."""
    budget = 3
    lease = Granting(LedgerStore.at(str(tmp_path), clock=Clock(MIDNIGHT)), budget)
    fleet = [Shard(i, _config(budget, mandatory=True), clock=Clock(MIDNIGHT)) for i in range(2)]
    shown = 0
    for _ in range(20):  # one customer, no email consent, over the channel cap after one
        for shard in fleet:
            lease.refill(shard)
            shown += _show(shard, "c", "email")
    assert shown == budget
    d = edge.decide(fleet[0], {"customer_id": "c", "channel": "email", "explain": True})
    assert d["actions"] == []
    hot = next(e for e in d["explanation"] if e["action_id"] == "hot")
    assert "budget" in hot["rule"]


@examples(60)
@given(
    steps=st.lists(
        st.one_of(
            st.tuples(
                st.just("grant"), st.sampled_from("ab"), st.integers(-4, 4), st.integers(1, 4)
            ),
            st.tuples(st.just("clock"), st.integers(-2, 6)),  # even back: another node
            st.tuples(st.just("restart")),
        ),
        max_size=40,
    )
)
def test_no_day_is_ever_granted_more_than_its_budget(steps: list[tuple[Any, ...]]) -> None:
    """Any interleaving of shards asking for days around now (their clocks disagree),
    supervisor clocks and restarts: what was answered per action and day never exceeds
    the budget, and the ledger holds every answer of a day it has not forgotten."""
    budget = 7
    answered: Counter[tuple[str, str]] = Counter()
    supervisor = Clock(MIDNIGHT)
    with tempfile.TemporaryDirectory() as tmp:
        store = LedgerStore.at(tmp, clock=supervisor)
        for step in steps:
            if step[0] == "grant":
                _, action, offset, want = step
                day = day_of(MIDNIGHT + offset * DAY)
                answered[action, day] += store.grant(action, day, want, budget)
            elif step[0] == "clock":
                supervisor.t = MIDNIGHT + step[1] * DAY
            else:
                store = LedgerStore.at(tmp, clock=supervisor)
        assert max(answered.values(), default=0) <= budget
        ledger = store.load()
        for (action, day), n in answered.items():
            if not ledger.forgotten(day):
                assert ledger.granted.get(day, {}).get(action, 0) == n


def test_the_ledger_file_is_replaced_durably_on_any_pyarrow_filesystem(tmp_path: Path) -> None:
    local = LedgerStore.at(str(tmp_path / "local"), clock=Clock(MIDNIGHT))
    other = LedgerStore(  # not a LocalFileSystem: the generic path (no fsync to call)
        pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem()),
        "other/budgets/ledger.json",
        clock=Clock(MIDNIGHT),
    )
    for store in (local, other):
        assert store.grant("hot", day_of(MIDNIGHT), 4, 10) == 4
        assert store.grant("hot", day_of(MIDNIGHT), 9, 10) == 6
        assert store.load().granted == {day_of(MIDNIGHT): {"hot": 10}}
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["ledger.json"] * 2
