"""Business policies that must hold exactly: consent on every decision, and
explanations that name the rule and the values that removed a candidate."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from actors.shard import Shard
from decisioning.config import Config
from decisioning.config.loader import config_from_dict
from tests.conftest import SMALL, examples
from tests.unit import edge
from tests.unit.decisioning.policy.test_decide import NOW, Clock


def _config(
    consent: dict[str, str] | None = None, bypass: bool = False, mandatory: tuple[str, ...] = ()
) -> Config:
    actions = [{**a, "mandatory": a["id"] in mandatory} for a in SMALL["actions"]]
    return config_from_dict(
        {
            **SMALL,
            "actions": actions,
            "decisioning": {
                **SMALL["decisioning"],
                "consent": consent or {},
                "mandatory_ignores_consent": bypass,
            },
        }
    )


def _shard(config: Config, cid: str, age: float | None, email: bool | None) -> Shard:
    shard = Shard(0, config, clock=Clock())
    events: list[dict[str, Any]] = []
    if age is not None:
        events.append(
            {"customer_id": cid, "type": "profile_update", "ts": NOW, "properties": {"age": age}}
        )
    if email is not None:
        events.append(
            {"customer_id": cid, "type": "consent", "ts": NOW, "properties": {"email": email}}
        )
    if events:
        edge.apply_events(shard, events)
    return shard


def test_explanations_name_the_rule_and_the_values_that_failed() -> None:
    shard = _shard(_config(), "c", 16, None)
    d = edge.decide(shard, {"customer_id": "c", "channel": "web", "explain": True})
    card = next(e for e in d["explanation"] if e["action_id"] == "card")
    assert card == {
        "action_id": "card",
        "eligible": False,
        "stage": "eligibility",
        "rule": "profile.age >= 18",
        "values": {"profile.age": 16.0},
    }
    unknown = _shard(_config(), "u", None, None)
    d = edge.decide(unknown, {"customer_id": "u", "channel": "web", "explain": True})
    card = next(e for e in d["explanation"] if e["action_id"] == "card")
    assert card["values"] == {"profile.age": None}


def test_opt_out_is_the_default_and_a_recorded_no_removes_everything() -> None:
    shard = _shard(_config(), "c", 30, False)
    d = edge.decide(shard, {"customer_id": "c", "channel": "email", "explain": True})
    assert d["actions"] == []
    card, nothing = d["explanation"]
    assert card["rule"] == "consent (opt_out)" and card["values"] == {"consent.email": False}
    assert nothing["do_nothing"] and nothing["chosen"]
    assert edge.decide(_shard(_config(), "c", 30, None), {"customer_id": "c", "channel": "email"})[
        "actions"
    ]  # nothing recorded: opt-out lets it go


def test_opt_in_needs_a_recorded_yes() -> None:
    cfg = _config({"email": "opt_in"})
    assert (
        edge.decide(_shard(cfg, "c", 30, None), {"customer_id": "c", "channel": "email"})["actions"]
        == []
    )
    assert edge.decide(_shard(cfg, "c", 30, True), {"customer_id": "c", "channel": "email"})[
        "actions"
    ]
    # web is not listed: opt-out, so the email consent does not matter there
    assert edge.decide(_shard(cfg, "c", 30, False), {"customer_id": "c", "channel": "web"})[
        "actions"
    ]


def test_mandatory_actions_go_without_consent_only_when_the_config_allows() -> None:
    strict = _config({"email": "opt_in"}, bypass=False, mandatory=("card",))
    assert (
        edge.decide(_shard(strict, "c", 30, False), {"customer_id": "c", "channel": "email"})[
            "actions"
        ]
        == []
    )
    lenient = _config({"email": "opt_in"}, bypass=True, mandatory=("card",))
    d = edge.decide(_shard(lenient, "c", 30, False), {"customer_id": "c", "channel": "email"})
    assert [a["action_id"] for a in d["actions"]] == ["card"]


MODES = st.sampled_from(["opt_in", "opt_out", "none"])


@examples(150)
@given(
    web=MODES,
    email=MODES,
    bypass=st.booleans(),
    mandatory=st.lists(st.sampled_from(["card", "loan", "tip"]), unique=True),
    states=st.lists(
        st.tuples(st.sampled_from(["web", "email"]), st.sampled_from([True, False, None])),
        max_size=4,
    ),
    age=st.one_of(st.none(), st.floats(0, 100)),
)
def test_consent_is_never_violated(
    web: str,
    email: str,
    bypass: bool,
    mandatory: list[str],
    states: list[tuple[str, bool | None]],
    age: float | None,
) -> None:
    cfg = _config({"web": web, "email": email}, bypass, tuple(mandatory))
    shard = Shard(0, cfg, clock=Clock())
    recorded: dict[str, bool | None] = {}
    for ch, v in states:  # consent changes; the last one counts
        edge.apply_events(
            shard, [{"customer_id": "c", "type": "consent", "ts": NOW, "properties": {ch: v}}]
        )
        recorded[ch] = v
    if age is not None:
        edge.apply_events(
            shard,
            [{"customer_id": "c", "type": "profile_update", "ts": NOW, "properties": {"age": age}}],
        )
    for ch, mode in (("web", web), ("email", email)):
        d = edge.decide(shard, {"customer_id": "c", "channel": ch, "limit": 3})
        state = recorded.get(ch)
        allowed = {"opt_in": state is True, "opt_out": state is not False, "none": True}[mode]
        for a in d["actions"]:
            assert allowed or (bypass and a["action_id"] in mandatory), (ch, mode, state, a)


def _arb(**decisioning: Any) -> Config:
    actions = [
        {"id": "a1", "group": "cards", "channels": ["web"], "value": 10, "issue": "grow"},
        {"id": "a2", "group": "cards", "channels": ["web"], "value": 9, "issue": "grow"},
        {"id": "a3", "group": "cards", "channels": ["web"], "value": 8},
        {"id": "b1", "group": "loans", "channels": ["web"], "value": 5, "issue": "retain"},
    ]
    return config_from_dict(
        {
            **SMALL,
            "actions": actions,
            "decisioning": {"default_propensity": 0.5, "default_limit": 3, **decisioning},
        }
    )


def test_do_nothing_competes_with_its_own_value() -> None:
    shard = Shard(0, _arb(do_nothing_value=4.6), clock=Clock())  # a3 = 0.5 × 8 = 4.0
    d = edge.decide(shard, {"customer_id": "c", "channel": "web", "explain": True})
    assert [a["action_id"] for a in d["actions"]] == ["a1"]  # 5.0 > 4.6 > 4.5
    why = {e["action_id"]: e.get("why_not") for e in d["explanation"]}
    assert why["a2"] == "priority not above doing nothing"
    assert d["explanation"][-1] == {
        "action_id": None,
        "do_nothing": True,
        "eligible": True,
        "priority": 4.6,
        "chosen": False,
    }
    # as an expression of the profile: a rich customer is worth leaving alone
    cfg = _arb(do_nothing_value="coalesce(profile.age, 0) / 10")
    shard = Shard(0, cfg, clock=Clock())
    edge.apply_events(
        shard,
        [{"customer_id": "old", "type": "profile_update", "ts": NOW, "properties": {"age": 90}}],
    )
    assert edge.decide(shard, {"customer_id": "old", "channel": "web"})["actions"] == []
    assert edge.decide(shard, {"customer_id": "new", "channel": "web"})["actions"]


def test_diversity_and_group_and_issue_levers() -> None:
    shard = Shard(0, _arb(max_per_group=2), clock=Clock())
    d = edge.decide(shard, {"customer_id": "c", "channel": "web", "limit": 3, "explain": True})
    assert [a["action_id"] for a in d["actions"]] == ["a1", "a2", "b1"]  # a3: third card
    why = {e["action_id"]: e.get("why_not") for e in d["explanation"]}
    assert why["a3"] == "max_per_group: 2 of group cards already chosen"
    levered = _arb(group_levers={"loans": 3.0}, issue_levers={"retain": 2.0})
    d = edge.decide(Shard(0, levered, clock=Clock()), {"customer_id": "c", "channel": "web"})
    assert d["actions"][0]["action_id"] == "b1"  # 0.5 × 5 × 3 × 2 = 15
    assert d["actions"][0]["priority"] == 15.0


@examples(150)
@given(
    values=st.lists(st.floats(0, 100), min_size=4, max_size=4),
    nothing=st.floats(0, 100),
    limit=st.integers(1, 4),
)
def test_do_nothing_wins_when_every_action_is_below_it(
    values: list[float], nothing: float, limit: int
) -> None:
    actions = [
        {"id": f"x{i}", "group": "g", "channels": ["web"], "value": v} for i, v in enumerate(values)
    ]
    cfg = config_from_dict(
        {
            **SMALL,
            "actions": actions,
            "decisioning": {"default_propensity": 0.5, "do_nothing_value": nothing},
        }
    )
    d = edge.decide(
        Shard(0, cfg, clock=Clock()), {"customer_id": "c", "channel": "web", "limit": limit}
    )
    shown = [a["priority"] for a in d["actions"]]
    assert all(p > nothing for p in shown)
    assert len(shown) == min(limit, sum(0.5 * v > nothing for v in values))


def test_policy_settings_are_checked_at_load() -> None:
    import pytest

    from decisioning.errors import ConfigError

    with pytest.raises(ConfigError, match="group_levers names no action's: nope"):
        _arb(group_levers={"nope": 2.0})
    with pytest.raises(ConfigError, match="consent names unknown channels: fax"):
        _arb(consent={"fax": "opt_in"})
    with pytest.raises(ConfigError, match="unknown field 'action.value'"):
        _arb(do_nothing_value="action.value * 2")  # doing nothing is no action


def test_group_and_action_rules_by_stage() -> None:
    actions = [
        {**SMALL["actions"][0], "applicability": "context.placement == 'hero'"},
        {**SMALL["actions"][1], "suitability": "coalesce(profile.age, 0) < 60"},
        SMALL["actions"][2],
    ]
    cfg = config_from_dict(
        {
            **SMALL,
            "actions": actions,
            "decisioning": {
                **SMALL["decisioning"],
                "groups": {"service": {"eligibility": "consent.web != false"}},
                "consent": {"web": "none"},  # so the group rule is what reads it
            },
        }
    )
    shard = _shard(cfg, "c", 70, None)
    edge.apply_events(
        shard, [{"customer_id": "c", "type": "consent", "ts": NOW, "properties": {"web": False}}]
    )
    d = edge.decide(
        shard, {"customer_id": "c", "channel": "web", "explain": True, "placement": "side"}
    )
    by_id = {e["action_id"]: e for e in d["explanation"] if e["action_id"]}
    assert by_id["card"]["stage"] == "applicability"
    assert by_id["card"]["values"] == {"context.placement": "side"}
    assert by_id["loan"]["stage"] == "suitability"
    assert by_id["tip"]["stage"] == "group eligibility"
    assert by_id["tip"]["values"] == {"consent.web": False}
    assert d["actions"] == []
    import pytest

    from decisioning.errors import ConfigError

    with pytest.raises(ConfigError, match=r"decisioning.groups.service.suitability: line 1"):
        config_from_dict(
            {**SMALL, "decisioning": {"groups": {"service": {"suitability": "profile.age >>> 2"}}}}
        )


def test_a_dry_run_changes_nothing(tmp_path: Any) -> None:
    from decisioning.config import LogsSpec
    from decisioning.stores.decision_log import DecisionLog
    from tests.unit.models import tiny_model

    cfg = _config()
    logs = DecisionLog(str(tmp_path / "logs"), 0, LogsSpec(roll_s=3600))
    shard = Shard(
        0, cfg, [tiny_model(cfg)], clock=Clock(), log_dir=str(tmp_path / "wal"), logs=logs
    )
    edge.apply_events(
        shard,
        [{"customer_id": "c", "type": "profile_update", "ts": NOW, "properties": {"age": 30}}],
    )
    digest, stats = shard.state_digest(), dict(shard.variant_stats)
    wal = shard.wal.bytes if shard.wal else 0
    for _ in range(5):
        d = edge.decide(
            shard,
            {
                "customer_id": "c",
                "channel": "web",
                "dry_run": True,
                "explain": True,
                "event": {"type": "page_view", "ts": NOW, "properties": {}},
            },
        )
        assert d["actions"]
    assert shard.state_digest() == digest  # profiles, decisions, idempotency keys
    assert shard.variant_stats == stats
    assert (shard.wal.bytes if shard.wal else 0) == wal
    assert edge.get_profile(shard, "c")["recent_decisions"] == []
    logs.flush()
    assert not list((tmp_path / "logs").rglob("*.parquet"))
    shard.close()
