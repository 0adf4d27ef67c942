"""The wire bodies built at the edge (serving/bodies.py) from a real shard's typed
results: the keys, their order and their values are the ones the v1 API has always
sent, in JSON and in msgpack (tests/unit/serving/test_answers.py checks them against the
OpenAPI document; this checks what the document does not: order and exact values)."""

from __future__ import annotations

import json
from typing import Any

import msgpack

from actors.messages import Decide, EraseProfile, GetProfile, LeaseOutbound
from actors.shard import Shard
from decisioning.config import OUTBOUND
from serving.bodies import decision_body, erased_body, message_body, opened_body, profile_body
from serving.wire import encode_body
from tests.unit import edge
from tests.unit.actors.shard.test_triggers import _config as trigger_config
from tests.unit.decisioning.policy.test_decide import NOW, Clock
from tests.unit.decisioning.policy.test_outbound import _config as outbound_config

DECISION_KEYS = ["decision_id", "customer_id", "ts", "channel", "placement", "model_version",
                 "actions"]  # fmt: skip
ACTION_KEYS = ["action_id", "group", "channel", "propensity", "value", "priority",
               "model_version"]  # fmt: skip


def _both(body: dict[str, Any]) -> None:
    """JSON and msgpack carry the body as it is, in its order."""
    raw, _ = encode_body(body, "application/json")
    assert list(json.loads(raw)) == list(body)
    packed, _ = encode_body(body, "application/msgpack")
    assert msgpack.unpackb(packed, raw=False) == body


def test_a_decision_body_is_the_decision_then_its_variant_then_its_channel_choice() -> None:
    shard = Shard(0, outbound_config(), clock=Clock())
    edge.apply_events(shard, [{"customer_id": "c", "type": "page_view", "ts": NOW}])
    plain = decision_body(shard.decide(Decide("c", "web")))
    assert list(plain) == [*DECISION_KEYS, "variant"]
    assert plain["variant"] == "champion" and plain["customer_id"] == "c"
    assert all(list(a) == ACTION_KEYS for a in plain["actions"])
    explained = decision_body(shard.decide(Decide("c", OUTBOUND, explain=True)))
    assert list(explained) == [*DECISION_KEYS, "explanation", "variant", "channel_choice"]
    assert list(explained["channel_choice"]) == ["channel", "reason", "channels"]
    opened = opened_body(shard.decide(Decide("c", "web")), "d-0000-00")
    assert list(opened) == [*DECISION_KEYS, "variant", "message_id"]
    for body in (plain, explained, opened):
        _both(body)


def test_profile_and_erasure_bodies_keep_their_order() -> None:
    shard = Shard(0, outbound_config(), clock=Clock())
    edge.apply_events(shard, [{"customer_id": "c", "type": "page_view", "ts": NOW}])
    d = decision_body(shard.decide(Decide("c", "web", limit=2)))
    profile = profile_body(shard.get_profile(GetProfile("c")))
    assert list(profile) == ["customer_id", "known", "attributes", "aggregates", "consent",
                             "recent_decisions", "shard"]  # fmt: skip
    [recent] = profile["recent_decisions"]
    assert recent == {
        "decision_id": d["decision_id"],
        "ts": NOW,
        "channel": "web",
        "placement": None,
        "actions": [a["action_id"] for a in d["actions"]],
        "model_version": None,
    }
    assert list(recent) == ["decision_id", "ts", "channel", "placement", "actions",
                            "model_version"]  # fmt: skip
    erased = erased_body(shard.erase_profile(EraseProfile("c")))
    assert erased == {"customer_id": "c", "erased": True, "decisions_removed": 1}
    assert list(erased) == ["customer_id", "erased", "decisions_removed"]
    for body in (profile, erased):
        _both(body)


def test_a_message_body_carries_its_decision_as_decide_answered_it() -> None:
    shard = Shard(0, trigger_config(), clock=Clock())
    edge.apply_events(shard, [{"customer_id": "c", "type": "address_change", "ts": NOW}])
    [leased] = shard.lease_outbound(LeaseOutbound("email", 10))
    body = message_body(leased)
    assert list(body) == ["id", "open_token", "idempotency_key", "customer_id", "channel",
                          "trigger", "queued_at", "actions", "decision"]  # fmt: skip
    assert body["id"] == body["idempotency_key"] == body["decision"]["decision_id"]
    assert list(body["decision"]) == [*DECISION_KEYS, "variant"]
    assert body["actions"] == body["decision"]["actions"] and body["open_token"] is None
    _both(body)
