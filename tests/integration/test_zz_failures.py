"""Things die: a shard actor is restarted by Ray (its customers get 503 meanwhile, never
500, and it comes back with every acknowledged event); an ingress replica is replaced by
Serve on the same port.

(Named test_zz_* so it runs after the other integration tests: it kills actors.)
"""

from __future__ import annotations

import time

import httpx
import ray

from decisioning.slots import contiguous_map, slot_of
from tests.integration.conftest import Server


def test_killed_shard_answers_503_then_recovers(server: Server, client: httpx.Client) -> None:
    owners = contiguous_map(server.config.server.shards)
    customer = next(f"k-{i}" for i in range(1000) if owners[slot_of(f"k-{i}")] == 0)
    other = next(f"k-{i}" for i in range(1000) if owners[slot_of(f"k-{i}")] == 1)
    body = {"customer_id": customer, "channel": "web"}
    assert client.post("/v1/decide", json=body).status_code == 200
    views = [
        {"customer_id": customer, "type": "page_view", "event_id": f"kill-{i}"} for i in range(3)
    ]
    assert client.post("/v1/events", json=views).status_code == 200
    before = client.get(f"/v1/profiles/{customer}").json()
    assert before["aggregates"]["page_views_24h"] == 3
    shard = ray.get_actor("shard-0", namespace=server.config.server.namespace)
    ray.kill(shard, no_restart=False)
    seen = []
    deadline = time.time() + 90
    while time.time() < deadline:
        r = client.post("/v1/decide", json=body)
        seen.append(r.status_code)
        if r.status_code == 503:
            assert r.headers["retry-after"] == "1"
            assert r.json()["error"]["code"] == "shard_unavailable"
        if r.status_code == 200 and 503 in seen:
            break
        # the other shard keeps answering throughout
        assert client.post("/v1/decide", json={**body, "customer_id": other}).status_code == 200
        time.sleep(0.2)
    assert set(seen) <= {200, 503}, seen
    assert seen[-1] == 200, seen
    assert r.json()["model_version"] is not None  # the restarted shard reloaded its model
    status = client.get("/v1/status").json()["shards"][0]
    assert status["scorers"] == {"propensity": "native"}  # and its native code
    assert status["recovery"]["wal_records"] >= 2  # replayed its log
    after = client.get(f"/v1/profiles/{customer}").json()
    assert after["aggregates"] == before["aggregates"]  # nothing acknowledged was lost
    assert (
        after["recent_decisions"][: len(before["recent_decisions"])] == before["recent_decisions"]
    )
    # a client retrying the same events after the restart does not count them twice
    assert client.post("/v1/events", json=views).status_code == 200
    again = client.get(f"/v1/profiles/{customer}").json()
    assert again["aggregates"]["page_views_24h"] == 3


def test_killed_ingress_replica_comes_back_on_the_same_port(server: Server) -> None:
    """Serve's port quarantine is off in direct mode, so channels keep their URL."""
    replicas = [
        a
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["namespace"] == "serve" and "nextbest" in a["name"] and "REPLICA" in a["name"].upper()
    ]
    assert replicas, ray.util.list_named_actors(all_namespaces=True)
    for r in replicas:
        ray.kill(ray.get_actor(r["name"], namespace="serve"), no_restart=True)
    deadline = time.time() + 120
    down_seen = False
    while time.time() < deadline:
        try:
            ok = httpx.get(f"{server.url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            ok, down_seen = False, True
        if ok and down_seen:
            break
        time.sleep(0.25)
    assert down_seen, "the replica was never down: the kill did not happen"
    r = httpx.post(f"{server.url}/v1/decide", json={"customer_id": "x", "channel": "web"})
    assert r.status_code == 200
