"""The async client: `AsyncClient(url, api_key)`, the sync client's API as coroutines.

One client per event loop. A call's groups (events of several shards) go concurrently.
See docs/client.md.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import httpx

from nextbest_client import calls
from nextbest_client.common import Common, decoded, retry_after_of
from nextbest_client.errors import NextbestError
from nextbest_client.exchange import Again, Call, Exchange
from nextbest_client.producer import AsyncProducer
from nextbest_client.results import Accepted, Decision, Profile
from nextbest_client.slots import SlotMap

__all__ = ["AsyncClient"]


class AsyncClient(Common):
    """`Client`'s API, each method a coroutine (same arguments, same results)."""

    def _setup(self) -> None:
        self._pools: dict[str, httpx.AsyncClient] = {}
        self._fetching = asyncio.Lock()  # one map fetch at a time
        self._closed = False

    # -- the API --------------------------------------------------------------------------

    async def decide(
        self,
        customer_id: str,
        channel: str,
        *,
        placement: str | None = None,
        context: Mapping[str, Any] | None = None,
        limit: int | None = None,
        explain: bool = False,
        dry_run: bool = False,
        event: Mapping[str, Any] | None = None,
        request_id: str | None = None,
    ) -> Decision:
        """The next best actions for a customer in a channel (`event`: applied first)."""
        call = calls.decide_call(
            self.settings.use_msgpack, customer_id, channel, placement, context, limit,
            explain, dry_run, event, request_id,
        )  # fmt: skip
        return Decision.from_wire(await self._request(call))

    async def send_event(
        self,
        customer_id: str,
        type: str,
        properties: Mapping[str, Any] | None = None,
        *,
        ts: float | str | datetime | None = None,
        event_id: str | None = None,
    ) -> Accepted:
        """One event (its id: `event_id`, or a new one)."""
        ev = calls.event_of(customer_id, type, properties, ts, event_id)
        return await self.send_events([ev])

    async def send_events(self, events: Iterable[Mapping[str, Any]]) -> Accepted:
        """Events, one request per owning shard, concurrently (at most `max_batch`
        each). On an error, its `pending` holds the events not acknowledged."""
        await self._ensure_map()
        groups = self._groups(events, time.monotonic())
        answers = await asyncio.gather(
            *(self._request(calls.events_call(g, self.settings.use_msgpack)) for g in groups),
            return_exceptions=True,
        )
        accepted, errors = [], []
        for group, answer in zip(groups, answers, strict=True):
            if isinstance(answer, NextbestError):
                answer.pending = group
                errors.append(answer)
            elif isinstance(answer, BaseException):
                raise answer
            else:
                accepted.append(Accepted.from_wire(answer))
        if errors:
            errors[0].pending = [ev for e in errors for ev in e.pending]
            raise errors[0]
        return Accepted.total(accepted)

    async def outcome(
        self,
        decision_id: str,
        action_id: str,
        outcome: str,
        *,
        ts: float | str | datetime | None = None,
    ) -> Accepted:
        """What the customer did with a decision's action."""
        call = calls.outcome_call(self.settings.use_msgpack, decision_id, action_id, outcome, ts)
        return Accepted.from_wire(await self._request(call))

    async def profile(self, customer_id: str) -> Profile:
        """The live profile (read from the customer's shard)."""
        return Profile.from_wire(await self._request(calls.profile_call(customer_id)))

    async def cluster_slots(self) -> SlotMap:
        """`GET /v1/cluster/slots` from the ingress (this client routes by it from now)."""
        return self._installed(await self._request(Call("GET", "/v1/cluster/slots")))

    def producer(
        self, linger_s: float | None = None, batch_size: int | None = None
    ) -> AsyncProducer:
        """A batching event producer over this client (see producer.py)."""
        s = self.settings
        return AsyncProducer(self, s.linger_s if linger_s is None else linger_s,
                             s.batch_size if batch_size is None else batch_size)  # fmt: skip

    async def aclose(self) -> None:
        self._closed = True
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            await pool.aclose()

    close = aclose

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- the driver -----------------------------------------------------------------------

    def _pool(self, base: str) -> httpx.AsyncClient:
        if self._closed:
            raise RuntimeError("the client is closed")
        pool = self._pools.get(base)
        if pool is None:
            pool = self._pools[base] = httpx.AsyncClient(**self._pool_args(base))
        return pool

    async def _request(self, call: Call) -> Any:
        """Send `call` where it belongs until answered or the deadline (exchange.py)."""
        await self._ensure_map()
        ex = Exchange(call, self.routing, self.settings.retry, time.monotonic())
        while True:
            now = time.monotonic()
            target = ex.target(now)
            self.stats.sent(target.base)
            try:
                r = await self._pool(target.base).request(
                    call.method, call.path, content=call.body, headers=target.headers,
                    timeout=ex.timeout(now, self.settings.timeout),
                )  # fmt: skip
            except httpx.TransportError as e:
                step: Any = ex.failed(target, e, time.monotonic())
                if target.strict:
                    self.stats.count("fallbacks")
            else:
                step = ex.answered(
                    target, r.status_code, decoded(r), retry_after_of(r, time.time()),
                    time.monotonic(),
                )  # fmt: skip
                if r.status_code == 421:
                    self.stats.count("moved")
            if not isinstance(step, Again):
                return step.value
            if step.refresh:
                await self._refresh(step.generation)
            else:
                self.stats.count("retries")
            if step.wait > 0:
                await asyncio.sleep(step.wait)

    async def _ensure_map(self) -> None:
        if self.routing.wants_fetch(time.monotonic()):
            await self._refresh(self.routing.generation)

    async def _refresh(self, seen: int) -> None:
        """Fetch the map unless a fetch that ended after `seen` was taken has it."""
        async with self._fetching:
            if self.routing.generation != seen:
                return
            self.stats.count("map_fetches")
            try:
                r = await self._pool(self.routing.url).get(
                    "/v1/cluster/slots", timeout=min(self.settings.timeout, 5.0)
                )
                if r.status_code != 200:
                    raise ValueError(r.status_code)
                self._installed(decoded(r))
            except (httpx.TransportError, ValueError, KeyError, TypeError):
                self.routing.fetch_failed(time.monotonic())
