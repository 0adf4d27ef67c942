"""Channel choice for outbound decisions: consent, the channel's own rule, contact
policies, cost and the customer's preference pick the channel; one message at most."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.shard import Shard
from decisioning.config import Config
from decisioning.config.loader import config_from_dict
from decisioning.errors import ConfigError, InvalidInput
from decisioning.policy.decide import Decision, ScoredAction, choose_channel
from tests.conftest import SMALL, examples
from tests.unit import edge
from tests.unit.decisioning.policy.test_decide import NOW, Clock

ACTIONS = [
    {"id": "small_offer", "group": "cards", "channels": ["email", "sms"], "value": 20},
    {"id": "big_offer", "group": "loans", "channels": ["email"], "value": 600},
    {"id": "retention_call", "group": "retention", "channels": ["call_center"], "value": 900},
    {"id": "banner", "group": "cards", "channels": ["web"], "value": 5},
]


def _data(**outbound: Any) -> dict[str, Any]:
    return {
        **SMALL,
        "channels": ["web", "email", "sms", "call_center"],
        "profile": {
            **SMALL["profile"],
            "attributes": [
                *SMALL["profile"]["attributes"],
                {"name": "clv", "type": "numeric"},
                {
                    "name": "preferred",
                    "type": "categorical",
                    "values": ["email", "sms", "call_center"],
                },
            ],
        },
        "actions": ACTIONS,
        "decisioning": {
            "default_propensity": 0.5,
            "outbound": {
                "channels": ["email", "sms", "call_center"],
                "costs": {"email": 0.1, "sms": 1.0, "call_center": 50.0},
                "rules": {"call_center": "coalesce(profile.clv, 0) >= 1000"},
                "preference_attribute": "preferred",
                **outbound,
            },
        },
    }


def _config(**outbound: Any) -> Config:
    return config_from_dict(_data(**outbound))


def _shard(config: Config, **attributes: Any) -> Shard:
    shard = Shard(0, config, clock=Clock())
    consent = attributes.pop("consent", None)
    events = [{"customer_id": "c", "type": "profile_update", "ts": NOW, "properties": attributes}]
    if consent:
        events.append({"customer_id": "c", "type": "consent", "ts": NOW, "properties": consent})
    edge.apply_events(shard, events)
    return shard


def _out(shard: Shard, **request: Any) -> dict[str, Any]:
    return edge.decide(shard, {"customer_id": "c", "channel": "outbound", **request})


def test_the_best_net_priority_wins_and_the_channel_rule_holds() -> None:
    # low CLV: no agent call (the channel's rule); email's big offer beats the SMS
    d = _out(_shard(_config(), clv=200))
    assert (d["channel"], [a["action_id"] for a in d["actions"]]) == ("email", ["big_offer"])
    assert d["actions"][0]["channel"] == "email"
    choice = d["channel_choice"]
    assert choice["reason"] == "best net priority"
    assert choice["channels"]["call_center"]["action_id"] is None  # the rule removed it
    assert choice["channels"]["sms"] == {
        "action_id": "small_offer",
        "priority": 10.0,
        "cost": 1.0,
        "net": 9.0,
    }
    # high CLV: the agent call (0.5 × 900 − 50 = 400) beats the email (300 − 0.1)
    d = _out(_shard(_config(), clv=5000))
    assert (d["channel"], [a["action_id"] for a in d["actions"]]) == (
        "call_center",
        ["retention_call"],
    )


def test_consent_and_preference() -> None:
    # no to email: the SMS goes
    d = _out(_shard(_config(), clv=200, consent={"email": False}))
    assert (d["channel"], [a["action_id"] for a in d["actions"]]) == ("sms", ["small_offer"])
    # the customer prefers SMS: it wins over a better email while something goes on it
    d = _out(_shard(_config(), clv=200, preferred="sms"))
    assert (d["channel"], d["channel_choice"]["reason"]) == ("sms", "preferred")
    # prefers the call centre, but nothing may go there: the best of the rest
    d = _out(_shard(_config(), clv=200, preferred="call_center"))
    assert (d["channel"], d["channel_choice"]["reason"]) == ("email", "best net priority")


def test_nothing_anywhere_is_an_answer_of_nothing() -> None:
    shard = _shard(_config(), clv=200, consent={"email": False, "sms": False})
    d = _out(shard, explain=True)
    assert d["actions"] == []
    assert d["channel_choice"]["reason"] == "nothing goes anywhere"
    assert d["channel"] == "email"  # the first outbound channel carries the empty answer
    assert all(e["eligible"] is False for e in d["explanation"][:-1])


def test_a_contact_must_beat_doing_nothing_by_its_cost() -> None:
    # SMS costs more than the small offer's 0.5 × 20 = 10 is worth
    cfg = _config(costs={"email": 0.1, "sms": 15.0, "call_center": 50.0})
    d = _out(_shard(cfg, clv=200, consent={"email": False}), explain=True)
    assert d["actions"] == []
    assert d["channel_choice"]["channels"]["sms"]["action_id"] is None
    # the SMS channel alone: the explanation shows doing nothing at its cost
    only_sms = _config(channels=["sms"], costs={"sms": 15.0})
    d = _out(_shard(only_sms, clv=200), explain=True)
    assert d["channel"] == "sms" and d["actions"] == []
    why = {e["action_id"]: e.get("why_not") for e in d["explanation"]}
    assert why["small_offer"] == "priority not above doing nothing"
    assert d["explanation"][-1] == {
        "action_id": None,
        "do_nothing": True,
        "eligible": True,
        "priority": 15.0,
        "chosen": True,
        "contact_cost": 15.0,
    }


def test_one_message_and_it_is_recorded_on_its_channel() -> None:
    cfg = config_from_dict(
        {
            **_data(),
            "decisioning": {**_data()["decisioning"], "channel_caps": {"email": {"per_day": 1}}},
        }
    )
    shard = _shard(cfg, clv=200)
    first = _out(shard, limit=5)
    assert len(first["actions"]) == 1 and first["channel"] == "email"
    # the email cap is used: the next outbound decision goes by SMS
    second = _out(shard)
    assert (second["channel"], second["actions"][0]["action_id"]) == ("sms", "small_offer")
    assert second["channel_choice"]["channels"]["email"]["action_id"] is None
    # a dry run neither records nor moves the choice
    assert _out(shard, dry_run=True)["channel"] == "sms"
    assert _out(shard)["channel"] == "sms"  # SMS has no cap


def test_the_request_event_is_applied_before_the_channel_is_chosen() -> None:
    shard = _shard(_config(), clv=200)
    event = {"type": "consent", "ts": NOW, "properties": {"email": False}}
    assert _out(shard, event=event)["channel"] == "sms"


def test_inbound_decisions_ignore_the_outbound_rules_and_costs() -> None:
    shard = _shard(_config(costs={"call_center": 10_000.0}), clv=0)
    d = edge.decide(shard, {"customer_id": "c", "channel": "call_center"})
    assert [a["action_id"] for a in d["actions"]] == ["retention_call"]
    assert "channel_choice" not in d


def test_outbound_without_outbound_channels_is_refused() -> None:
    shard = Shard(0, config_from_dict(SMALL), clock=Clock())
    with pytest.raises(InvalidInput) as e:
        edge.decide(shard, {"customer_id": "c", "channel": "outbound"})
    assert e.value.code == "unknown_channel" and "decisioning.outbound" in e.value.message


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"channels": ["web", "outbound"]}, "'outbound' is reserved"),
        ({"decisioning": {"outbound": {"channels": ["fax"]}}}, "unknown channels: fax"),
        ({"decisioning": {"outbound": {"costs": {"email": -1}}}}, "greater than or equal"),
        ({"decisioning": {"outbound": {"rules": {"email": "profile.nope > 1"}}}}, "nope"),
        (
            {"decisioning": {"outbound": {"channels": ["email"], "preference_attribute": "age"}}},
            "not a categorical profile attribute",
        ),
    ],
)
def test_outbound_settings_are_checked_at_load(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        config_from_dict({**SMALL, **change})
    assert message in str(e.value)


def _probe(channel: str, priority: float | None) -> Decision:
    actions = (
        []
        if priority is None
        else [ScoredAction("a", "g", channel, 0.5, 1.0, 1.0, 1.0, priority, None)]
    )
    return Decision("p", "c", NOW, channel, None, actions, 1, len(actions), [])


@examples(200)
@given(
    priorities=st.lists(st.none() | st.floats(0, 1e6), min_size=1, max_size=5),
    costs=st.lists(st.floats(0, 1e3), min_size=5, max_size=5),
    preferred=st.none() | st.integers(0, 5),
)
def test_choose_channel_properties(
    priorities: list[float | None], costs: list[float], preferred: int | None
) -> None:
    channels = [f"ch{i}" for i in range(len(priorities))]
    probes = {ch: _probe(ch, p) for ch, p in zip(channels, priorities, strict=True)}
    cost = dict(zip(channels, costs, strict=False))
    choice = choose_channel(probes, cost, None if preferred is None else f"ch{preferred}")
    going = [ch for ch, p in zip(channels, priorities, strict=True) if p is not None]
    if not going:
        assert (choice.channel, choice.reason) == ("ch0", "nothing goes anywhere")
    elif preferred is not None and f"ch{preferred}" in going:
        assert (choice.channel, choice.reason) == (f"ch{preferred}", "preferred")
    else:
        nets = {ch: choice.channels[ch]["net"] for ch in going}
        assert choice.channel in going and nets[choice.channel] == max(nets.values())
        first_best = next(ch for ch in going if nets[ch] == max(nets.values()))
        assert choice.channel == first_best
