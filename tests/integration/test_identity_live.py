"""Identity on the running server: any identifier addresses the customer, a login
merges the anonymous profile, merges move state across shards and forward requests."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import ray

from actors.messages import Link
from decisioning.profile.slots import contiguous_map, slot_of
from tests.integration.harness import Server


def _id(prefix: str = "idn") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _events(client: httpx.Client, *events: dict[str, Any]) -> None:
    r = client.post("/v1/events", json=list(events))
    assert r.status_code == 200, r.text


def _views(client: httpx.Client, who: str) -> float:
    r = client.get(f"/v1/profiles/{who}")
    assert r.status_code == 200, r.text
    return float(r.json()["aggregates"]["page_views_24h"])


def _view(cid: str) -> dict[str, Any]:
    return {"customer_id": cid, "type": "page_view", "properties": {"page": "cards"}}


def test_a_login_merges_the_anonymous_profile_and_links_its_identifiers(
    client: httpx.Client,
) -> None:
    c, cookie, device = _id(), f"cookie_id:{_id('k')}", f"device_id:{_id('d')}"
    _events(client, _view(cookie), _view(cookie))  # an anonymous visitor
    assert _views(client, cookie) == 2.0
    _events(client, _view(c))
    login = {"customer_id": c, "type": "login", "properties": {"cookie_id": cookie[10:],
             "device_id": device[10:]}}  # fmt: skip
    _events(client, login)
    assert _views(client, c) == 3.0  # the anonymous views came along
    assert client.get(f"/v1/profiles/{cookie}").json()["customer_id"] == c
    _events(client, _view(device))  # the app's device id now lands on the customer
    assert _views(client, c) == 4.0
    info = client.get(f"/v1/identities/{cookie}").json()
    assert (info["customer_id"], info["linked_to"]) == (c, c)
    merges = {m["merged"]: (m["reason"], m["had_profile"]) for m in info["merges"]}
    assert merges == {cookie: ("link", True), device: ("link", False)}
    assert set(client.get(f"/v1/identities/{c}").json()["aliases"]) == {cookie, device}


def test_every_identifier_kind_resolves(client: httpx.Client) -> None:
    c = _id()
    _events(client, _view(c))
    for kind in ("email_hash", "phone_hash", "device_id", "cookie_id"):
        alias = f"{kind}:{uuid.uuid4().hex}"
        r = client.post("/v1/identities/merge", json={"survivor": c, "merged": alias})
        assert r.status_code == 200 and r.json()["survivor"] == c, r.text
        d = client.post("/v1/decide", json={"customer_id": alias, "channel": "web"}).json()
        assert d["customer_id"] == c
        assert client.get(f"/v1/profiles/{alias}").json()["customer_id"] == c


def test_merging_two_customers_across_shards(client: httpx.Client) -> None:
    survivor, merged = _id(), _id()
    _events(client, _view(survivor))
    shard = client.get(f"/v1/profiles/{survivor}").json()["shard"]
    while True:  # a customer on the other shard
        _events(client, _view(merged), _view(merged))
        if client.get(f"/v1/profiles/{merged}").json()["shard"] != shard:
            break
        merged = _id()
    now = time.time()
    _events(client, {"customer_id": merged, "type": "consent", "ts": now,
                     "properties": {"email": False}})  # fmt: skip
    d = client.post("/v1/decide", json={"customer_id": merged, "channel": "web", "limit": 1}).json()
    r = client.post("/v1/identities/merge", json={"survivor": survivor, "merged": merged})
    assert r.status_code == 200, r.text
    assert (r.json()["changed"], r.json()["had_profile"]) == (True, True)
    assert _views(client, survivor) == 3.0
    assert client.get(f"/v1/profiles/{survivor}").json()["consent"]["email"] is False
    # the old id forwards: events, decisions and reads reach the survivor
    _events(client, _view(merged))
    assert _views(client, survivor) == 4.0 and _views(client, merged) == 4.0
    d2 = client.post("/v1/decide", json={"customer_id": merged, "channel": "web"}).json()
    assert d2["customer_id"] == survivor
    # an outcome of a decision made before the merge counts on the survivor
    o = {"decision_id": d["decision_id"], "action_id": d["actions"][0]["action_id"],
         "outcome": "impression"}  # fmt: skip
    assert client.post("/v1/outcomes", json=o).json() == {"accepted": 1}
    aggs = client.get(f"/v1/profiles/{survivor}").json()["aggregates"]
    assert aggs["impressions_7d"] == 1.0
    again = client.post("/v1/identities/merge", json={"survivor": survivor, "merged": merged})
    assert again.json()["changed"] is False  # already one customer
    info = client.get(f"/v1/identities/{merged}").json()
    assert (info["merged_into"], info["customer_id"]) == (survivor, survivor)
    [entry] = info["merges"]
    assert (entry["survivor"], entry["merged"], entry["reason"]) == (survivor, merged, "merge")
    # erasing the survivor takes the merge with it
    assert client.delete(f"/v1/profiles/{survivor}").json()["erased"] is True
    info = client.get(f"/v1/identities/{merged}").json()
    assert info["merged_into"] is None and info["merges"] == []


def test_bad_merges_are_refused(client: httpx.Client) -> None:
    r = client.post("/v1/identities/merge", json={"survivor": "a"})
    assert (r.status_code, r.json()["error"]["code"]) == (422, "missing_field")
    r = client.post("/v1/identities/merge", json={"survivor": "a", "merged": "a"})
    assert r.status_code == 200 and r.json()["changed"] is False


def test_an_id_merged_twice_keeps_taking_events(client: httpx.Client) -> None:
    """The schemathesis report: merge 0 into A, then 0 into B; every event for 0 then
    answered 503 'merges are still moving these customers' for minutes."""
    zero, a, b = _id("0"), _id("A"), _id("B")
    _events(client, _view(zero), _view(a), _view(b))
    r = client.post("/v1/identities/merge", json={"survivor": a, "merged": zero})
    assert r.status_code == 200 and r.json()["changed"] is True, r.text
    r = client.post("/v1/identities/merge", json={"survivor": b, "merged": zero})
    assert r.status_code == 409 and r.json()["error"]["code"] == "already_merged", r.text
    for _ in range(3):
        r = client.post("/v1/events", json=_view(zero))
        assert r.status_code == 200 or 400 <= r.status_code < 500, r.text
    assert _views(client, a) == 5.0
    # a chain longer than the old hop limit: each survivor merged into the next one
    chain = [a] + [_id(f"k{i}") for i in range(6)]
    for merged, survivor in zip(chain, chain[1:], strict=False):
        r = client.post("/v1/identities/merge", json={"survivor": survivor, "merged": merged})
        assert r.status_code == 200 and r.json()["changed"] is True, r.text
    r = client.post("/v1/events", json=[_view(zero), _view(a)])
    assert r.status_code == 200 and r.json() == {"accepted": 2}, r.text
    assert _views(client, zero) == _views(client, chain[-1]) == 7.0


def _owe_a_merge(server: Server, alias: str, customer: str) -> None:
    """What an ingress that died right after a login's link step leaves: the link made
    and its merge owed on the identifier's shard, nothing more."""
    ns = server.config.server.namespace
    shard = contiguous_map(server.config.server.shards)[slot_of(alias)]
    actor = ray.get_actor(f"shard-{shard}", namespace=ns)
    linked = ray.get(actor.call.remote("link", Link(alias, customer)))
    assert linked.owed == customer, linked


def test_a_merge_left_owed_is_finished_by_a_resolution_and_by_the_sweep(
    server: Server, client: httpx.Client
) -> None:
    for finish in ("resolution", "sweep"):
        c, cookie = _id(), f"cookie_id:{_id('k')}"
        _events(client, _view(cookie), _view(cookie), _view(c))
        _owe_a_merge(server, cookie, c)
        if finish == "resolution":
            assert _views(client, cookie) == 3.0  # resolving the identifier finishes it
        deadline = time.monotonic() + 60  # the sweep runs every identity.sweep_s
        while _views(client, c) != 3.0:
            assert time.monotonic() < deadline, "the owed merge was never finished"
            time.sleep(0.2)
        info = client.get(f"/v1/identities/{c}").json()
        assert [(m["merged"], m["reason"]) for m in info["merges"]] == [(cookie, "link")]
