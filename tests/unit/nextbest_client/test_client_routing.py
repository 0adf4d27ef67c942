"""Routing against real local servers: one plays the ingress (it publishes the map),
two play shards' own endpoints. Each customer's request goes to its owner's endpoint
with `X-Nextbest-Route: strict`; a 421 fetches the map again (once, however many
requests got one) and follows it; a dead endpoint sends the request to the ingress."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from nextbest_client import SLOTS, AsyncClient, Client, slot_of
from tests.unit.nextbest_client.scripted import (
    Answer,
    Scripted,
    closed_port,
    error,
    ok,
    scripted,
    slot_map,
)

HALF = SLOTS // 2


def customers(shard: int, n: int, prefix: str = "c") -> list[str]:
    """`n` customers whose slot is in shard `shard`'s half of the map."""
    out, i = [], 0
    while len(out) < n:
        c = f"{prefix}-{i}"
        if (slot_of(c) >= HALF) == bool(shard):
            out.append(c)
        i += 1
    return out


@pytest.fixture
def cluster() -> Iterator[tuple[Scripted, Scripted, Scripted]]:
    """(ingress, shard 0's endpoint, shard 1's endpoint); shard 0 owns the lower half."""
    with scripted(3) as [ingress, a, b]:
        ingress.default("/v1/cluster/slots", ok(halves(1, a.url, b.url)))
        yield ingress, a, b


def halves(epoch: int, a: str | None, b: str | None, owner_of_low: int = 0) -> dict[str, Any]:
    return slot_map(epoch, [(0, HALF - 1, owner_of_low), (HALF, SLOTS - 1, 1)], {0: a, 1: b})


def strict(got: Any) -> bool:
    return got.headers.get("x-nextbest-route") == "strict"


def test_each_customer_goes_to_its_owners_endpoint(cluster: Any) -> None:
    ingress, a, b = cluster
    on_a, on_b = customers(0, 5), customers(1, 5)
    with Client(ingress.url, "k") as nb:
        for c in on_a + on_b:
            nb.send_event(c, "page_view")
            nb.profile(c)
        nb.decide(on_a[0], "web")
        nb.outcome(f"d-{slot_of(on_b[0]):04x}-ab", "x", "click")  # where its decision was made
    assert {e["customer_id"] for g in a.requests("/v1/events") for e in g.value} == set(on_a)
    assert {e["customer_id"] for g in b.requests("/v1/events") for e in g.value} == set(on_b)
    assert all(strict(g) for g in a.requests() + b.requests())
    assert [g.path for g in a.requests() if g.path.startswith("/v1/profiles/")] == [
        f"/v1/profiles/{c}" for c in on_a
    ]
    assert len(a.requests("/v1/decide")) == 1 and len(b.requests("/v1/outcomes")) == 1
    assert [g.path for g in ingress.requests()] == ["/v1/cluster/slots"]  # fetched once


def test_events_go_one_request_per_owner_in_chunks_of_max_batch(cluster: Any) -> None:
    ingress, a, b = cluster
    on_a, on_b = customers(0, 5), customers(1, 2)
    events = [{"customer_id": c, "type": "t"} for c in on_a + on_b]
    with Client(ingress.url, max_batch=2, batch_size=2) as nb:
        nb.send_events(events)
    assert [len(g.value) for g in a.requests("/v1/events")] == [2, 2, 1]
    assert [len(g.value) for g in b.requests("/v1/events")] == [2]
    sent = [e["customer_id"] for s in (a, b) for g in s.requests("/v1/events") for e in g.value]
    assert sent == on_a + on_b  # in order within an owner
    assert events[0] == {"customer_id": on_a[0], "type": "t"}  # the caller's dicts untouched


def test_routing_off_sends_everything_to_the_url_without_the_strict_header(cluster: Any) -> None:
    ingress, a, b = cluster
    with Client(ingress.url, routing=False) as nb:
        for c in customers(0, 2) + customers(1, 2):
            nb.send_event(c, "t")
    assert a.requests() == [] and b.requests() == []
    assert [g.path for g in ingress.requests()] == ["/v1/events"] * 4
    assert not any(strict(g) for g in ingress.requests())


def test_a_shard_without_an_endpoint_is_reached_through_the_ingress(cluster: Any) -> None:
    ingress, a, b = cluster
    ingress.default("/v1/cluster/slots", ok(halves(1, a.url, None)))
    with Client(ingress.url) as nb:
        nb.send_event(customers(1, 1)[0], "t")
        nb.send_event(customers(0, 1)[0], "t")
    assert len(ingress.requests("/v1/events")) == 1 and len(a.requests("/v1/events")) == 1
    assert b.requests() == []


def test_slot_moved_fetches_the_map_and_follows_it(cluster: Any) -> None:
    ingress, a, b = cluster
    c = customers(0, 1)[0]
    with Client(ingress.url) as nb:
        nb.send_event(c, "t")  # shard 0 owns it
        ingress.default("/v1/cluster/slots", ok(halves(2, a.url, b.url, owner_of_low=1)))
        a.default("/v1/events", error(421, "slot_moved"))  # its slots moved to shard 1
        assert nb.send_event(c, "t", event_id="e-2").accepted == 1
        assert (nb.stats.moved, nb.stats.map_fetches) == (1, 2)
        assert nb.routing.map is not None and nb.routing.map.epoch == 2
        nb.send_event(c, "t")  # straight to the new owner
    assert [g.value[0].get("event_id") for g in a.requests("/v1/events")][1:] == ["e-2"]
    assert [g.value[0]["event_id"] for g in b.requests("/v1/events")][0] == "e-2"
    assert len(b.requests("/v1/events")) == 2 and len(a.requests("/v1/events")) == 2


def test_a_second_421_for_a_request_goes_through_the_ingress(cluster: Any) -> None:
    ingress, a, b = cluster  # the shard disagrees with the published map: the ingress decides
    a.default("/v1/decide", error(421, "slot_moved"))
    decision = {"decision_id": "d-0000-x", "customer_id": "c", "channel": "web", "actions": []}
    ingress.default("/v1/decide", ok(decision))
    with Client(ingress.url) as nb:
        assert nb.decide(customers(0, 1)[0], "web").decision_id == "d-0000-x"
        assert nb.stats.moved == 2
    assert len(a.requests("/v1/decide")) == 2 and len(ingress.requests("/v1/decide")) == 1
    assert not strict(ingress.requests("/v1/decide")[0])


def test_many_requests_moved_at_once_fetch_the_map_once(cluster: Any) -> None:
    ingress, a, b = cluster
    gate = threading.Barrier(8)
    on_a = customers(0, 8)

    with Client(ingress.url) as nb:
        nb.cluster_slots()  # the map before the move
        ingress.default("/v1/cluster/slots", ok(halves(2, a.url, b.url, owner_of_low=1)))
        moved = {"error": {"code": "slot_moved", "message": ""}}
        a.default("/v1/events", Answer(421, moved, delay=0.3))  # all in flight at once

        def send(c: str) -> None:
            gate.wait()
            nb.send_event(c, "t")

        threads = [threading.Thread(target=send, args=(c,)) for c in on_a]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert nb.stats.moved == 8
        assert nb.stats.map_fetches == 2  # cluster_slots() aside: the first and one after
    assert len(b.requests("/v1/events")) == 8


def test_a_dead_endpoint_sends_the_request_to_the_ingress_and_refetches(cluster: Any) -> None:
    ingress, a, b = cluster
    dead = closed_port()
    ingress.default("/v1/cluster/slots", ok(halves(1, dead, b.url)))
    c = customers(0, 1)[0]
    with Client(ingress.url) as nb:
        assert nb.send_event(c, "t", event_id="e-1").accepted == 1
        assert (nb.stats.fallbacks, nb.stats.map_fetches) == (1, 2)
        nb.send_event(c, "t")  # the endpoint is left alone a while: straight to the ingress
        assert nb.stats.fallbacks == 1 and nb.stats.requests[dead] == 1
    assert [g.value[0]["event_id"] for g in ingress.requests("/v1/events")][0] == "e-1"
    assert not any(strict(g) for g in ingress.requests("/v1/events"))


def test_no_map_means_the_ingress(cluster: Any) -> None:
    ingress, a, b = cluster
    ingress.default("/v1/cluster/slots", error(401, "unauthenticated"))
    ingress.default("/v1/events", error(401, "unauthenticated"))
    with Client(ingress.url, "bad") as nb, pytest.raises(Exception, match="unauthenticated"):
        nb.send_event("c", "t")
    assert a.requests() == [] and b.requests() == []


def test_the_async_client_routes_and_follows_moves_the_same_way(cluster: Any) -> None:
    ingress, a, b = cluster
    on_a, on_b = customers(0, 3), customers(1, 3)

    async def run() -> tuple[int, int]:
        async with AsyncClient(ingress.url) as nb:
            await nb.send_events([{"customer_id": c, "type": "t"} for c in on_a + on_b])
            ingress.default("/v1/cluster/slots", ok(halves(2, a.url, b.url, owner_of_low=1)))
            a.default("/v1/events", error(421, "slot_moved"))
            await asyncio.gather(*(nb.send_event(c, "t") for c in on_a))
            return nb.stats.moved, nb.stats.map_fetches

    moved, fetches = asyncio.run(run())
    assert moved == 3 and fetches == 2
    assert [len(g.value) for g in a.requests("/v1/events")][0] == 3
    assert len(b.requests("/v1/events")) == 1 + 3


def test_an_owner_without_endpoint_is_looked_up_again_until_it_has_one(cluster: Any) -> None:
    ingress, a, b = cluster  # shard 1 restarting: null in the map, then back on a port
    ingress.default("/v1/cluster/slots", ok(halves(1, a.url, None)))
    c = customers(1, 1)[0]
    with Client(ingress.url) as nb:
        nb.send_event(c, "t")
        ingress.default("/v1/cluster/slots", ok(halves(1, a.url, b.url)))
        deadline = time.monotonic() + 10
        while not b.requests("/v1/events"):  # each a real request: no sleep in between
            assert time.monotonic() < deadline, "the client never looked the endpoint up again"
            nb.send_event(c, "t")
        assert nb.stats.map_fetches == 2 and nb.stats.fallbacks == 0


def test_a_decision_sends_only_what_was_given_and_request_id_only_when_given(
    cluster: Any,
) -> None:
    ingress, a, b = cluster  # the server refuses unknown fields: none may slip in
    c = customers(0, 1)[0]
    with Client(ingress.url, msgpack=False) as nb:
        nb.decide(c, "web")
        nb.decide(c, "web", placement="hero", context={"page": "/x"}, limit=2, explain=True,
                  dry_run=True, event={"type": "page_view"}, request_id="r-1")  # fmt: skip
    plain, full = (g.value for g in a.requests("/v1/decide"))
    assert plain == {"customer_id": c, "channel": "web"}
    event_id = full["event"].pop("event_id")  # a retried decision applies its event once
    assert len(event_id) == 32
    assert full == {"customer_id": c, "channel": "web", "placement": "hero",
                    "context": {"page": "/x"}, "limit": 2, "explain": True, "dry_run": True,
                    "event": {"type": "page_view"}, "request_id": "r-1"}  # fmt: skip
