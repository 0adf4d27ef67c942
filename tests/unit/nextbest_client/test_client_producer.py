"""The producers against a real local server: events leave in batches per owner (fewer
requests than events), each future gives its event's id once acknowledged, a batch
answered 503 is sent again with the same ids, close() sends what waits, and an error
reaches exactly the futures of the events it left unacknowledged."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from nextbest_client import AsyncClient, BadRequest, Client
from tests.unit.nextbest_client.scripted import error, ok, scripted, unavailable
from tests.unit.nextbest_client.test_client_routing import customers, halves


def delivered(servers: list[Any]) -> Counter[str]:
    """Each event id the servers acknowledged, and how often they got it."""
    return Counter(e["event_id"] for s in servers for g in s.acked("/v1/events")
                   for e in g.value)  # fmt: skip


def test_events_go_in_batches_per_owner_and_every_future_gets_its_id() -> None:
    with scripted(3) as [ingress, a, b]:
        ingress.default("/v1/cluster/slots", ok(halves(1, a.url, b.url)))
        people = customers(0, 10) + customers(1, 10)
        with Client(ingress.url) as nb:
            nb.cluster_slots()
            with nb.producer(linger_s=60, batch_size=7) as p:  # only size and close() send
                futures = [p.send({"customer_id": c, "type": "t", "n": k})
                           for k in range(10) for c in people]  # fmt: skip
            ids = [f.result(timeout=0) for f in futures]
        assert len(set(ids)) == 200 and all(len(i) == 32 for i in ids)
        assert delivered([a, b]) == Counter(ids)  # each once
        assert len(a.requests("/v1/events")) + len(b.requests("/v1/events")) == 30  # 100/7 up
        assert ingress.requests("/v1/events") == []
        for s, mine in ((a, set(customers(0, 10))), (b, set(customers(1, 10)))):
            assert {e["customer_id"] for g in s.requests("/v1/events") for e in g.value} == mine


def test_linger_sends_without_a_flush_and_an_id_given_is_kept() -> None:
    with scripted() as [srv], Client(srv.url, routing=False) as nb:
        p = nb.producer(linger_s=0.01, batch_size=500)
        futures = [p.send({"customer_id": f"c{i}", "type": "t", "event_id": f"e{i}"})
                   for i in range(5)]  # fmt: skip
        assert [f.result(timeout=10) for f in futures] == [f"e{i}" for i in range(5)]
        assert len(srv.requests("/v1/events")) == 1
        p.close()


def test_a_batch_answered_503_is_sent_again_with_the_same_ids() -> None:
    with scripted() as [srv]:
        srv.script("/v1/events", unavailable(), unavailable())
        with Client(srv.url, routing=False) as nb, nb.producer(60, batch_size=50) as p:
            futures = [p.send({"customer_id": f"c{i}", "type": "t"}) for i in range(50)]
            p.flush()
            assert all(f.done() for f in futures)
        got = srv.requests("/v1/events")
        assert len(got) == 3 and len({g.body for g in got}) == 1
        assert sorted(e["event_id"] for e in got[0].value) == sorted(f.result() for f in futures)


def test_an_error_fails_only_the_futures_of_its_batch() -> None:
    with scripted(3) as [ingress, a, b]:
        ingress.default("/v1/cluster/slots", ok(halves(1, a.url, b.url)))
        b.default("/v1/events", error(422, "invalid_field", "[0].properties"))
        with Client(ingress.url) as nb:
            nb.cluster_slots()
            with nb.producer() as p:
                good = [p.send({"customer_id": c, "type": "t"}) for c in customers(0, 3)]
                bad = [p.send({"customer_id": c, "type": "t"}) for c in customers(1, 3)]
        assert all(len(f.result()) == 32 for f in good)
        for f in bad:
            with pytest.raises(BadRequest):
                f.result()


def test_a_closed_producer_refuses_events() -> None:
    with scripted() as [srv], Client(srv.url, routing=False) as nb:
        p = nb.producer()
        p.close()
        with pytest.raises(RuntimeError):
            p.send({"customer_id": "c", "type": "t"})


def test_the_async_producer_batches_retries_and_flushes() -> None:
    async def run(url: str) -> list[str]:
        async with AsyncClient(url, routing=False) as nb:
            async with nb.producer(linger_s=60, batch_size=40) as p:
                futures = [p.send({"customer_id": f"c{i % 7}", "type": "t"}) for i in range(100)]
                await p.flush()
                assert all(f.done() for f in futures)
                more = p.send({"customer_id": "c", "type": "t", "event_id": "last"})
            return [*(await asyncio.gather(*futures)), await more]

    with scripted() as [srv]:
        srv.script("/v1/events", unavailable())
        ids = asyncio.run(run(srv.url))
        assert len(set(ids)) == 101 and ids[-1] == "last"
        assert delivered([srv]) == Counter(ids)  # each acknowledged once...
        sizes = [len(g.value) for g in srv.requests("/v1/events")]
        assert sorted(sizes) == [1, 20, 40, 40, 40]  # ...one batch sent twice (a 503 first)
