"""Each shard serves its customers on a port of its own (no hop): the published slot
map names it, a request there is answered in the shard's process with the same API,
keys and errors, one for another shard's customer is forwarded once (or refused 421
when the client asked for strict routing) and never applied by a non-owner, and a
killed shard comes back on a port the map names again, its customers intact.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import uuid
from typing import Any

import httpx
import ray

from decisioning.profile.slots import SLOTS, slot_of
from tests.integration.chaos import under_load
from tests.integration.harness import FIGURES, Server, wait_until


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
            assert r.headers["www-authenticate"] == "Bearer"
            # bad input gets the ingress's errors at a shard's port too
            ct = {**server.headers, "content-type": "application/json"}
            r = c.post(f"{url}/v1/decide", content=b"{", headers=ct)
            assert r.status_code == 400 and r.json()["error"]["code"], r.text
            r = c.post(f"{url}/v1/events", json=[], headers=server.headers)
            assert r.status_code == 422 and r.json()["error"]["code"] == "empty_batch", r.text
            o = {"decision_id": "nope", "action_id": "a", "outcome": "click"}
            r = c.post(f"{url}/v1/outcomes", json=o, headers=server.headers)
            assert r.status_code == 404, r.text
            r = c.get(f"{url}/v1/nowhere", headers=server.headers)
            assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", r.text


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


class _Map:
    """A client's copy of the published slot map, fetched again on 421 or no answer."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.lock = threading.Lock()
        self.cluster = _slots(server)
        self.fetched = time.monotonic()
        self.fetches = 1
        self.direct = 0  # events sent to a shard's own port

    def route(self, customer: str, last_status: int) -> tuple[str, dict[str, str]]:
        seen = self.cluster
        stale = None in _endpoints_or_none(seen) and time.monotonic() - self.fetched > 1.0
        if last_status in (0, 421) or stale:
            with self.lock, contextlib.suppress(AssertionError, httpx.HTTPError):
                if self.cluster is seen:  # (another sender may have fetched it meanwhile)
                    self.fetched = time.monotonic()
                    self.cluster = _slots(self.server)
                    self.fetches += 1
        cluster = self.cluster
        endpoint = _endpoints(cluster).get(_owner(cluster, customer))
        if endpoint is None or last_status == 0:  # no port, or it did not answer
            return self.server.url, {}
        self.direct += 1
        return endpoint, {"x-nextbest-route": "strict"}


def _endpoints_or_none(cluster: dict[str, Any]) -> list[str | None]:
    return [s["endpoint"] for s in cluster["shards"]]


def test_events_sent_to_the_owners_while_slots_move_and_a_shard_dies_count_once(
    server: Server,
) -> None:
    """Retrying senders route each event to its owner's port (strict) while a range moves
    there and back and a shard is SIGKILLed: every acknowledged event counts once."""
    customers = [f"mv-{i}" for i in range(40)]
    slot_map = _Map(server)
    ns = server.config.server.namespace

    def change(k: int) -> None:
        if k < 2:  # the first half of shard 0's slots to shard 1, then back
            with server.client() as c:
                r = c.post("/v1/shards/move",
                           json={"first": 0, "last": 4095, "to": 1 - k})  # fmt: skip
                assert r.status_code == 202, r.text
            wait_until(lambda: (_shards_moving(server) or {}).get("state") != "running", 120,
                       "the move to end")  # fmt: skip
        elif k == 2:
            actor = ray.get_actor("shard-1", namespace=ns)
            os.kill(int(ray.get(actor.pid.remote())), signal.SIGKILL)

    figures = under_load(
        server, customers, change, seconds=20, every=5, rate=150, threads=4, changes=3,
        route=slot_map.route,
    )  # fmt: skip
    FIGURES.append(figures.line("events to the owners' ports while slots move and a shard dies"))
    assert figures.acked > 200, figures
    assert figures.lost == 0, figures
    assert figures.doubled == 0, figures
    assert figures.other_5xx == 0, figures
    assert slot_map.direct > figures.acked // 2, (slot_map.direct, figures)  # the owners' ports
    assert figures.statuses[421] > 0, figures  # the moves were seen and followed
    assert slot_map.fetches > 1


def _shards_moving(server: Server) -> dict[str, Any] | None:
    with server.client() as c:
        r = c.get("/v1/shards")
    assert r.status_code == 200, r.text
    return r.json()["moving"]  # type: ignore[no-any-return]
