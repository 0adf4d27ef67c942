"""Things die: a shard actor is restarted by Ray (its customers get 503 meanwhile, never
500, and it comes back with every acknowledged event); an ingress replica is replaced by
Serve on the same port.

(Named test_zz_* so it runs after the other integration tests: it kills actors.)
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections import Counter

import httpx
import ray

from actors.remote import ensure_supervisor, shutdown_cluster
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
    r = httpx.post(
        f"{server.url}/v1/decide",
        json={"customer_id": "x", "channel": "web"},
        headers=server.headers,
    )
    assert r.status_code == 200


def test_sigkill_under_steady_load_loses_and_doubles_nothing(
    server: Server, client: httpx.Client
) -> None:
    """A client sends events at a steady rate and retries each (same event_id) until it
    is acknowledged; the shard's process is SIGKILLed meanwhile. Afterwards every
    acknowledged event counts exactly once."""
    owners = contiguous_map(server.config.server.shards)
    customers = [c for c in (f"sk-{i}" for i in range(400)) if owners[slot_of(c)] == 0][:5]
    acked: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    stop = threading.Event()

    def send() -> None:
        with httpx.Client(base_url=server.url, timeout=10, headers=server.headers) as c:
            i = 0
            while not stop.is_set():
                cid = customers[i % len(customers)]
                ev = {"customer_id": cid, "type": "page_view", "event_id": f"sk-ev-{i}"}
                while True:  # retry until acknowledged, as a channel would
                    try:
                        r = c.post("/v1/events", json=ev)
                        statuses[r.status_code] += 1
                        if r.status_code == 200:
                            break
                    except httpx.HTTPError:
                        statuses[0] += 1
                    time.sleep(0.05)
                acked[cid] += 1
                i += 1
                time.sleep(0.01)

    sender = threading.Thread(target=send)
    sender.start()
    try:
        time.sleep(1.5)
        shard = ray.get_actor("shard-0", namespace=server.config.server.namespace)
        os.kill(ray.get(shard.pid.remote()), signal.SIGKILL)
        deadline = time.time() + 90
        while time.time() < deadline and statuses[503] + statuses[0] == 0:
            time.sleep(0.1)
        recovered = statuses[200]
        while time.time() < deadline and statuses[200] < recovered + 20:
            time.sleep(0.1)
    finally:
        stop.set()
        sender.join(60)
    assert statuses[503] + statuses[0] > 0, statuses  # the kill was seen
    assert set(statuses) <= {0, 200, 503}, statuses
    for cid in customers:
        profile = client.get(f"/v1/profiles/{cid}").json()
        assert profile["aggregates"]["page_views_24h"] == acked[cid], (cid, statuses)


def test_stop_and_start_restores_every_profile(server: Server, client: httpx.Client) -> None:
    """Stopping the shards snapshots them; the next ones restore the same state."""
    ns = server.config.server.namespace
    n = server.config.server.shards

    def digests() -> list[str]:
        return [
            ray.get(ray.get_actor(f"shard-{i}", namespace=ns).state_digest.remote())
            for i in range(n)
        ]

    customers = [f"rs-{i}" for i in range(30)]
    events = [
        e
        for i, c in enumerate(customers)
        for e in (
            {"customer_id": c, "type": "profile_update", "properties": {"age": 20 + i}},
            {"customer_id": c, "type": "purchase", "properties": {"amount": 10.5 * i}},
            {"customer_id": c, "type": "consent", "properties": {"email": i % 2 == 0}},
        )
    ]
    assert client.post("/v1/events", json=events).status_code == 200
    for c in customers:
        assert client.post("/v1/decide", json={"customer_id": c, "channel": "web"}).is_success
    keep = ("known", "attributes", "consent", "recent_decisions")  # not ages: time passes
    before = {c: {k: client.get(f"/v1/profiles/{c}").json()[k] for k in keep} for c in customers}
    assert all(p["known"] for p in before.values())
    state = digests()
    shutdown_cluster(server.config)  # graceful: every shard snapshots, then stops
    ensure_supervisor(server.config)  # new shard actors, restored from their snapshots
    assert digests() == state  # every profile, decision and event id, bit for bit
    with server.client() as c:
        deadline = time.time() + 30
        for cid, view in before.items():
            # a 503 at first: the ingress then finds the new shard actor by its name
            while (r := c.get(f"/v1/profiles/{cid}")).status_code == 503:
                assert time.time() < deadline
                time.sleep(0.2)
            assert {k: r.json()[k] for k in keep} == view
        shards = c.get("/v1/status").json()["shards"]
    assert all(s["recovery"]["snapshot_profiles"] > 0 for s in shards), shards


def test_node_loss_brings_its_shards_back_on_another_node(
    server: Server, client: httpx.Client
) -> None:
    """A shard node dies (every process on it SIGKILLed); Ray restarts its shards on the
    other shard node, where they recover from the shared data dir."""
    ns = server.config.server.namespace

    def node_of(i: int) -> str:
        return str(ray.get(ray.get_actor(f"shard-{i}", namespace=ns).node_id.remote()))

    owners = contiguous_map(server.config.server.shards)
    customers = {
        i: [c for c in (f"nl-{j}" for j in range(400)) if owners[slot_of(c)] == i][:3]
        for i in range(server.config.server.shards)
    }
    events = [
        {"customer_id": c, "type": "purchase", "properties": {"amount": 5.0}, "event_id": f"{c}-p"}
        for cs in customers.values()
        for c in cs
    ]
    assert client.post("/v1/events", json=events).status_code == 200
    keep = ("purchases_30d", "spend_30d", "spend_all_time", "last_purchase_amount")

    def counts(c: str) -> dict[str, float]:
        aggregates = client.get(f"/v1/profiles/{c}").json()["aggregates"]
        return {k: aggregates[k] for k in keep}  # not since_last_purchase: time passes

    before = {c: counts(c) for c in customers[0]}
    assert all(b["purchases_30d"] == 1 for b in before.values())
    nodes = {n.node_id: n for n in server.shard_nodes}
    lost = node_of(0)
    assert lost in nodes, "shard-0 is not on a shard node"
    on_lost = [i for i in customers if node_of(i) == lost]
    pids = [ray.get(ray.get_actor(f"shard-{i}", namespace=ns).pid.remote()) for i in on_lost]
    # the machine is gone: its Ray processes (raylet, object store) and its workers
    server.cluster.remove_node(nodes[lost], allow_graceful=False)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    server.shard_nodes.remove(nodes[lost])
    statuses: Counter[int] = Counter()
    deadline = time.time() + 120
    while time.time() < deadline:
        r = client.get(f"/v1/profiles/{customers[0][0]}")
        statuses[r.status_code] += 1
        if r.status_code == 200:
            break
        assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
        ready = client.get("/readyz")  # not ready meanwhile, and says when to ask again
        assert ready.is_success or ready.headers["retry-after"] == "1", ready.text
        time.sleep(0.25)
    assert r.status_code == 200, statuses
    for i in on_lost:
        assert node_of(i) != lost  # it moved
        assert node_of(i) in {n.node_id for n in server.shard_nodes}
    after = {c: counts(c) for c in customers[0]}
    assert after == before  # nothing acknowledged was lost
    retry = client.post("/v1/events", json=events)  # a client retrying after the failure
    assert retry.status_code == 200
    again = {c: counts(c) for c in customers[0]}
    assert again == before  # counted once
    while (r := client.get("/v1/status")).status_code == 503:  # if the supervisor was there
        assert r.json()["error"]["code"] == "supervisor_unavailable"
        assert time.time() < deadline
        time.sleep(0.25)
    recovery = r.json()["shards"][0]["recovery"]
    assert recovery["generation"] >= 2 and recovery["restarts"] >= 1  # ops can see it
