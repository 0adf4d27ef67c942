"""The sync client: `Client(url, api_key)`; every method blocks until its answer.

Thread-safe: one client serves many threads (a connection pool per endpoint, the map
fetched by one thread at a time). See docs/client.md.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import httpx

from nextbest_client import calls
from nextbest_client.common import Common, decoded, retry_after_of
from nextbest_client.errors import NextbestError
from nextbest_client.exchange import Again, Call, Exchange
from nextbest_client.producer import Producer
from nextbest_client.results import Accepted, Decision, Profile
from nextbest_client.slots import SlotMap

__all__ = ["Client"]


class Client(Common):
    """A nextbest client that sends each customer's requests to its shard's endpoint.

    `Client(url, api_key, timeout=10, routing=True, msgpack=True, deadline=10,
    max_wait=2, linger_s=0.005, batch_size=500)`: `url` is the ingress; `routing=False`
    sends everything there; `deadline` bounds the retries of one call; `linger_s` and
    `batch_size` are the defaults of `producer()`.
    """

    def _setup(self) -> None:
        self._pools: dict[str, httpx.Client] = {}
        self._lock = threading.Lock()  # the pools
        self._fetching = threading.Lock()  # one map fetch at a time
        self._closed = False

    # -- the API --------------------------------------------------------------------------

    def decide(
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
        return Decision.from_wire(self._request(call))

    def send_event(
        self,
        customer_id: str,
        type: str,
        properties: Mapping[str, Any] | None = None,
        *,
        ts: float | str | datetime | None = None,
        event_id: str | None = None,
    ) -> Accepted:
        """One event (its id: `event_id`, or a new one)."""
        return self.send_events([calls.event_of(customer_id, type, properties, ts, event_id)])

    def send_events(self, events: Iterable[Mapping[str, Any]]) -> Accepted:
        """Events, one request per owning shard (at most `max_batch` each). On an error,
        the error's `pending` holds the events not acknowledged, with their ids."""
        self._ensure_map()
        accepted, errors = [], []
        for group in self._groups(events, time.monotonic()):
            try:
                accepted.append(Accepted.from_wire(self._request(self._events_call(group))))
            except NextbestError as e:
                e.pending = group
                errors.append(e)
        if errors:
            errors[0].pending = [ev for e in errors for ev in e.pending]
            raise errors[0]
        return Accepted.total(accepted)

    def outcome(
        self,
        decision_id: str,
        action_id: str,
        outcome: str,
        *,
        ts: float | str | datetime | None = None,
    ) -> Accepted:
        """What the customer did with a decision's action: impression, click, accept,
        reject or convert."""
        call = calls.outcome_call(self.settings.use_msgpack, decision_id, action_id, outcome, ts)
        return Accepted.from_wire(self._request(call))

    def profile(self, customer_id: str) -> Profile:
        """The live profile (read from the customer's shard)."""
        return Profile.from_wire(self._request(calls.profile_call(customer_id)))

    def cluster_slots(self) -> SlotMap:
        """`GET /v1/cluster/slots` from the ingress (this client routes by it from now)."""
        return self._installed(self._request(Call("GET", "/v1/cluster/slots")))

    def producer(self, linger_s: float | None = None, batch_size: int | None = None) -> Producer:
        """A batching event producer over this client (see producer.py)."""
        s = self.settings
        return Producer(self, s.linger_s if linger_s is None else linger_s,
                        s.batch_size if batch_size is None else batch_size)  # fmt: skip

    def close(self) -> None:
        with self._lock:
            self._closed = True
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the driver -----------------------------------------------------------------------

    def _events_call(self, group: list[dict[str, Any]]) -> Call:
        return calls.events_call(group, self.settings.use_msgpack)

    def _pool(self, base: str) -> httpx.Client:
        with self._lock:
            if self._closed:
                raise RuntimeError("the client is closed")
            pool = self._pools.get(base)
            if pool is None:
                pool = self._pools[base] = httpx.Client(**self._pool_args(base))
            return pool

    def _request(self, call: Call) -> Any:
        """Send `call` where it belongs until answered or the deadline (exchange.py)."""
        self._ensure_map()
        ex = Exchange(call, self.routing, self.settings.retry, time.monotonic())
        while True:
            now = time.monotonic()
            target = ex.target(now)
            self.stats.sent(target.base)
            try:
                r = self._pool(target.base).request(
                    call.method, call.path, content=call.body, headers=target.headers,
                    timeout=ex.timeout(now, self.settings.timeout),
                )  # fmt: skip
            except httpx.TransportError as e:
                step: Any = ex.failed(target, e, time.monotonic())
                if target.strict:
                    self.stats.count("fallbacks")
            else:
                body = decoded(r)
                step = ex.answered(
                    target, r.status_code, body, retry_after_of(r, time.time()), time.monotonic()
                )
                if r.status_code == 421:
                    self.stats.count("moved")
            if not isinstance(step, Again):
                return step.value
            if step.refresh:
                self._refresh(step.generation)
            else:
                self.stats.count("retries")
            if step.wait > 0:
                time.sleep(step.wait)

    def _ensure_map(self) -> None:
        if self.routing.wants_fetch(time.monotonic()):
            self._refresh(self.routing.generation)

    def _refresh(self, seen: int) -> None:
        """Fetch the map unless a fetch that ended after `seen` was taken has it."""
        with self._fetching:
            if self.routing.generation != seen:
                return
            self.stats.count("map_fetches")
            try:
                r = self._pool(self.routing.url).get(
                    "/v1/cluster/slots", timeout=min(self.settings.timeout, 5.0)
                )
                if r.status_code != 200:
                    raise ValueError(r.status_code)
                self._installed(decoded(r))
            except (httpx.TransportError, ValueError, KeyError, TypeError):
                self.routing.fetch_failed(time.monotonic())
