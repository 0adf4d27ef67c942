"""Contact policies, case by case: suppression after outcomes, channel and group caps,
mandatory actions pass (and count), the history survives a crash and a snapshot. The
property over random interleavings is in test_contact_oracle.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from actors.shard import Shard
from decisioning.config import Config
from decisioning.config.loader import config_from_dict
from tests.conftest import SMALL
from tests.unit import edge
from tests.unit.decisioning.policy.test_decide import NOW, Clock

DAY = 86400.0


def _config(alert_group: str = "service", **decisioning: Any) -> Config:
    actions = [
        {
            "id": "card",
            "group": "cards",
            "channels": ["web", "email"],
            "value": 100,
            "suppress": [
                {"outcome": "reject", "count": 1, "within": "30d"},
                {"outcome": "impression", "count": 3, "within": "7d", "for": "2d"},
            ],
        },
        {"id": "gold", "group": "cards", "channels": ["web", "email"], "value": 90},
        {"id": "loan", "group": "loans", "channels": ["web", "email"], "value": 50},
        {
            "id": "alert",
            "group": alert_group,
            "channels": ["web", "email"],
            "value": 1,
            "mandatory": True,
        },
    ]
    return config_from_dict(
        {
            **SMALL,
            "actions": actions,
            "decisioning": {"default_propensity": 0.5, "default_limit": 1, **decisioning},
        }
    )


def _ids(d: dict[str, Any]) -> list[str]:
    return [a["action_id"] for a in d["actions"]]


def _outcome(shard: Shard, d: dict[str, Any], kind: str, action: str | None = None) -> None:
    edge.record_outcomes(
        shard,
        [
            {
                "decision_id": d["decision_id"],
                "action_id": action or d["actions"][0]["action_id"],
                "outcome": kind,
            }
        ],
    )


def test_a_reject_suppresses_the_action_for_its_period() -> None:
    clock = Clock()
    shard = Shard(0, _config(), clock=clock)
    d = edge.decide(shard, {"customer_id": "c", "channel": "web"})
    assert _ids(d) == ["card"]
    _outcome(shard, d, "reject")
    d = edge.decide(shard, {"customer_id": "c", "channel": "web", "explain": True})
    assert _ids(d) == ["gold"]
    card = next(e for e in d["explanation"] if e["action_id"] == "card")
    assert card["stage"] == "contact policy" and "1 reject within 30d" in card["rule"]
    clock.t = NOW + 31 * DAY
    assert _ids(edge.decide(shard, {"customer_id": "c", "channel": "web"})) == ["card"]


def test_three_impressions_in_a_week_suppress_for_two_days() -> None:
    clock = Clock()
    shard = Shard(0, _config(), clock=clock)
    for _ in range(3):
        d = edge.decide(shard, {"customer_id": "c", "channel": "web"})
        assert _ids(d) == ["card"]
        _outcome(shard, d, "impression")
        clock.t += 3600
    assert _ids(edge.decide(shard, {"customer_id": "c", "channel": "web"})) == ["gold"]
    clock.t = NOW + 2 * 3600 + 2 * DAY + 1  # two days after the third
    assert _ids(edge.decide(shard, {"customer_id": "c", "channel": "web"})) == ["card"]


def test_channel_cap_per_day_and_mandatory_actions() -> None:
    clock = Clock()
    shard = Shard(0, _config(channel_caps={"email": {"per_day": 2}}), clock=clock)
    for _ in range(2):
        assert _ids(edge.decide(shard, {"customer_id": "c", "channel": "email"})) == ["card"]
    d = edge.decide(shard, {"customer_id": "c", "channel": "email", "explain": True})
    assert _ids(d) == ["alert"]  # mandatory: not capped...
    assert "channel cap: 2 contacts on email in 1d" in next(
        e["rule"] for e in d["explanation"] if e["action_id"] == "card"
    )
    assert _ids(edge.decide(shard, {"customer_id": "c", "channel": "web"})) == [
        "card"
    ]  # other channel
    clock.t += DAY + 1  # ...but counted: the window slides past the first two only now
    assert _ids(edge.decide(shard, {"customer_id": "c", "channel": "email"})) == ["card"]


def test_group_cap_across_and_within_decisions() -> None:
    shard = Shard(0, _config(group_caps={"cards": {"count": 1, "within": "7d"}}), clock=Clock())
    d = edge.decide(shard, {"customer_id": "c", "channel": "web", "limit": 3})
    assert _ids(d) == ["card", "loan", "alert"]  # one card only, though gold ranks second
    d = edge.decide(shard, {"customer_id": "c", "channel": "web", "limit": 3, "explain": True})
    assert _ids(d) == ["loan", "alert"]
    gold = next(e for e in d["explanation"] if e["action_id"] == "gold")
    assert gold["rule"].startswith("group cap: 1 of cards in 7d")


def test_a_mandatory_action_counts_against_its_group_in_the_same_answer() -> None:
    cfg = _config(alert_group="cards", group_caps={"cards": {"count": 1, "within": "7d"}})
    shard = Shard(0, cfg, clock=Clock())
    d = edge.decide(shard, {"customer_id": "c", "channel": "web", "limit": 3, "explain": True})
    assert _ids(d) == ["loan", "alert"]  # card ranks first, but the alert takes its place
    card = next(e for e in d["explanation"] if e["action_id"] == "card")
    assert card["why_not"] == "group cap: only 1 more of group cards may go now"


def test_history_survives_a_crash_and_a_snapshot(tmp_path: Path) -> None:
    cfg = _config(channel_caps={"email": {"per_day": 1}})
    clock = Clock()
    shard = Shard(0, cfg, clock=clock, log_dir=str(tmp_path))
    d = edge.decide(shard, {"customer_id": "c", "channel": "web"})
    _outcome(shard, d, "reject")
    edge.decide(shard, {"customer_id": "c", "channel": "email"})
    shard.flush()  # durable; then the process dies

    def check(s: Shard) -> None:
        assert _ids(edge.decide(s, {"customer_id": "c", "channel": "web", "dry_run": True})) == [
            "gold"
        ]
        assert _ids(edge.decide(s, {"customer_id": "c", "channel": "email", "dry_run": True})) == [
            "alert"
        ]

    again = Shard(0, cfg, clock=clock, log_dir=str(tmp_path))  # WAL replay
    check(again)
    assert again.state_digest() == shard.state_digest()
    again.snapshot()
    again.close()
    third = Shard(0, cfg, clock=clock, log_dir=str(tmp_path))  # from the snapshot
    check(third)
    assert third.state_digest() == shard.state_digest()
    edge.erase_profile(third, "c")
    assert third.contacts.rows() == []
