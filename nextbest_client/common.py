"""What the sync and the async client share: their settings, the routing state, the
grouping of events by owner, and the counters a caller (or a benchmark) can read."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from nextbest_client.calls import MAX_BATCH, chunks, with_id
from nextbest_client.codec import decode, headers
from nextbest_client.exchange import Retry, parse_retry_after
from nextbest_client.routing import Routing
from nextbest_client.slots import SlotMap, slot_of

__all__ = ["Common", "Settings", "Stats", "decoded", "retry_after_of"]


@dataclass
class Stats:
    """What a client did: attempts per endpoint (the map's fetches apart), the map's
    fetches, the 421s it followed, the attempts an endpoint that did not answer sent to
    the ingress, and the attempts sent again after a 503, 429 or no answer."""

    requests: Counter[str] = field(default_factory=Counter)
    map_fetches: int = 0
    moved: int = 0
    fallbacks: int = 0
    retries: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def count(self, what: str, n: int = 1) -> None:
        with self._lock:
            setattr(self, what, getattr(self, what) + n)

    def sent(self, endpoint: str) -> None:
        with self._lock:
            self.requests[endpoint] += 1


@dataclass(frozen=True, slots=True)
class Settings:
    url: str
    timeout: float
    use_msgpack: bool
    retry: Retry
    linger_s: float
    batch_size: int
    max_batch: int
    headers: Mapping[str, str]
    limits: httpx.Limits
    verify: Any


class Common:
    """Settings, routing and grouping; the subclasses do the I/O."""

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        *,
        timeout: float = 10.0,
        routing: bool = True,
        msgpack: bool = True,
        deadline: float = 10.0,
        max_wait: float = 2.0,
        linger_s: float = 0.005,
        batch_size: int = 500,
        max_batch: int = MAX_BATCH,
        max_connections: int = 64,
        verify: Any = True,
    ) -> None:
        if not 1 <= batch_size <= max_batch:
            raise ValueError(f"batch_size must be 1..{max_batch}")
        self.settings = Settings(
            url.rstrip("/"),
            timeout,
            msgpack,
            Retry(deadline=deadline, max_wait=max_wait),
            linger_s,
            batch_size,
            max_batch,
            headers(msgpack, api_key),
            httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            verify,
        )
        self.routing = Routing(url, routing)
        self.stats = Stats()
        self._setup()

    def _setup(self) -> None:
        """The driver's own state: its connection pools and locks."""
        raise NotImplementedError

    def _pool_args(self, base: str) -> dict[str, Any]:
        s = self.settings
        return {
            "base_url": base,
            "headers": dict(s.headers),
            "timeout": s.timeout,
            "limits": s.limits,
            "verify": s.verify,
        }

    def _installed(self, body: Any) -> SlotMap:
        slot_map = SlotMap.from_wire(body)
        self.routing.install(slot_map, time.monotonic())
        return slot_map

    def _groups(
        self, events: Iterable[Mapping[str, Any]], now: float
    ) -> list[list[dict[str, Any]]]:
        """Events (ids given) grouped by the endpoint that owns their customer (the
        ingress's group holds those without one), each group cut into requests of at
        most `max_batch`, in the callers' order within a group."""
        by: dict[str | None, list[dict[str, Any]]] = {}
        for e in events:
            ev = with_id(e)
            key = self.routing.endpoint_for((slot_of(str(ev.get("customer_id", ""))),), now)
            by.setdefault(key, []).append(ev)
        size = self.settings.max_batch
        return [part for group in by.values() for part in chunks(group, size)]


def decoded(response: httpx.Response) -> Any:
    return decode(response.content, response.headers.get("content-type"))


def retry_after_of(response: httpx.Response, wall_now: float) -> float | None:
    return parse_retry_after(response.headers.get("retry-after"), wall_now)
