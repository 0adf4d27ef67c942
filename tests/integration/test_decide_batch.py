"""POST /v1/decide/batch on the live server (Serve ingress -> two shard actors): each
request answered in its place, a bad one refused on its own without failing the rest,
and every decision recorded as /v1/decide records it (an outcome can be reported
against its decision_id)."""

from __future__ import annotations

import time
import uuid

import httpx
import msgpack

from decisioning.profile.slots import contiguous_map, slot_of
from tests.integration.harness import Server

MSGPACK = {"content-type": "application/msgpack", "accept": "application/msgpack"}


def cid() -> str:
    return f"ib-{uuid.uuid4().hex[:10]}"


def on_shard(shard: int) -> str:
    """A fresh customer id that shard `shard` of two owns."""
    owners = contiguous_map(2)
    while owners[slot_of(c := cid())] != shard:
        pass
    return c


def batch(client: httpx.Client, requests: list[object]) -> list[dict]:
    r = client.post("/v1/decide/batch", json={"requests": requests})
    assert r.status_code == 200, r.text
    results: list[dict] = r.json()["results"]
    assert len(results) == len(requests)
    return results


def accept(decision_id: str, action_id: str) -> dict[str, str]:
    return {"decision_id": decision_id, "action_id": action_id, "outcome": "accept"}


def test_each_request_is_answered_in_its_place_and_its_decision_takes_outcomes(
    client: httpx.Client,
) -> None:
    a, b = on_shard(0), on_shard(1)
    linked, cookie = on_shard(1), f"cookie_id:{uuid.uuid4().hex[:8]}"
    link = {"cookie_id": cookie.removeprefix("cookie_id:")}
    login = {"customer_id": linked, "type": "login", "ts": time.time(), "properties": link}
    assert client.post("/v1/events", json=login).json() == {"accepted": 1}
    complaint = {"type": "complaint", "properties": {"topic": "fees"}}
    requests: list[object] = [
        {"customer_id": a, "channel": "web", "limit": 3},
        {"customer_id": b, "channel": "web", "limit": 0},  # invalid at the ingress
        {"customer_id": a, "channel": "fax"},  # unknown channel
        {"customer_id": b, "channel": "call_center", "limit": 20, "event": complaint},
        {"customer_id": b, "channel": "web", "limit": 50},  # refused by the shard
        {"customer_id": cookie, "channel": "app", "limit": 2},  # an identifier: its customer
        {"customer_id": a, "channel": "email", "dry_run": True},
        {"customer_id": b, "channel": "web", "limit": 2},
    ]
    results = batch(client, requests)
    refused = {
        i: (r["status"], r["error"]["code"], r["error"].get("field"))
        for i, r in enumerate(results)
        if "error" in r
    }
    assert refused == {
        1: (422, "invalid_field", "requests[1].limit"),
        2: (422, "unknown_channel", "requests[2].channel"),
        4: (422, "invalid_field", "requests[4].limit"),
    }
    decided = {i: r for i, r in enumerate(results) if i not in refused}
    assert [(i, r["customer_id"], r["channel"]) for i, r in decided.items()] == [
        (0, a, "web"),
        (3, b, "call_center"),
        (5, linked, "app"),
        (6, a, "email"),
        (7, b, "web"),
    ]
    assert all(r["decision_id"].startswith("d-") for r in decided.values())
    assert all(r["actions"] for i, r in decided.items() if i != 6)  # (cold starts get some)
    # the request's own triggering event was applied before its decision
    assert "retention_call" in [x["action_id"] for x in decided[3]["actions"]]

    # each recorded decision takes an outcome; the dry run's was never recorded
    recorded = [r for i, r in decided.items() if i != 6]
    outcomes = [accept(r["decision_id"], r["actions"][0]["action_id"]) for r in recorded]
    assert client.post("/v1/outcomes", json=outcomes).json() == {"accepted": len(recorded)}
    r = client.post("/v1/outcomes", json=accept(decided[6]["decision_id"], "x"))
    assert (r.status_code, r.json()["error"]["code"]) == (404, "unknown_decision")
    for customer, ids in ((a, [decided[0]]), (b, [decided[3], decided[7]]), (linked, [decided[5]])):
        profile = client.get(f"/v1/profiles/{customer}").json()
        assert {d["decision_id"] for d in profile["recent_decisions"]} == {
            d["decision_id"] for d in ids
        }
        assert profile["aggregates"]["accepts_30d"] == len(ids)


def test_a_retried_batch_gets_the_recorded_decision_of_each_request_id(
    client: httpx.Client,
) -> None:
    a, b = on_shard(0), on_shard(1)
    rid = f"rid-{uuid.uuid4().hex[:8]}"
    requests: list[object] = [
        {"customer_id": a, "channel": "web", "request_id": rid},
        {"customer_id": b, "channel": "web"},
    ]
    first, again = batch(client, requests), batch(client, requests)
    assert again[0] == first[0]  # the recorded decision, not a second one
    assert again[1]["decision_id"] != first[1]["decision_id"]  # no request id: decided anew
    recent = client.get(f"/v1/profiles/{a}").json()["recent_decisions"]
    assert [d["decision_id"] for d in recent] == [first[0]["decision_id"]]


def test_a_batch_of_bad_requests_still_answers_200_and_the_envelope_is_checked(
    server: Server, client: httpx.Client
) -> None:
    over = [{"customer_id": "x", "channel": "web"}] * (server.config.server.max_batch + 1)
    results = batch(client, [{"customer_id": "x"}, "not a request"])
    assert [(r["status"], r["error"]["code"]) for r in results] == [
        (422, "missing_field"),
        (422, "invalid_field"),
    ]
    for body, status, code in (
        ({"requests": []}, 422, "empty_batch"),
        ([{"customer_id": "x", "channel": "web"}], 422, "invalid_field"),
        ({"requests": over}, 413, "batch_too_large"),
    ):
        r = client.post("/v1/decide/batch", json=body)
        assert (r.status_code, r.json()["error"]["code"]) == (status, code)


def test_msgpack_both_ways(client: httpx.Client) -> None:
    customers = [on_shard(1), on_shard(0)]
    body = msgpack.packb({"requests": [{"customer_id": c, "channel": "app"} for c in customers]})
    r = client.post("/v1/decide/batch", content=body, headers=MSGPACK)
    assert r.status_code == 200 and r.headers["content-type"] == "application/msgpack"
    assert [d["customer_id"] for d in msgpack.unpackb(r.content)["results"]] == customers
