from __future__ import annotations

import math

import numpy as np
import pytest

import actors.shard.decisions as shard_module
from actors.messages import Recorded
from actors.shard import Shard
from decisioning.config import Config
from decisioning.config.loader import config_from_dict
from decisioning.errors import InvalidInput, ModelError, ModelIncompatible, NotFound
from decisioning.policy.catalog import Catalog
from decisioning.policy.decide import DecisionRequest, decide
from decisioning.policy.features import FeaturePlan, default_vocabularies
from decisioning.policy.scoring import ModelBundle, ModelManifest, sha256_text
from decisioning.profile import ProfileSchema
from tests.conftest import SMALL
from tests.unit import edge
from tests.unit.models import tiny_model

NOW = 1_700_000_000.0


class Clock:
    def __init__(self, t: float = NOW) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _decide(config: Config, profile: np.ndarray, channel: str = "web", **kw: object):
    schema = ProfileSchema(config)
    return decide(
        DecisionRequest(
            decision_id="d-1",
            customer_id="c",
            profile=profile,
            channel=channel,
            placement=kw.pop("placement", None),
            context=kw.pop("context", {}),
            limit=kw.pop("limit", 3),
            catalog=Catalog(config, schema),
            models={},
            settings=config.decisioning,
            now=NOW,
            **kw,
        )
    )


def _profile(config: Config, **values: float) -> np.ndarray:
    schema = ProfileSchema(config)
    p = np.full(len(schema.feature_names), math.nan)
    for k, v in values.items():
        p[schema.index[k]] = v
    return p


def test_priority_is_propensity_value_weight_lever(small_config: Config) -> None:
    d = _decide(small_config, _profile(small_config, age=30))
    by_id = {a.action_id: a for a in d.actions}
    assert by_id["card"].priority == pytest.approx(0.5 * 100)
    assert by_id["loan"].priority == pytest.approx(0.5 * 60)  # value = 2 * age
    assert [a.action_id for a in d.actions] == ["card", "loan", "tip"]


def test_eligibility_limit_and_channel(small_config: Config) -> None:
    assert "card" not in [
        a.action_id for a in _decide(small_config, _profile(small_config, age=16)).actions
    ]
    assert len(_decide(small_config, _profile(small_config, age=30), limit=1).actions) == 1
    assert [
        a.action_id
        for a in _decide(small_config, _profile(small_config, age=30), channel="email").actions
    ] == ["card"]


def test_do_nothing_when_no_priority_clears_the_threshold() -> None:
    cfg = config_from_dict(
        {**SMALL, "decisioning": {"do_nothing_threshold": 1000, "default_propensity": 0.5}}
    )
    d = _decide(cfg, _profile(cfg, age=30))
    assert d.actions == []
    assert d.to_wire()["actions"] == []


def test_context_weights_and_levers() -> None:
    actions = [{**SMALL["actions"][0], "lever": 3.0}, SMALL["actions"][2]]
    cfg = config_from_dict(
        {
            **SMALL,
            "actions": actions,
            "decisioning": {
                "default_propensity": 0.5,
                "context_weights": [
                    {
                        "when": "context.placement == 'hero' and action.group == 'service'",
                        "weight": 1000,
                    }
                ],
            },
        }
    )
    d = _decide(cfg, _profile(cfg, age=30), placement="hero", explain=True)
    assert d.actions[0].action_id == "tip"
    assert d.actions[0].priority == pytest.approx(0.5 * 1 * 1000)
    assert d.actions[1].priority == pytest.approx(0.5 * 100 * 3.0)
    assert any(e["action_id"] == "card" and e["lever"] == 3.0 for e in d.explanation)


def test_start_and_end_dates() -> None:
    actions = [{**SMALL["actions"][2], "start": "2030-01-01T00:00:00Z"}]
    cfg = config_from_dict({**SMALL, "actions": actions})
    assert _decide(cfg, _profile(cfg)).candidates == 0


def test_feature_plan_follows_model_order_and_vocabulary(small_config: Config) -> None:
    schema = ProfileSchema(small_config)
    catalog = Catalog(small_config, schema)
    names = ["action_id", "segment", "age", "action_value", "channel", "views_all"]
    cats = {
        "action_id": ["tip", "loan", "card"],
        "segment": ["affluent", "mass"],
        "channel": ["email", "web"],
    }
    plan = FeaturePlan.build("m", names, cats, small_config, schema, catalog)
    prof = _profile(small_config, age=30, segment=0.0, views_all=4)  # segment 0 = "mass"
    x = plan.matrix(prof, [catalog.by_id["card"], catalog.by_id["loan"]], [100.0, 60.0], "web", {})
    assert x.tolist() == [[2.0, 1.0, 30.0, 100.0, 1.0, 4.0], [1.0, 1.0, 30.0, 60.0, 1.0, 4.0]]
    with pytest.raises(ModelIncompatible) as e:
        FeaturePlan.build(
            "m", ["age", "shoe_size", "action_group"], {}, small_config, schema, catalog
        )
    assert "shoe_size" in str(e.value) and "action_group" in str(e.value)


def test_shard_events_change_the_decision(small_config: Config) -> None:
    shard = Shard(0, small_config, clock=Clock())
    req = {"customer_id": "c", "channel": "web"}
    assert [a["action_id"] for a in edge.decide(shard, req)["actions"]] == ["tip"]  # cold start
    edge.apply_events(
        shard,
        [{"customer_id": "c", "type": "profile_update", "ts": NOW, "properties": {"age": 30}}],
    )
    assert [a["action_id"] for a in edge.decide(shard, req)["actions"]] == ["card", "loan", "tip"]
    view = edge.get_profile(shard, "c")
    assert view["attributes"]["age"] == 30.0
    assert len(view["recent_decisions"]) == 2


def test_shard_triggering_event_dry_run_and_outcomes(small_config: Config) -> None:
    shard = Shard(0, small_config, clock=Clock())
    d = edge.decide(
        shard,
        {
            "customer_id": "c",
            "channel": "web",
            "dry_run": True,
            "event": {"type": "profile_update", "ts": NOW, "properties": {"age": 30}},
        },
    )
    assert d["actions"][0]["action_id"] == "tip"  # dry run: event not applied
    assert edge.get_profile(shard, "c")["known"] is False
    d = edge.decide(
        shard,
        {
            "customer_id": "c",
            "channel": "web",
            "event": {"type": "profile_update", "ts": NOW, "properties": {"age": 30}},
        },
    )
    assert d["actions"][0]["action_id"] == "card"
    assert edge.record_outcomes(
        shard,
        [
            {
                "decision_id": d["decision_id"],
                "action_id": "card",
                "outcome": "accept",
                "ts": NOW,
            }
        ],
    ) == Recorded(1)
    with pytest.raises(NotFound):
        edge.record_outcomes(
            shard,
            [{"decision_id": "d-0000-ffff", "action_id": "card", "outcome": "accept", "ts": NOW}],
        )
    with pytest.raises(InvalidInput) as e:
        edge.record_outcomes(
            shard,
            [{"decision_id": d["decision_id"], "action_id": "nope", "outcome": "click", "ts": NOW}],
        )
    assert e.value.code == "action_not_in_decision"
    with pytest.raises(InvalidInput) as e:
        edge.decide(shard, {"customer_id": "c", "channel": "fax"})
    assert e.value.code == "unknown_channel"


def test_decision_history_is_bounded_whatever_the_number_of_customers(
    small_config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shard_module, "MAX_TRACKED_DECISIONS", 50)
    keep = small_config.decisioning.recent_decisions
    shard = Shard(0, small_config, clock=Clock())
    first = edge.decide(shard, {"customer_id": "c-0", "channel": "web"})["decision_id"]
    ids = [edge.decide(shard, {"customer_id": "loyal", "channel": "web"}) for _ in range(keep + 3)]
    view = edge.get_profile(shard, "loyal")["recent_decisions"]
    assert [r["decision_id"] for r in view] == [d["decision_id"] for d in ids[-keep:]]
    assert view[-1]["actions"] == [a["action_id"] for a in ids[-1]["actions"]]
    for i in range(1, 200):
        edge.decide(shard, {"customer_id": f"c-{i}", "channel": "web"})
    assert len(shard.decisions) == 50
    assert sum(len(v) for v in shard.recent.values()) <= 50  # not one list per customer ever
    assert len(shard.recent) <= 50
    assert edge.get_profile(shard, "c-0")["recent_decisions"] == []
    assert len(edge.get_profile(shard, "c-199")["recent_decisions"]) == 1
    with pytest.raises(NotFound):  # too old: its outcome can no longer be matched
        edge.record_outcomes(
            shard, [{"decision_id": first, "action_id": "tip", "outcome": "click", "ts": NOW}]
        )


def test_shard_scores_with_a_real_model_and_refuses_bad_ones(small_config: Config) -> None:
    bundle = tiny_model(small_config)
    shard = Shard(0, small_config, [bundle], clock=Clock())
    edge.apply_events(
        shard,
        [{"customer_id": "c", "type": "profile_update", "ts": NOW, "properties": {"age": 30}}],
    )
    d = edge.decide(shard, {"customer_id": "c", "channel": "web", "limit": 3})
    scored = [a for a in d["actions"] if a["model_version"] == "propensity@1"]
    assert scored and all(0 < a["propensity"] < 1 for a in scored)
    assert d["model_version"] == "propensity@1"
    m = bundle.manifest
    tampered = bundle.model_text.replace("Tree=0", "Tree=0 ", 1)
    with pytest.raises(ModelError):
        shard.stage_model(m.to_dict(), tampered)
    wrong = ModelManifest(
        **{**m.to_dict(), "version": 2, "features": ["age", "shoe_size"], "sha256": m.sha256}
    )
    with pytest.raises(ModelIncompatible):
        shard.stage_model(wrong.to_dict(), bundle.model_text)
    assert shard.model_versions() == {"propensity": "propensity@1"}
    v2 = ModelBundle.verified(ModelManifest(**{**m.to_dict(), "version": 2}), bundle.model_text)
    shard.stage_model(v2.manifest.to_dict(), v2.model_text)
    assert shard.model_versions() == {"propensity": "propensity@1"}  # staged, not serving
    shard.commit_model("propensity")
    assert (
        edge.decide(shard, {"customer_id": "c", "channel": "web"})["model_version"]
        == "propensity@2"
    )


def test_vocabularies_cover_every_categorical(small_config: Config) -> None:
    v = default_vocabularies(small_config, ProfileSchema(small_config))
    assert v["segment"] == ["mass", "affluent"]
    assert v["action_id"] == ["card", "loan", "tip"]
    assert v["channel"] == ["web", "email"]
    assert sha256_text("x") != sha256_text("x ")  # one byte changes the digest
