"""The decision loop through real HTTP: Serve ingress -> shard actors -> LightGBM."""

from __future__ import annotations

import json
import math
import time
import uuid

import httpx
import msgpack
import pytest

from decisioning.profile.slots import contiguous_map, slot_of
from tests.integration.harness import Server

JSON = {"content-type": "application/json"}
MSGPACK = {"content-type": "application/msgpack", "accept": "application/msgpack"}


def cid() -> str:
    return f"it-{uuid.uuid4().hex[:10]}"


def on_both_shards(n: int) -> list[str]:
    """n fresh customer ids, at least one owned by each of the two shards."""
    owners = contiguous_map(2)
    ids: list[str] = []
    while len(ids) < n or len({owners[slot_of(c)] for c in ids}) < 2:
        ids.append(cid())
    return ids


def decide(client: httpx.Client, customer: str, **kw: object) -> dict:
    r = client.post("/v1/decide", json={"customer_id": customer, "channel": "web", **kw})
    assert r.status_code == 200, r.text
    return r.json()


def test_health_and_docs(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json()["ready"] is True
    spec = client.get("/openapi.json").json()
    assert "/v1/decide" in spec["paths"]
    body = spec["paths"]["/v1/decide"]["post"]["requestBody"]["content"]
    assert set(body) == {"application/json", "application/msgpack"}
    assert client.get("/docs").status_code == 200


def test_cold_start_gets_a_scored_decision(server: Server, client: httpx.Client) -> None:
    d = decide(client, cid(), limit=5)
    assert d["decision_id"].startswith("d-")
    assert d["model_version"] == server.model.manifest.ref
    assert d["actions"], "an unknown customer still gets actions (cold start)"
    for a in d["actions"]:
        assert set(a) >= {"action_id", "channel", "propensity", "value", "priority"}
        assert a["channel"] == "web"
    priorities = [a["priority"] for a in d["actions"]]
    assert priorities == sorted(priorities, reverse=True)


def test_events_change_the_profile_and_so_the_decision(client: httpx.Client) -> None:
    c = cid()
    before = decide(client, c, channel="call_center", limit=20, explain=True)
    eligible = {e["action_id"] for e in before["explanation"] if e["eligible"]}
    assert "retention_call" not in eligible  # needs a complaint in the last 30 days
    now = time.time()
    r = client.post(
        "/v1/events",
        json=[
            {"customer_id": c, "type": "complaint", "ts": now, "properties": {"topic": "fees"}},
            {
                "customer_id": c,
                "type": "profile_update",
                "ts": now,
                "properties": {"age": 45, "credit_score": 720, "segment": "affluent"},
            },
        ],
    )
    assert r.json() == {"accepted": 2}
    profile = client.get(f"/v1/profiles/{c}").json()
    assert profile["aggregates"]["complaints_30d"] == 1.0
    assert profile["attributes"]["segment"] == "affluent"
    after = decide(client, c, channel="call_center", limit=20, explain=True)
    eligible = {e["action_id"] for e in after["explanation"] if e["eligible"]}
    assert "retention_call" in eligible
    assert "retention_call" in [a["action_id"] for a in after["actions"]]
    assert len(client.get(f"/v1/profiles/{c}").json()["recent_decisions"]) == 2


def test_triggering_event_is_applied_before_deciding(client: httpx.Client) -> None:
    c = cid()
    d = decide(
        client,
        c,
        channel="call_center",
        limit=20,
        event={"type": "complaint", "properties": {"topic": "app"}},
    )
    assert "retention_call" in [a["action_id"] for a in d["actions"]]


def test_outbound_decisions_choose_one_channel(client: httpx.Client) -> None:
    c = cid()
    d = decide(client, c, channel="outbound", limit=5, explain=True)
    choice = d["channel_choice"]
    assert list(choice["channels"]) == ["email", "sms", "call_center"]  # the catalog's
    going = {ch: row["net"] for ch, row in choice["channels"].items() if row["net"] is not None}
    assert going, choice  # a cold start gets something by some channel
    assert d["channel"] == max(going, key=lambda ch: going[ch])
    assert len(d["actions"]) == 1 and d["actions"][0]["channel"] == d["channel"]
    assert d["actions"][0]["action_id"] == choice["channels"][d["channel"]]["action_id"]
    # consent withdrawn everywhere (in the request's own event): nothing goes
    no = {"type": "consent", "properties": {"email": False, "sms": False, "call_center": False}}
    d = decide(client, c, channel="outbound", event=no)
    assert (d["actions"], d["channel_choice"]["reason"]) == ([], "nothing goes anywhere")


def test_msgpack_both_ways(client: httpx.Client) -> None:
    c = cid()
    body = msgpack.packb(
        {"customer_id": c, "type": "page_view", "ts": time.time(), "properties": {"page": "cards"}}
    )
    r = client.post("/v1/events", content=body, headers=MSGPACK)
    assert r.headers["content-type"] == "application/msgpack"
    assert msgpack.unpackb(r.content) == {"accepted": 1}
    body = msgpack.packb({"customer_id": c, "channel": "app", "limit": 2})
    r = client.post("/v1/decide", content=body, headers=MSGPACK)
    d = msgpack.unpackb(r.content)
    assert d["customer_id"] == c and len(d["actions"]) <= 2
    # msgpack in, JSON out
    r = client.post("/v1/decide", content=body, headers={"content-type": "application/msgpack"})
    assert r.json()["customer_id"] == c


def test_outcomes_feed_the_profile(client: httpx.Client) -> None:
    c = cid()
    d = decide(client, c, limit=1)
    action = d["actions"][0]["action_id"]
    r = client.post(
        "/v1/outcomes",
        json=[
            {"decision_id": d["decision_id"], "action_id": action, "outcome": "impression"},
            {"decision_id": d["decision_id"], "action_id": action, "outcome": "accept"},
        ],
    )
    assert r.json() == {"accepted": 2}
    aggs = client.get(f"/v1/profiles/{c}").json()["aggregates"]
    assert (aggs["impressions_7d"], aggs["accepts_30d"]) == (1.0, 1.0)


def test_dry_run_records_nothing(client: httpx.Client) -> None:
    c = cid()
    d = decide(client, c, dry_run=True, event={"type": "complaint"})
    profile = client.get(f"/v1/profiles/{c}").json()
    assert profile["known"] is False and profile["recent_decisions"] == []
    r = client.post(
        "/v1/outcomes", json={"decision_id": d["decision_id"], "action_id": "x", "outcome": "click"}
    )
    assert r.status_code == 404


BAD = [
    # (path, body bytes, headers, status, code)
    ("/v1/events", b"{not json", JSON, 400, "invalid_json"),
    ("/v1/events", b"\xc1\xc1", {"content-type": "application/msgpack"}, 400, "invalid_msgpack"),
    ("/v1/events", b'{"customer_id": "c", "type": "x", "ts": NaN}', JSON, 400, "invalid_json"),
    ("/v1/events", b'{"customer_id": "c", "type": "x", "ts": 1e999}', JSON, 422, "invalid_field"),
    ("/v1/events", b'{"type": "x"}', JSON, 422, "missing_field"),
    ("/v1/events", b'{"customer_id": "c", "type": "x", "extra": 1}', JSON, 422, "unknown_field"),
    ("/v1/events", b'{"customer_id": 7, "type": "x"}', JSON, 422, "invalid_field"),
    ("/v1/events", b"[]", JSON, 422, "empty_batch"),
    ("/v1/events", b'"just a string"', JSON, 422, "invalid_field"),
    (
        "/v1/events",
        b'{"customer_id": "c", "type": "profile_update", "properties": {"age": "x"}}',
        JSON,
        422,
        "invalid_field",
    ),
    (
        "/v1/events",
        b'{"customer_id": "c", "type": "consent", "properties": {"fax": true}}',
        JSON,
        422,
        "unknown_channel",
    ),
    ("/v1/events", b"{}", {"content-type": "text/csv"}, 415, "unsupported_media_type"),
    ("/v1/decide", b'{"customer_id": "c", "channel": "fax"}', JSON, 422, "unknown_channel"),
    (
        "/v1/decide",
        b'{"customer_id": "c", "channel": "web", "limit": 0}',
        JSON,
        422,
        "invalid_field",
    ),
    (
        "/v1/decide",
        b'{"customer_id": "c", "channel": "web", "limit": 50}',
        JSON,
        422,
        "invalid_field",
    ),
    (
        "/v1/decide",
        b'{"customer_id": "c", "channel": "web", "context": {"a": [1]}}',
        JSON,
        422,
        "invalid_field",
    ),
    ("/v1/decide", b'{"customer_id": "c"}', JSON, 422, "missing_field"),
    (
        "/v1/outcomes",
        b'{"decision_id": "d-0000-00", "action_id": "a", "outcome": "accept"}',
        JSON,
        404,
        "unknown_decision",
    ),
    (
        "/v1/outcomes",
        b'{"decision_id": "nonsense", "action_id": "a", "outcome": "accept"}',
        JSON,
        404,
        "unknown_decision",
    ),
    (
        "/v1/outcomes",
        b'{"decision_id": "d-0000-00", "action_id": "a", "outcome": "love"}',
        JSON,
        422,
        "invalid_field",
    ),
    ("/v1/nowhere", b"{}", JSON, 404, "not_found"),
]


@pytest.mark.parametrize("path, body, headers, status, code", BAD)
def test_bad_input_gets_a_coded_4xx(
    client: httpx.Client, path: str, body: bytes, headers: dict, status: int, code: str
) -> None:
    r = client.post(path, content=body, headers=headers)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code
    assert r.json()["error"]["message"]


def test_nan_in_msgpack_and_oversized_bodies(server: Server, client: httpx.Client) -> None:
    body = msgpack.packb({"customer_id": "c", "type": "x", "ts": math.nan})
    r = client.post("/v1/events", content=body, headers=MSGPACK)
    assert r.status_code == 422
    assert msgpack.unpackb(r.content)["error"]["field"] == "ts"
    big = b"[" + b",".join([b'{"customer_id":"c","type":"x"}'] * 40000) + b"]"
    assert len(big) > server.config.server.max_body_bytes
    r = client.post("/v1/events", content=big, headers=JSON)
    assert (r.status_code, r.json()["error"]["code"]) == (413, "body_too_large")
    many = [{"customer_id": "c", "type": "x"}] * (server.config.server.max_batch + 1)
    r = client.post("/v1/events", json=many)
    assert (r.status_code, r.json()["error"]["code"]) == (413, "batch_too_large")
    r = client.post("/v1/events", json=many[:-1])  # exactly max_batch
    assert r.status_code == 200 and r.json() == {"accepted": server.config.server.max_batch}
    assert client.get("/healthz").status_code == 200  # still up


def test_a_batch_with_one_bad_event_applies_nothing(client: httpx.Client) -> None:
    customers = on_both_shards(6)
    batch = [
        {"customer_id": c, "type": "page_view", "properties": {"page": "cards"}} for c in customers
    ]
    batch.append(
        {
            "customer_id": customers[0],
            "type": "profile_update",
            "properties": {"segment": "platinum"},
        }
    )
    r = client.post("/v1/events", json=batch)
    assert r.status_code == 422
    assert r.json()["error"]["field"] == f"[{len(customers)}].properties.segment"
    for c in customers:
        assert client.get(f"/v1/profiles/{c}").json()["known"] is False


def test_outcome_batch_across_shards_is_all_or_nothing(client: httpx.Client) -> None:
    decisions = [decide(client, c, limit=1) for c in on_both_shards(6)]
    good = [
        {
            "decision_id": d["decision_id"],
            "action_id": d["actions"][0]["action_id"],
            "outcome": "click",
        }
        for d in decisions
    ]
    bad = {**good[-1], "action_id": "not_offered"}
    r = client.post("/v1/outcomes", json=good[:-1] + [bad])
    assert (r.status_code, r.json()["error"]["code"]) == (422, "action_not_in_decision")
    for d in decisions:
        assert client.get(f"/v1/profiles/{d['customer_id']}").json()["known"] is True
    r = client.post("/v1/outcomes", json=good)
    assert r.json() == {"accepted": len(decisions)}


def test_events_dated_far_in_the_future_are_refused(client: httpx.Client) -> None:
    """A clock-skewed event within profile.max_future counts; a far-future one is refused
    (it would move window clocks on and empty the customer's windows)."""
    soon = time.time() + 60
    r = client.post("/v1/events", json={"customer_id": "c-skew", "type": "login", "ts": soon})
    assert r.status_code == 200, r.text
    far = time.time() + 86400
    r = client.post("/v1/events", json=[{"customer_id": "c-skew", "type": "complaint", "ts": far}])
    assert r.status_code == 422
    assert r.json()["error"] | {"message": ""} == {
        "code": "invalid_field",
        "field": "[0].ts",
        "message": "",
    }
    r = client.post(
        "/v1/decide",
        json={
            "customer_id": "c-skew",
            "channel": "web",
            "event": {"type": "complaint", "ts": far},
        },
    )
    assert (r.status_code, r.json()["error"]["code"]) == (422, "invalid_field")
    assert r.json()["error"]["field"] == "event.ts"
    assert "future" in r.json()["error"]["message"]
    aggs = client.get("/v1/profiles/c-skew").json()["aggregates"]
    assert aggs["complaints_30d"] == 0 and aggs["since_last_login"] is not None


def test_configured_limits_are_enforced_and_in_the_openapi(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    text = json.dumps(spec["components"]["schemas"])
    assert '"maxLength": 200' in text  # server.max_string_length as configured
    ev = {"customer_id": "lim-1", "type": "page_view"}
    ok = client.post("/v1/events", json={**ev, "properties": {"page": "p" * 200}})
    assert ok.status_code == 200, ok.text
    over = client.post("/v1/events", json={**ev, "properties": {"page": "p" * 201}})
    assert over.status_code == 422 and over.json()["error"]["code"] == "invalid_field"
    ct = {"content-type": "application/json"}
    deep = client.post("/v1/events", content=b"[" * 9 + b"]" * 9, headers=ct)
    assert deep.status_code == 400 and deep.json()["error"]["code"] == "too_deep"
    # a customer id typed two ways is one customer, in the body and in the path
    client.post("/v1/events", json={**ev, "customer_id": "jose\u0301"})
    assert client.get("/v1/profiles/jos\u00e9").json()["known"] is True
