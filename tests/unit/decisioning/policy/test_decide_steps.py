"""The four steps of a decision, each on its own: eligible -> score -> arbitrate ->
explain, and `decide` as exactly their composition."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from decisioning.config.loader import config_from_dict
from decisioning.policy.arbitration import arbitrate
from decisioning.policy.catalog import Catalog
from decisioning.policy.contacts import Limits
from decisioning.policy.decide import DecisionRequest, Stages, decide, score
from decisioning.policy.eligibility import eligible
from decisioning.policy.explanation import explain
from decisioning.profile import ProfileSchema
from tests.conftest import SMALL, examples
from tests.unit.decisioning.policy.test_decide import NOW, _profile

CONFIG = config_from_dict({**SMALL, "decisioning": {**SMALL["decisioning"], "max_per_group": 1}})
CATALOG = Catalog(CONFIG, ProfileSchema(CONFIG))


def _request(age: float, **kw: object) -> DecisionRequest:
    base = DecisionRequest(
        "d-1",
        "c",
        _profile(CONFIG, age=age),
        "web",
        None,
        {},
        3,
        CATALOG,
        {},
        CONFIG.decisioning,
        NOW,
    )
    return base._replace(**kw)


def test_eligible_keeps_the_catalog_order_and_says_why_the_others_went() -> None:
    c = eligible(_request(16, explain=True))
    assert [a.id for a in c.actions] == ["loan", "tip"]  # card: age >= 18
    assert c.live == 3 and c.values == [32.0, 1.0]
    [removed] = c.removed
    assert removed["action_id"] == "card" and removed["rule"] == "profile.age >= 18"
    assert eligible(_request(16)).removed == []  # nothing is explained unless asked


def test_budgets_hold_for_everyone_and_contact_limits_not_for_mandatory_actions() -> None:
    limits = Limits(actions={"tip": "suppressed"}, exhausted={"loan": "budget"})
    c = eligible(_request(30, limits=limits, explain=True))
    assert [a.id for a in c.actions] == ["card"]
    assert {r["action_id"]: r["rule"] for r in c.removed} == {
        "loan": "budget",
        "tip": "suppressed",
    }
    actions = [{**a, "mandatory": a["id"] != "card"} for a in SMALL["actions"]]
    cfg = config_from_dict({**SMALL, "actions": actions})
    catalog = Catalog(cfg, ProfileSchema(cfg))
    c = eligible(_request(30, limits=limits, catalog=catalog, settings=cfg.decisioning))
    assert [a.id for a in c.actions] == ["card", "tip"]  # tip is mandatory, loan's budget


def test_score_uses_the_default_propensity_without_a_model_and_times_when_asked() -> None:
    r = _request(30, stages=Stages())
    s = score(r, eligible(r))
    assert s.propensity.tolist() == [0.5, 0.5, 0.5] and s.used == []


def test_arbitrate_ranks_by_priority() -> None:
    r = _request(30)
    c = eligible(r)
    a = arbitrate(r, c, np.array([0.5, 0.9, 0.1]), {})
    assert [s.action_id for s in a.scored] == ["loan", "card", "tip"]  # 0.9*60 > 0.5*100
    assert [s.action_id for s in a.chosen] == ["loan", "card", "tip"]  # three groups
    assert a.threshold == 0.0 and a.probability is None and not a.explored


def test_explain_ends_with_doing_nothing() -> None:
    r = _request(30, explain=True, limit=1)
    c = eligible(r)
    a = arbitrate(r, c, score(r, c).propensity, {})
    out = explain(r, c, a)
    assert [e["action_id"] for e in out] == ["card", "loan", "tip", None]
    assert out[1]["why_not"] == "limit: the answer is full"
    assert out[-1] == {
        "action_id": None,
        "do_nothing": True,
        "eligible": True,
        "priority": 0.0,
        "chosen": False,
    }


@examples(50)
@given(age=st.floats(0, 100), limit=st.integers(1, 3), explained=st.booleans())
def test_decide_is_the_composition_of_its_steps(age: float, limit: int, explained: bool) -> None:
    r = _request(age, limit=limit, explain=explained, trace=True)
    c = eligible(r)
    s = score(r, c)
    a = arbitrate(r, c, s.propensity, s.versions)
    d = decide(r)
    assert d.actions == a.chosen and d.eligible == len(c.actions) and d.candidates == c.live
    assert d.explanation == (explain(r, c, a) if explained else None)
    assert d.trace is not None and d.trace.action_ids == [x.id for x in c.actions]
