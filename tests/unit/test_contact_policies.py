"""Contact policies hold exactly: suppression after outcomes, channel and group caps,
mandatory actions pass (and count), the history survives a crash and a snapshot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from actors.shard import Shard
from decisioning.config import Config
from decisioning.loader import config_from_dict
from tests.conftest import SMALL, examples
from tests.unit.test_decide import NOW, Clock

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
    shard.record_outcomes(
        [
            {
                "decision_id": d["decision_id"],
                "action_id": action or d["actions"][0]["action_id"],
                "outcome": kind,
            }
        ]
    )


def test_a_reject_suppresses_the_action_for_its_period() -> None:
    clock = Clock()
    shard = Shard(0, _config(), clock=clock)
    d = shard.decide({"customer_id": "c", "channel": "web"})
    assert _ids(d) == ["card"]
    _outcome(shard, d, "reject")
    d = shard.decide({"customer_id": "c", "channel": "web", "explain": True})
    assert _ids(d) == ["gold"]
    card = next(e for e in d["explanation"] if e["action_id"] == "card")
    assert card["stage"] == "contact policy" and "1 reject within 30d" in card["rule"]
    clock.t = NOW + 31 * DAY
    assert _ids(shard.decide({"customer_id": "c", "channel": "web"})) == ["card"]


def test_three_impressions_in_a_week_suppress_for_two_days() -> None:
    clock = Clock()
    shard = Shard(0, _config(), clock=clock)
    for _ in range(3):
        d = shard.decide({"customer_id": "c", "channel": "web"})
        assert _ids(d) == ["card"]
        _outcome(shard, d, "impression")
        clock.t += 3600
    assert _ids(shard.decide({"customer_id": "c", "channel": "web"})) == ["gold"]
    clock.t = NOW + 2 * 3600 + 2 * DAY + 1  # two days after the third
    assert _ids(shard.decide({"customer_id": "c", "channel": "web"})) == ["card"]


def test_channel_cap_per_day_and_mandatory_actions() -> None:
    clock = Clock()
    shard = Shard(0, _config(channel_caps={"email": {"per_day": 2}}), clock=clock)
    for _ in range(2):
        assert _ids(shard.decide({"customer_id": "c", "channel": "email"})) == ["card"]
    d = shard.decide({"customer_id": "c", "channel": "email", "explain": True})
    assert _ids(d) == ["alert"]  # mandatory: not capped...
    assert "channel cap: 2 contacts on email in 1d" in next(
        e["rule"] for e in d["explanation"] if e["action_id"] == "card"
    )
    assert _ids(shard.decide({"customer_id": "c", "channel": "web"})) == ["card"]  # other channel
    clock.t += DAY + 1  # ...but counted: the window slides past the first two only now
    assert _ids(shard.decide({"customer_id": "c", "channel": "email"})) == ["card"]


def test_group_cap_across_and_within_decisions() -> None:
    shard = Shard(0, _config(group_caps={"cards": {"count": 1, "within": "7d"}}), clock=Clock())
    d = shard.decide({"customer_id": "c", "channel": "web", "limit": 3})
    assert _ids(d) == ["card", "loan", "alert"]  # one card only, though gold ranks second
    d = shard.decide({"customer_id": "c", "channel": "web", "limit": 3, "explain": True})
    assert _ids(d) == ["loan", "alert"]
    gold = next(e for e in d["explanation"] if e["action_id"] == "gold")
    assert gold["rule"].startswith("group cap: 1 of cards in 7d")


def test_a_mandatory_action_counts_against_its_group_in_the_same_answer() -> None:
    cfg = _config(alert_group="cards", group_caps={"cards": {"count": 1, "within": "7d"}})
    shard = Shard(0, cfg, clock=Clock())
    d = shard.decide({"customer_id": "c", "channel": "web", "limit": 3, "explain": True})
    assert _ids(d) == ["loan", "alert"]  # card ranks first, but the alert takes its place
    card = next(e for e in d["explanation"] if e["action_id"] == "card")
    assert card["why_not"] == "group cap: only 1 more of group cards may go now"


def test_history_survives_a_crash_and_a_snapshot(tmp_path: Path) -> None:
    cfg = _config(channel_caps={"email": {"per_day": 1}})
    clock = Clock()
    shard = Shard(0, cfg, clock=clock, log_dir=str(tmp_path))
    d = shard.decide({"customer_id": "c", "channel": "web"})
    _outcome(shard, d, "reject")
    shard.decide({"customer_id": "c", "channel": "email"})
    shard.flush()  # durable; then the process dies

    def check(s: Shard) -> None:
        assert _ids(s.decide({"customer_id": "c", "channel": "web", "dry_run": True})) == ["gold"]
        assert _ids(s.decide({"customer_id": "c", "channel": "email", "dry_run": True})) == [
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
    third.erase_profile("c")
    assert third.contacts.rows() == []


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("decide"), st.sampled_from(["web", "email"]), st.integers(1, 3)),
        st.tuples(
            st.just("outcome"),
            st.sampled_from(["impression", "reject", "accept"]),
            st.integers(0, 2),
        ),
        st.tuples(
            st.just("wait"), st.sampled_from([60.0, 3600.0, 20 * 3600.0, 3 * DAY]), st.just(0)
        ),
    ),
    max_size=40,
)


@examples(120)
@given(ops=OPS)
def test_caps_are_never_exceeded_under_any_interleaving(ops: list[tuple[Any, Any, Any]]) -> None:
    cfg = _config(
        channel_caps={"email": {"per_day": 2}, "web": {"per_week": 5}},
        group_caps={"cards": {"count": 2, "within": "2d"}},
    )
    clock = Clock()
    shard = Shard(0, cfg, clock=clock)
    shown: list[tuple[float, str, list[str]]] = []  # ts, channel, actions (the answers)
    outcomes: list[tuple[float, str, str]] = []  # ts, action, kind
    last: dict[str, Any] | None = None
    for op, a, b in ops:
        if op == "wait":
            clock.t += a
        elif op == "decide":
            d = shard.decide({"customer_id": "c", "channel": a, "limit": b})
            ids = [x for x in _ids(d) if x != "alert"]  # mandatory: exempt
            now = clock.t
            caps = {"email": (2, DAY), "web": (5, 7 * DAY)}
            n, window = caps[a]
            before = [s for s in shown if s[1] == a and now - window < s[0] <= now and s[2]]
            if ids:
                assert len(before) < n, (a, before)
            cards = sum(
                x in ("card", "gold") for s in shown if now - 2 * DAY < s[0] <= now for x in s[2]
            )
            assert cards + sum(x in ("card", "gold") for x in ids) <= 2 or not ids
            rejected = [
                t for t, x, k in outcomes if x == "card" and k == "reject" and now - 30 * DAY < t
            ]
            if rejected:
                assert "card" not in ids
            shown.append((now, a, _ids(d)))
            last = d if d["actions"] else last
        elif last is not None and a and b < len(last["actions"]):
            action = last["actions"][b]["action_id"]
            _outcome(shard, last, a, action)
            outcomes.append((clock.t, action, a))
