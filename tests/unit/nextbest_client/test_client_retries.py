"""Retries against a real local server: a 503 or 429 is sent again (the same bytes, so
the same event ids) after Retry-After, capped and jittered, until the deadline; a
request that gets no answer likewise; nothing else is retried."""

from __future__ import annotations

import asyncio
import time

import pytest

from nextbest_client import AsyncClient, Client, Unavailable, Unreachable
from nextbest_client.exchange import Retry, parse_retry_after
from tests.unit.nextbest_client.scripted import Answer, closed_port, ok, scripted, unavailable


def test_the_wait_is_retry_after_capped_and_stretched_by_the_jitter() -> None:
    r = Retry(deadline=10, max_wait=2.0, backoff=0.05, jitter=0.2)
    assert r.wait(0, 1.0, 0.0) == 1.0
    assert r.wait(0, 1.0, 0.999) == pytest.approx(1.2, abs=1e-3)
    assert r.wait(5, 30.0, 0.0) == 2.0  # capped
    assert r.wait(0, 30.0, 0.999) <= 2.0 * 1.2
    assert [r.wait(n, None, 0.0) for n in range(7)] == [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0]
    assert r.wait(0, 0.0, 0.5) == 0.0


def test_retry_after_is_seconds_or_an_http_date() -> None:
    assert parse_retry_after("1", 0) == 1.0
    assert parse_retry_after(" 2.5 ", 0) == 2.5
    assert parse_retry_after("-3", 0) == 0.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", 1445412480.0) == 10.0
    assert parse_retry_after(None, 0) is None
    assert parse_retry_after("soon", 0) is None
    assert parse_retry_after("nan", 0) is None


def test_503s_then_200_the_same_body_every_time() -> None:
    with scripted() as [srv]:
        srv.script("/v1/events", unavailable("shard_unavailable"), unavailable("shard_timeout"),
                   Answer(429, {"error": {"code": "slow_down", "message": ""}},
                          {"retry-after": "0"}))  # fmt: skip
        with Client(srv.url, routing=False) as nb:
            assert nb.send_event("c-1", "page_view", {"page": "x"}).accepted == 1
            assert nb.stats.retries == 3
        got = srv.requests("/v1/events")
        assert len(got) == 4
        assert len({g.body for g in got}) == 1  # the very same bytes
        [event] = got[0].value
        assert len(event["event_id"]) == 32 and event["customer_id"] == "c-1"


def test_it_waits_what_retry_after_says() -> None:
    with scripted() as [srv]:
        srv.script("/v1/decide", unavailable(retry_after="1"))
        srv.default("/v1/decide", ok({"decision_id": "d-0001-x", "customer_id": "c",
                                      "channel": "web", "actions": []}))  # fmt: skip
        with Client(srv.url, routing=False) as nb:
            start = time.monotonic()
            assert nb.decide("c", "web").actions == []
            assert time.monotonic() - start >= 1.0


def test_at_the_deadline_the_last_503_is_raised_with_its_retry_after() -> None:
    with scripted() as [srv]:
        srv.default("/v1/events", unavailable("overloaded", retry_after="0"))
        with Client(srv.url, routing=False, deadline=0.5) as nb, pytest.raises(Unavailable) as info:
            nb.send_events([{"customer_id": "c", "type": "t", "event_id": "e1"},
                                {"customer_id": "d", "type": "t"}])  # fmt: skip
        assert info.value.code == "overloaded" and info.value.retry_after == 0.0
        assert len(srv.requests("/v1/events")) > 2
        pending = info.value.pending  # what to resend: the events with their ids
        assert [e["customer_id"] for e in pending] == ["c", "d"]
        assert pending[0]["event_id"] == "e1" and pending[1]["event_id"]
        assert {g.body for g in srv.requests("/v1/events")} == {srv.requests()[0].body}


def test_a_wait_past_the_deadline_is_not_waited() -> None:
    with scripted() as [srv]:
        srv.default("/v1/events", unavailable(retry_after="30"))
        with Client(srv.url, routing=False, deadline=3, max_wait=60) as nb:
            start = time.monotonic()
            with pytest.raises(Unavailable):
                nb.send_event("c", "t")
            assert time.monotonic() - start < 3
        assert len(srv.requests("/v1/events")) == 1


def test_a_503_without_the_error_object_is_retried_too() -> None:
    with scripted() as [srv]:
        srv.script("/v1/events", Answer(503, b"Service Unavailable", {"retry-after": "0"}))
        with Client(srv.url, routing=False) as nb:
            assert nb.send_event("c", "t").accepted == 1
        assert len(srv.requests("/v1/events")) == 2


def test_no_answer_is_retried_until_the_deadline_then_unreachable() -> None:
    url = closed_port()
    with Client(url, routing=False, deadline=0.5) as nb:
        with pytest.raises(Unreachable) as info:
            nb.profile("c")
        assert nb.stats.requests[url] >= 3  # 50, 100, 200 ms apart
    assert info.value.status == 0 and info.value.code == "unreachable"


def test_a_timeout_is_retried_with_the_same_body() -> None:
    with scripted() as [srv]:
        srv.script("/v1/events", Answer(200, {"accepted": 1}, delay=2.0))
        with Client(srv.url, routing=False, timeout=0.5, deadline=10) as nb:
            assert nb.send_event("c", "t").accepted == 1
        got = srv.requests("/v1/events")
        assert len(got) == 2 and got[0].body == got[1].body


def test_the_async_client_retries_the_same_way() -> None:
    async def run(url: str) -> int:
        async with AsyncClient(url, routing=False) as nb:
            accepted = await nb.send_events([{"customer_id": "c", "type": "t"}] * 3)
            return accepted.accepted

    with scripted() as [srv]:
        srv.script("/v1/events", unavailable(), unavailable())
        srv.default("/v1/events", ok({"accepted": 3}))
        assert asyncio.run(run(srv.url)) == 3
        got = srv.requests("/v1/events")
        assert len(got) == 3 and len({g.body for g in got}) == 1
        assert len({e["event_id"] for e in got[0].value}) == 3  # an id each


def test_the_async_client_gives_up_at_its_deadline() -> None:
    async def run(url: str) -> None:
        async with AsyncClient(url, routing=False, deadline=0.3) as nb:
            await nb.decide("c", "web")

    with scripted() as [srv]:
        srv.default("/v1/decide", unavailable("slot_moving"))
        with pytest.raises(Unavailable) as info:
            asyncio.run(run(srv.url))
        assert info.value.code == "slot_moving"
