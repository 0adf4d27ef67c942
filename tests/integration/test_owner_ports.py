"""Each shard serves its customers on a port of its own (no hop): the published slot
map names it, a request there is answered in the shard's process with the same API,
keys and errors, one for another shard's customer is forwarded once (or refused 421
when the client asked for strict routing) and never applied by a non-owner, and a
killed shard comes back on a port the map names again, its customers intact.
"""

from __future__ import annotations

import os
import signal
import uuid
from typing import Any

import httpx
import ray

from decisioning.profile.slots import SLOTS, slot_of
from tests.integration.harness import Server, wait_until


def _slots(server: Server) -> dict[str, Any]:
    with server.client() as c:
        r = c.get("/v1/cluster/slots")
    assert r.status_code == 200, r.text
    return dict(r.json())


def _owner(cluster: dict[str, Any], customer: str) -> int:
    slot = slot_of(customer)
    return next(shard for lo, last, shard in cluster["slots"] if lo <= slot <= last)


def _endpoints(cluster: dict[str, Any]) -> dict[int, str]:
    return {s["shard"]: s["endpoint"] for s in cluster["shards"] if s["endpoint"]}


def _customers(cluster: dict[str, Any]) -> dict[int, str]:
    """A fresh customer of each shard."""
    out: dict[int, str] = {}
    while len(out) < len(cluster["shards"]):
        c = f"op-{uuid.uuid4().hex[:10]}"
        out.setdefault(_owner(cluster, c), c)
    return out


def _views(server: Server, customer: str) -> float:
    with server.client() as c:
        r = c.get(f"/v1/profiles/{customer}")
    assert r.status_code == 200, r.text
    return float(r.json()["aggregates"].get("page_views_24h") or 0)


def _profiles_per_shard(server: Server) -> dict[int, int]:
    with server.client() as c:
        r = c.get("/v1/shards")
    assert r.status_code == 200, r.text
    return {s["shard"]: int(s["profiles"]) for s in r.json()["shards"]}


def test_the_slot_map_names_every_shard_and_its_own_port(server: Server) -> None:
    cluster = _slots(server)
    assert cluster["epoch"] >= 1
    covered = sorted((lo, last) for lo, last, _ in cluster["slots"])
    assert covered[0][0] == 0 and covered[-1][1] == SLOTS - 1
    assert all(a[1] + 1 == b[0] for a, b in zip(covered, covered[1:], strict=False))
    endpoints = _endpoints(cluster)
    assert sorted(endpoints) == [s["shard"] for s in cluster["shards"]] == [0, 1]
    for url in endpoints.values():
        assert url.startswith("http://127.0.0.1:") and url != server.url, url
    with httpx.Client(timeout=10) as c:  # no key: refused like at the ingress
        r = c.get(f"{server.url}/v1/cluster/slots")
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated"
        for url in endpoints.values():
            r = c.post(f"{url}/v1/decide", json={"customer_id": "x", "channel": "web"})
            assert r.status_code == 401, r.text


def test_a_customer_served_at_its_owner_is_the_same_customer_as_at_the_ingress(
    server: Server,
) -> None:
    cluster = _slots(server)
    endpoints = _endpoints(cluster)
    for shard, customer in _customers(cluster).items():
        with httpx.Client(base_url=endpoints[shard], headers=server.headers, timeout=10) as c:
            events = [{"customer_id": customer, "type": "page_view", "event_id": f"{customer}-{k}"}
                      for k in range(3)]  # fmt: skip
            r = c.post("/v1/events", json=events, headers={"x-nextbest-route": "strict"})
            assert r.status_code == 200 and r.json()["accepted"] == 3, r.text
            again = c.post("/v1/events", json=events)  # a retry: counted once (below)
            assert again.status_code == 200, again.text
            d = c.post("/v1/decide", json={"customer_id": customer, "channel": "web"})
            assert d.status_code == 200, d.text
            bad = c.post("/v1/decide", json={"customer_id": customer, "channel": "fax"})
            assert bad.status_code == 422 and bad.json()["error"]["code"] == "unknown_channel"
        assert _views(server, customer) == 3  # read through the ingress: the same state
        with server.client() as c:  # the decision made at the owner takes its outcome
            action = d.json()["actions"]
            if action:
                o = {"decision_id": d.json()["decision_id"],
                     "action_id": action[0]["action_id"], "outcome": "click"}  # fmt: skip
                assert c.post("/v1/outcomes", json=o).status_code == 200


def test_another_shards_customer_is_forwarded_once_or_refused_when_strict(
    server: Server,
) -> None:
    cluster = _slots(server)
    endpoints = _endpoints(cluster)
    customers = _customers(cluster)
    before = _profiles_per_shard(server)
    for shard, customer in customers.items():
        other = endpoints[1 - shard]  # the port of the shard that does not own them
        with httpx.Client(base_url=other, headers=server.headers, timeout=10) as c:
            ev = {"customer_id": customer, "type": "page_view", "event_id": f"{customer}-s"}
            strict = c.post("/v1/events", json=ev, headers={"x-nextbest-route": "strict"})
            assert strict.status_code == 421, strict.text
            assert strict.json()["error"]["code"] == "slot_moved", strict.text
            assert _views(server, customer) == 0  # refused: nothing applied anywhere
            d = c.post("/v1/decide", json={"customer_id": customer, "channel": "web"},
                       headers={"x-nextbest-route": "strict"})  # fmt: skip
            assert d.status_code == 421, d.text
            fwd = c.post("/v1/events", json=ev)  # not strict: forwarded to the owner
            assert fwd.status_code == 200 and fwd.json()["accepted"] == 1, fwd.text
            p = c.get(f"/v1/profiles/{customer}")
            assert p.status_code == 200 and p.json()["aggregates"]["page_views_24h"] == 1
        assert _views(server, customer) == 1
    # the non-owner kept nothing: each shard has one more profile, its own customer's
    after = _profiles_per_shard(server)
    assert {s: after[s] - before[s] for s in after} == {0: 1, 1: 1}, (before, after)


def test_a_killed_shard_comes_back_on_a_port_the_map_names_with_its_customers(
    server: Server,
) -> None:
    cluster = _slots(server)
    shard, customer = next(iter(_customers(cluster).items()))
    old = _endpoints(cluster)[shard]
    with httpx.Client(base_url=old, headers=server.headers, timeout=10) as c:
        ev = [{"customer_id": customer, "type": "page_view", "event_id": f"{customer}-k{k}"}
              for k in range(2)]  # fmt: skip
        assert c.post("/v1/events", json=ev).status_code == 200
    ns = server.config.server.namespace
    actor = ray.get_actor(f"shard-{shard}", namespace=ns)
    os.kill(int(ray.get(actor.pid.remote())), signal.SIGKILL)

    def back() -> str | None:
        try:
            endpoint = _endpoints(_slots(server)).get(shard)
        except AssertionError:  # the supervisor's status call may time out meanwhile
            return None
        if endpoint is None:
            return None
        try:
            with httpx.Client(headers=server.headers, timeout=5) as c:
                r = c.get(f"{endpoint}/v1/profiles/{customer}")
        except httpx.TransportError:
            return None
        return endpoint if r.status_code == 200 else None

    endpoint = wait_until(back, 120, f"shard {shard} serving on its own port again")
    with httpx.Client(base_url=endpoint, headers=server.headers, timeout=10) as c:
        r = c.get(f"/v1/profiles/{customer}")
        assert r.json()["aggregates"]["page_views_24h"] == 2, r.text  # recovered, then served
