"""Load through the client, for a benchmark: a closed loop of `concurrency` workers
deciding (or sending event batches) for `customers` customers for `seconds`, routed to
each shard's endpoint or all through the ingress, with the latency of each call as the
caller sees it (retries included). `python -m nextbest_client load --help` runs it.

`by_owner` is for a load generator of its own (bench/loadgen.py sends raw bytes to one
port): it groups requests by the endpoint of their customer's shard.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from nextbest_client.aclient import AsyncClient
from nextbest_client.errors import NextbestError
from nextbest_client.slots import SlotMap, slot_of

__all__ = ["LoadResult", "by_owner", "drive", "run"]

T = TypeVar("T")


def by_owner(
    slot_map: SlotMap, items: Iterable[T], customer_of: Callable[[T], str]
) -> dict[str | None, list[T]]:
    """`items` by the endpoint of their customer's shard (None: the shard has none, so
    the ingress), each group in the order given."""
    out: dict[str | None, list[T]] = {}
    for item in items:
        out.setdefault(slot_map.endpoint_of(slot_of(customer_of(item))), []).append(item)
    return out


@dataclass
class LoadResult:
    """Calls made, failed, in how long; latency percentiles in ms; what the client did."""

    what: str
    routing: bool
    calls: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float
    p999_ms: float
    requests: dict[str, int] = field(default_factory=dict)  # per endpoint
    retries: int = 0
    moved: int = 0
    errors_by_code: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rate": self.rate}


def _pct(sorted_ms: list[float], q: float) -> float:
    if not sorted_ms:
        return 0.0
    return sorted_ms[min(len(sorted_ms) - 1, int(q * len(sorted_ms)))]


async def drive(
    url: str,
    api_key: str | None,
    *,
    what: str = "decide",
    seconds: float = 10.0,
    concurrency: int = 16,
    customers: int = 1000,
    batch: int = 100,
    routing: bool = True,
    msgpack: bool = True,
    channel: str = "web",
    prefix: str = "load",
) -> LoadResult:
    """`what`: "decide" (one decision per call) or "events" (`batch` page views per call,
    over customers of every shard)."""
    if what not in ("decide", "events"):
        raise ValueError("what is 'decide' or 'events'")
    ids = [f"{prefix}-{i}" for i in range(customers)]
    latencies: list[float] = []
    codes: dict[str, int] = {}
    async with AsyncClient(url, api_key, routing=routing, msgpack=msgpack) as nb:
        await nb.profile(ids[0])  # the map fetched, a connection open: not timed
        stop = time.monotonic() + seconds

        async def worker(w: int) -> None:
            n = w
            while time.monotonic() < stop:
                start = time.perf_counter()
                try:
                    if what == "decide":
                        await nb.decide(ids[n % customers], channel)
                    else:
                        await nb.send_events(
                            {"customer_id": ids[(n + k) % customers], "type": "page_view"}
                            for k in range(batch)
                        )
                except NextbestError as e:
                    codes[e.code] = codes.get(e.code, 0) + 1
                else:
                    latencies.append((time.perf_counter() - start) * 1000)
                n += concurrency

        began = time.monotonic()
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        elapsed = time.monotonic() - began
        latencies.sort()
        return LoadResult(
            what, routing, len(latencies), sum(codes.values()), elapsed,
            _pct(latencies, 0.5), _pct(latencies, 0.99), _pct(latencies, 0.999),
            dict(nb.stats.requests), nb.stats.retries, nb.stats.moved, codes,
        )  # fmt: skip


def run(url: str, api_key: str | None, **options: Any) -> LoadResult:
    """`drive` from sync code."""
    return asyncio.run(drive(url, api_key, **options))
