"""Things die on the running server: a shard actor is restarted by Ray (its customers get
503 meanwhile, never 500, and it comes back with every acknowledged event, and answers a
retried decide with the decision it recorded); the ingress replica is replaced by Serve
on the same port; the supervisor is restarted while events flow; a graceful stop and
start restores every shard bit for bit."""

from __future__ import annotations

import os
import signal
import uuid
from collections import Counter

import httpx
import psutil
import pytest
import ray

from actors.remote import ensure_supervisor, shutdown_cluster
from tests.integration.chaos import CHAOS, customers_per_shard, under_load
from tests.integration.harness import FIGURES, Server, wait_until


@pytest.fixture(autouse=True)
def _healthy(server: Server) -> None:
    """Each test starts on a server whose every shard answers (another may have killed
    something): the tests of this module pass in any order."""

    def ready() -> bool:
        try:
            return httpx.get(f"{server.url}/readyz", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(ready, 120, "every shard to answer")


def _shard(server: Server, i: int) -> ray.actor.ActorHandle:
    return ray.get_actor(f"shard-{i}", namespace=server.config.server.namespace)


def test_killed_shard_answers_503_then_recovers(server: Server, client: httpx.Client) -> None:
    owners = customers_per_shard(server, 1, "k")
    customer, other = owners[0][0], owners[1][0]
    body = {"customer_id": customer, "channel": "web"}
    assert client.post("/v1/decide", json=body).status_code == 200
    views = [
        {"customer_id": customer, "type": "page_view", "event_id": f"kill-{i}"} for i in range(3)
    ]
    assert client.post("/v1/events", json=views).status_code == 200
    before = client.get(f"/v1/profiles/{customer}").json()
    assert before["aggregates"]["page_views_24h"] == 3
    ray.kill(_shard(server, 0), no_restart=False)
    seen: list[int] = []

    def back() -> bool:
        r = client.post("/v1/decide", json=body)
        seen.append(r.status_code)
        if r.status_code == 503:
            assert r.headers["retry-after"] == "1"
            assert r.json()["error"]["code"] == "shard_unavailable"
        # the other shard keeps answering throughout
        assert client.post("/v1/decide", json={**body, "customer_id": other}).status_code == 200
        return r.status_code == 200 and 503 in seen

    wait_until(back, 90, "the killed shard to answer again")
    assert set(seen) <= {200, 503}, seen
    d = client.post("/v1/decide", json=body).json()
    assert d["model_version"] is not None  # the restarted shard reloaded its model
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


def test_a_retried_decide_gets_its_decision_again_across_a_shard_restart(
    server: Server, client: httpx.Client
) -> None:
    """A client that lost a decide's answer retries with the same Idempotency-Key, while
    the shard process is SIGKILLed and restarted from its WAL: every 200 it gets is the
    decision it was first given (the same body), and the customer has one decision."""
    customer = customers_per_shard(server, 1, f"idem-{uuid.uuid4().hex[:6]}")[0][0]
    body = {"customer_id": customer, "channel": "web", "explain": True}
    key = {"Idempotency-Key": f"retry-{uuid.uuid4().hex}"}
    first = client.post("/v1/decide", json=body, headers=key)
    assert first.status_code == 200, first.text
    given = first.json()
    assert given["actions"]
    assert client.post("/v1/decide", json=body, headers=key).json() == given
    shard = _shard(server, 0)
    killed = ray.get(shard.pid.remote())
    os.kill(killed, signal.SIGKILL)
    seen: list[int] = []

    def restarted_and_answered() -> bool:
        r = client.post("/v1/decide", json=body, headers=key)
        seen.append(r.status_code)
        if r.status_code == 503:
            assert r.json()["error"]["code"] == "shard_unavailable", r.text
            return False
        assert r.status_code == 200, r.text
        assert r.json() == given  # during the restart and after: the same decision
        return ray.get(_shard(server, 0).pid.remote(), timeout=30) != killed

    wait_until(restarted_and_answered, 90, "the restarted shard to answer the retry")
    assert set(seen) <= {200, 503}, seen
    shards = client.get("/v1/status").json()["shards"]
    assert shards[0]["recovery"]["wal_records"] >= 1  # it came back from its log
    assert shards[0]["decisions_repeated"] >= 1
    recent = client.get(f"/v1/profiles/{customer}").json()["recent_decisions"]
    assert [d["decision_id"] for d in recent] == [given["decision_id"]]  # recorded once
    # the key in the body works the same; another placement under it is refused
    same = client.post("/v1/decide", json={**body, "request_id": key["Idempotency-Key"]})
    assert same.json() == given
    other = client.post("/v1/decide", json={**body, "placement": "home_hero"}, headers=key)
    assert other.status_code == 409, other.text
    assert other.json()["error"]["code"] == "request_id_reused"
    mismatch = client.post("/v1/decide", json={**body, "request_id": "another"}, headers=key)
    assert (mismatch.status_code, mismatch.json()["error"]["code"]) == (
        422,
        "request_id_mismatch",
    )


def _listener(port: int) -> int | None:
    """The pid of the process listening on `port` on this machine (the direct-ingress
    replica), if any."""
    for c in psutil.net_connections(kind="tcp"):
        if c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN and c.pid:
            return int(c.pid)
    return None


@pytest.mark.parametrize("how", ["sigkill", pytest.param("ray_kill", marks=pytest.mark.chaos)])
def test_killed_ingress_replica_comes_back_on_the_same_port(server: Server, how: str) -> None:
    """Kills in a row, under load: Serve's replacement must bind the same port
    each time (a replacement racing its dying predecessor must not lose the port), and
    no event acknowledged around the kills is lost."""
    port = server.config.server.port
    customers = [c for cs in customers_per_shard(server, 5, f"ing-{how}").values() for c in cs]

    def kill(_: int) -> None:
        pid = wait_until(lambda: _listener(port), 120, f"a replica listening on {port}")
        if how == "sigkill":
            os.kill(pid, signal.SIGKILL)
        else:
            names = ray.util.list_named_actors(all_namespaces=True)
            for a in names:
                if a["namespace"] == "serve" and "REPLICA" in a["name"].upper():
                    ray.kill(ray.get_actor(a["name"], namespace="serve"), no_restart=True)
        wait_until(lambda: _listener(port) != pid, 60, "the killed replica to be gone")

    kills = 3 if CHAOS else 2
    figures = under_load(server, customers, kill, 9 * kills + 3, every=9, rate=100, threads=3)
    FIGURES.append(figures.line(f"ingress replica killed ({how})"))
    assert figures.kills == kills
    assert figures.lost == 0 and figures.doubled == 0, figures
    assert figures.other_5xx == 0, figures
    assert figures.statuses[0] + figures.statuses[503] > 0, figures  # the kills were seen
    assert _listener(port) is not None  # it is back on the same port
    r = httpx.post(
        f"{server.url}/v1/decide",
        json={"customer_id": "x", "channel": "web"},
        headers=server.headers,
    )
    assert r.status_code == 200


def test_killed_supervisor_is_restarted_and_events_keep_flowing(
    server: Server, client: httpx.Client
) -> None:
    """Events never go through the supervisor: they keep flowing while it restarts;
    status waits for it (503 supervisor_unavailable), then answers again."""
    ns = server.config.server.namespace
    customers = [c for cs in customers_per_shard(server, 5, "sup").values() for c in cs]
    codes: Counter[str] = Counter()

    def kill(_: int) -> None:
        sup = ray.get_actor("supervisor", namespace=ns)
        os.kill(ray.get(sup.pid.remote()), signal.SIGKILL)
        r = client.get("/v1/status")
        codes[r.json()["error"]["code"] if r.status_code == 503 else str(r.status_code)] += 1

    figures = under_load(server, customers, kill, seconds=12, every=4, rate=150, threads=3)
    FIGURES.append(figures.line("supervisor SIGKILLed"))
    assert figures.kills == 2
    assert figures.lost == 0 and figures.doubled == 0 and figures.other_5xx == 0, figures
    assert set(codes) <= {"supervisor_unavailable", "200"}, codes
    status = wait_until(
        lambda: (r := client.get("/v1/status")).status_code == 200 and r.json(), 60, "status"
    )
    assert all(s.get("ready") is not False for s in status["shards"])


def test_stop_and_start_restores_every_profile(server: Server, client: httpx.Client) -> None:
    """Stopping the shards snapshots them; the next ones restore the same state."""
    n = server.config.server.shards

    def digests() -> list[str]:
        return [ray.get(_shard(server, i).state_digest.remote()) for i in range(n)]

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
        for cid, view in before.items():
            # a 503 at first: the ingress then finds the new shard actor by its name
            r = wait_until(
                lambda cid=cid: (r := c.get(f"/v1/profiles/{cid}")).status_code != 503 and r,
                30,
                "the ingress to find the new shards",
            )
            assert {k: r.json()[k] for k in keep} == view
        shards = c.get("/v1/status").json()["shards"]
    assert all(s["recovery"]["snapshot_profiles"] > 0 for s in shards), shards
