"""nextbest_client against a live server (two shards, each on its own port): each
customer's requests reach its owner's endpoint and read back the same through the
ingress; a slot range moved while the client sends is followed to its new owner (421,
one map fetch) with nothing lost or doubled; events sent while a shard is SIGKILLed are
retried with the same ids and each acknowledged one counts once; the producer sends
fewer requests than events. Sync and async."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import uuid
from collections import Counter
from concurrent.futures import Future
from typing import Any

import ray

from nextbest_client import AsyncClient, Client, SlotMap, slot_of
from tests.integration.chaos import profile_counts
from tests.integration.harness import ALL_SCOPES_KEY, Load, Server, wait_until

DEADLINE = 120.0  # a shard's recovery on a loaded 2-core machine fits in it


def client(server: Server, **options: Any) -> Client:
    return Client(server.url, ALL_SCOPES_KEY, deadline=DEADLINE, **options)


def current_map(server: Server) -> SlotMap:
    with client(server, routing=False) as nb:
        return nb.cluster_slots()


def customers_of(slot_map: SlotMap, n: int, slots: range | None = None) -> dict[int, list[str]]:
    """`n` fresh customers on each shard (only in `slots`, when given: one shard's)."""
    out: dict[int, list[str]] = {}
    shards = {s for _, _, s in slot_map.ranges}
    if slots is not None:
        shards = {slot_map.shard_of(slots[0])}
    while any(len(out.get(s, [])) < n for s in shards):
        c = f"cl-{uuid.uuid4().hex[:10]}"
        if slots is not None and slot_of(c) not in slots:
            continue
        shard = slot_map.shard_of(slot_of(c))
        if len(out.setdefault(shard, [])) < n:
            out[shard].append(c)
    return out


def test_each_request_reaches_its_owner_and_reads_back_the_same_at_the_ingress(
    server: Server,
) -> None:
    slot_map = current_map(server)
    people = customers_of(slot_map, 4)
    endpoint = {s: slot_map.endpoints[s] for s in people}
    assert all(endpoint.values()), slot_map  # every shard has its own port
    everyone = [c for cs in people.values() for c in cs]
    for use_msgpack in (True, False):
        with client(server, msgpack=use_msgpack) as nb:
            events = [{"customer_id": c, "type": "page_view", "properties": {"page": "loans"}}
                      for c in everyone for _ in range(2)]  # fmt: skip
            assert nb.send_events(events).accepted == len(events)  # one request per shard
            decisions = [nb.decide(c, "web", limit=2) for c in everyone]
            outcomes = [nb.outcome(d.decision_id, d.actions[0].action_id, "click")
                        for d in decisions if d.actions]  # fmt: skip
            profiles = {c: nb.profile(c) for c in everyone}
            explained = nb.decide(everyone[0], "call_center", explain=True, dry_run=True)
            assert explained.explanation and explained.customer_id == everyone[0]
            assert (nb.stats.moved, nb.stats.fallbacks, nb.stats.retries) == (0, 0, 0)
            expected: Counter[str] = Counter()
            for shard, cs in people.items():
                mine = sum(1 for d in decisions if d.actions and d.customer_id in cs)
                expected[endpoint[shard]] = 1 + 2 * len(cs) + mine + (everyone[0] in cs)
            assert nb.stats.requests == expected  # nothing went through the ingress
        assert all(o.accepted == 1 for o in outcomes)
        for shard, cs in people.items():
            for c in cs:
                assert profiles[c].shard == shard, (c, profiles[c])  # answered by its owner
                assert profiles[c].customer_id == c
        with server.client() as ingress:  # the same state, read through the ingress
            for c in everyone:
                body = ingress.get(f"/v1/profiles/{c}").json()
                assert body["aggregates"] == profiles[c].aggregates
                assert body["recent_decisions"] == profiles[c].recent_decisions
    assert profile_counts(server, everyone) == {c: 4 for c in everyone}


def test_the_async_client_routes_decides_and_batches_the_same_way(server: Server) -> None:
    slot_map = current_map(server)
    people = customers_of(slot_map, 5)
    everyone = [c for cs in people.values() for c in cs]

    async def run() -> tuple[list[str], Any]:
        async with AsyncClient(server.url, ALL_SCOPES_KEY, deadline=DEADLINE) as nb:
            decisions = await asyncio.gather(*(nb.decide(c, "app") for c in everyone))
            assert [d.customer_id for d in decisions] == everyone
            async with nb.producer(linger_s=0.02, batch_size=50) as p:
                futures = [p.send({"customer_id": c, "type": "page_view"})
                           for _ in range(20) for c in everyone]  # fmt: skip
            ids = list(await asyncio.gather(*futures))
            return ids, nb.stats

    ids, stats = asyncio.run(run())
    assert len(set(ids)) == 20 * len(everyone)
    endpoints = {slot_map.endpoints[s] for s in people}
    assert set(stats.requests) == endpoints and stats.moved == 0
    batches = sum(stats.requests.values()) - len(everyone)  # the decisions aside
    assert batches < len(ids) // 10, stats  # batched: far fewer requests than events
    assert profile_counts(server, everyone) == {c: 20 for c in everyone}


def move(server: Server, first: int, last: int, to: int) -> None:
    with server.client() as c:
        r = c.post("/v1/shards/move", json={"first": first, "last": last, "to": to})
        assert r.status_code == 202, r.text

        def done() -> dict[str, Any] | None:
            moving = c.get("/v1/shards").json()["moving"]
            return None if moving["state"] == "running" else moving

        moving = wait_until(done, 180, "the slot move to end")
    assert moving["state"] == "done", moving


def test_a_moved_range_is_followed_to_its_new_owner_nothing_lost_or_doubled(
    server: Server,
) -> None:
    slot_map = current_map(server)
    first, last, src = slot_map.ranges[0]
    moved = range(first, min(last, first + 255) + 1)
    dst = next(s for s in slot_map.endpoints if s != src)
    people = customers_of(slot_map, 6, moved)[src]
    acked: Counter[str] = Counter()
    lock = threading.Lock()
    with client(server) as nb:
        nb.send_events([{"customer_id": c, "type": "page_view"} for c in people])
        acked.update(people)
        assert set(nb.stats.requests) == {slot_map.endpoints[src]}

        def one_round() -> int:  # every customer one event, while the range moves
            nb.send_events([{"customer_id": c, "type": "page_view"} for c in people])
            with lock:
                acked.update(people)
            return len(people)

        load = Load()
        load.run(one_round, threads=2)
        load.wait_for(load.done + 20)
        move(server, moved.start, moved.stop - 1, dst)
        load.wait_for(load.done + 20)  # some rounds after the move, through the new owner
        load.stop()
        after = current_map(server)
        assert after.epoch > slot_map.epoch and after.shard_of(moved.start) == dst
        assert nb.stats.moved >= 1  # the old owner said 421 slot_moved at least once
        new_owner = after.endpoints[dst]
        assert new_owner is not None
        before_follow = nb.stats.requests[new_owner]
        one_round()
        assert nb.stats.requests[new_owner] == before_follow + 1
        assert {p.shard for p in map(nb.profile, people)} == {dst}
        move(server, moved.start, moved.stop - 1, src)  # and back: followed again
        moved_before = nb.stats.moved
        one_round()
        assert nb.stats.moved == moved_before + 1
        assert {p.shard for p in map(nb.profile, people)} == {src}
    assert profile_counts(server, people) == dict(acked)


def _kill(server: Server, shard: int) -> None:
    actor = ray.get_actor(f"shard-{shard}", namespace=server.config.server.namespace)
    os.kill(int(ray.get(actor.pid.remote())), signal.SIGKILL)


def test_events_sent_while_a_shard_is_killed_are_each_counted_once(server: Server) -> None:
    slot_map = current_map(server)
    people = customers_of(slot_map, 5)
    victim = min(people)
    everyone = [c for cs in people.values() for c in cs]
    old = slot_map.endpoints[victim]
    acked: Counter[str] = Counter()
    lock = threading.Lock()
    with client(server) as nb, nb.producer(linger_s=0.01, batch_size=100) as producer:

        def one_round() -> int:
            futures: list[tuple[str, Future[str]]] = [
                (c, producer.send({"customer_id": c, "type": "page_view"})) for c in everyone
            ]
            for c, f in futures:
                f.result(timeout=DEADLINE + 30)  # an error here fails the test
                with lock:
                    acked[c] += 1
            return len(futures)

        load = Load()
        load.run(one_round, threads=3)
        load.wait_for(200)
        _kill(server, victim)

        def back() -> str | None:
            endpoint = current_map(server).endpoints.get(victim)
            return endpoint if endpoint and endpoint != old else None

        new = wait_until(back, 180, f"shard {victim} on a port of its own again")
        load.wait_for(load.done + 200)
        wait_until(lambda: nb.stats.requests[new] > 0, 60, "the client to use the new port")
        load.stop()
        assert nb.stats.fallbacks >= 1  # the dead port sent requests to the ingress
    assert profile_counts(server, everyone) == dict(acked)
    assert sum(acked.values()) > sum(nb.stats.requests.values())  # batched
