"""Triggers on the running server: the shards' tickers fire timers, the delivery loops
push to a webhook and to Parquet, and channel systems pull the rest over HTTP."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import pyarrow.dataset as ds

from decisioning.profile.slots import contiguous_map, slot_of
from tests.integration.harness import Server, wait_until


def _cid() -> str:
    return f"trig-{uuid.uuid4().hex[:10]}"


def _events(client: httpx.Client, *events: dict[str, Any]) -> None:
    r = client.post("/v1/events", json=list(events))
    assert r.status_code == 200, r.text


def _same_shard(server: Server, a: str, b: str) -> bool:
    owners = contiguous_map(server.config.server.shards)
    return owners[slot_of(a)] == owners[slot_of(b)]


def _status(client: httpx.Client) -> list[dict[str, Any]]:
    return client.get("/v1/status").json()["shards"]


def _counter(client: httpx.Client, name: str) -> int:
    return sum(s[name] for s in _status(client))


def _abandoned_cart_email(client: httpx.Client, c: str) -> dict[str, Any]:
    """A cart added 29 min 58 s ago (due in about 2 s, no purchase follows): its email,
    pulled from the queue (and leased)."""
    _events(client, {"customer_id": c, "type": "cart_add", "ts": time.time() - 1798})
    mine: list[dict[str, Any]] = []
    deadline = time.monotonic() + 30
    while not mine and time.monotonic() < deadline:
        r = client.get("/v1/outbound", params={"channel": "email", "wait_s": 5, "limit": 1000})
        assert r.status_code == 200, r.text
        assert r.json()["lease_s"] == 30
        mine = [m for m in r.json()["messages"] if m["customer_id"] == c]
    [m] = mine
    return m


def test_a_due_timer_fires_and_the_channel_pulls_and_acks(client: httpx.Client) -> None:
    c = _cid()
    m = _abandoned_cart_email(client, c)
    assert (m["trigger"], m["channel"]) == ("cart_abandoned", "email")
    assert m["idempotency_key"] == m["id"] == m["decision"]["decision_id"]
    assert len(m["actions"]) >= 1 and m["actions"][0]["channel"] == "email"
    assert client.post("/v1/outbound/ack", json={"ids": [m["id"]]}).json() == {"acked": 1}
    assert client.post("/v1/outbound/ack", json={"ids": [m["id"]]}).json() == {"acked": 0}
    # the decision is in the customer's history like any other
    recent = client.get(f"/v1/profiles/{c}").json()["recent_decisions"]
    assert [d["decision_id"] for d in recent] == [m["id"]]


def test_the_content_is_decided_again_when_the_message_is_opened(
    server: Server, client: httpx.Client
) -> None:
    c = _cid()
    m = _abandoned_cart_email(client, c)
    client.post("/v1/outbound/ack", json={"ids": [m["id"]]})
    token = m["open_token"]
    # opened at once: no API key, the token decides for its customer and channel
    opened = httpx.get(f"{server.url}/v1/open/{token}", timeout=30)
    assert opened.status_code == 200, opened.text
    first = opened.json()
    assert (first["customer_id"], first["channel"], first["message_id"]) == (c, "email", m["id"])
    assert first["actions"] and first["decision_id"] != m["id"]
    # after sending, the customer withdraws email consent: opened now, it shows nothing
    _events(client, {"customer_id": c, "type": "consent", "properties": {"email": False}})
    later = httpx.get(f"{server.url}/v1/open/{token}", timeout=30).json()
    assert later["actions"] == []
    for bad, code in ((token[:-3] + "AAA", "invalid_link"), ("x" * 40, "invalid_link")):
        r = httpx.get(f"{server.url}/v1/open/{bad}", timeout=30)
        assert (r.status_code, r.json()["error"]["code"]) == (404, code)


def test_a_purchase_in_time_cancels_the_timer(client: httpx.Client) -> None:
    c = _cid()
    now = time.time()
    _events(
        client,
        {"customer_id": c, "type": "cart_add", "ts": now - 1798},
        {"customer_id": c, "type": "purchase", "ts": now - 1000, "properties": {"amount": 30}},
    )
    # a control customer whose timer is due at the same moment, and not cancelled: once
    # its message is out, a tick has passed the due time of both
    control = _cid()
    _events(client, {"customer_id": control, "type": "cart_add", "ts": now - 1798})
    taken: list[dict[str, Any]] = []

    def control_fired() -> bool:
        r = client.get("/v1/outbound", params={"channel": "email", "limit": 1000})
        taken.extend(r.json()["messages"])
        return any(m["customer_id"] == control for m in taken)

    wait_until(control_fired, 30, "the control customer's timer to fire")
    assert not [m for m in taken if m["customer_id"] == c]
    assert client.get(f"/v1/profiles/{c}").json()["recent_decisions"] == []


def test_a_crossing_is_pushed_to_the_webhook_once(server: Server, client: httpx.Client) -> None:
    c = _cid()
    now = time.time()
    fails = [{"customer_id": c, "type": "failed_login", "ts": now - 3 + i} for i in range(4)]
    _events(client, *fails)

    def pushed(cid: str) -> list[tuple[str, dict[str, Any]]]:
        return [(k, b) for k, b in server.receiver.stored if b["customer_id"] == cid]

    [(key, body)] = wait_until(lambda: pushed(c), 30, "the sms")  # one crossing, one sms
    assert key == body["id"] and (body["trigger"], body["channel"]) == ("failed_logins", "sms")
    sinks = [s["outbound"]["sinks"]["sms"] for s in _status(client)]
    assert sum(s["delivered"] for s in sinks) >= 1
    # a control crossing on the same shard: its sms comes after any second one for `c`
    control = next(x for x in (_cid() for _ in range(1000)) if _same_shard(server, x, c))
    _events(client, *[{**f, "customer_id": control} for f in fails])
    wait_until(lambda: pushed(control), 30, "the control's sms")
    assert len(pushed(c)) == 1


def test_a_sink_channel_is_not_pulled_and_bad_pulls_are_refused(client: httpx.Client) -> None:
    r = client.get("/v1/outbound", params={"channel": "sms"})
    assert (r.status_code, r.json()["error"]["code"]) == (409, "channel_has_sink")
    r = client.get("/v1/outbound", params={"channel": "fax"})
    assert (r.status_code, r.json()["error"]["code"]) == (422, "unknown_channel")
    r = client.get("/v1/outbound", params={"channel": "email", "limit": 0})
    assert r.status_code == 422
    r = client.post("/v1/outbound/ack", json={"ids": []})
    assert r.status_code == 422


def test_parquet_sink_and_a_trigger_that_respects_consent(
    server: Server, client: httpx.Client
) -> None:
    fired, queued = _counter(client, "triggers_fired"), _counter(client, "messages_queued")
    c, shy = _cid(), _cid()
    now = time.time()
    no = {"email": False, "sms": False, "call_center": False}
    _events(
        client,
        # a complaint first: the retention call is worth an agent's time
        {"customer_id": c, "type": "complaint", "ts": now, "properties": {"topic": "fees"}},
        {"customer_id": c, "type": "address_change", "ts": now},
        {"customer_id": shy, "type": "consent", "ts": now, "properties": no},
        {"customer_id": shy, "type": "address_change", "ts": now},
        {
            "customer_id": shy,
            "type": "geofence_enter",
            "ts": now,
            "properties": {"store": "london_1"},
        },
        {
            "customer_id": shy,
            "type": "geofence_enter",
            "ts": now,
            "properties": {"store": "elsewhere"},
        },
    )
    assert _counter(client, "triggers_fired") == fired + 3  # not the store it does not watch
    assert _counter(client, "messages_queued") == queued + 1  # the shy customer: nothing
    path = server.data_dir / "outbound"

    def written() -> list[dict[str, Any]]:
        if not path.exists():
            return []
        table = ds.dataset(str(path), format="parquet", partitioning="hive").to_table()
        return [r for r in table.to_pylist() if r["customer_id"] == c]

    [row] = wait_until(written, 30, "the call centre's Parquet file")
    assert (row["trigger"], row["channel"]) == ("address_changed", "call_center")
    assert row["action_ids"]
