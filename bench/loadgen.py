"""A lean HTTP/1.1 keep-alive load generator on asyncio, with HdrHistogram latencies.

closed loop: N connections send back-to-back -> maximum throughput.
open loop:   requests are scheduled at a fixed rate and latency is measured from the
             scheduled send time, so a stalled server cannot hide its queueing
             (no coordinated omission).
Only ever targets 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hdrh.histogram import HdrHistogram

__all__ = ["Result", "closed_loop", "open_loop", "build_requests"]

HOST = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class Result:
    """What one step measured. Every count comes from `statuses` (status -> answers;
    0: no answer within the client's timeout): `rps` counts 2xx answers only, so a
    server that sheds load fast never looks faster for it; the rest are `errors`."""

    seconds: float
    p50_ms: float  # latencies of every answer (open loop: from the scheduled send)
    p99_ms: float
    p999_ms: float
    statuses: dict[int, int]
    admitted_p99_ms: float = 0.0  # p99 of the 2xx answers alone (open loop)
    rate: float | None = None  # the offered rate (open loop); None: closed loop

    @property
    def requests(self) -> int:
        """Every request sent, answered or not."""
        return sum(self.statuses.values())

    @property
    def ok(self) -> int:
        """2xx answers."""
        return sum(n for status, n in self.statuses.items() if 200 <= status < 300)

    @property
    def errors(self) -> int:
        """Everything but a 2xx answer: refusals, errors and no answer in time."""
        return self.requests - self.ok

    @property
    def rps(self) -> float:
        """2xx answers per second."""
        return self.ok / self.seconds if self.seconds else 0.0


def build_requests(
    port: int, path: str, bodies: Sequence[bytes], ctype: str, key: str = ""
) -> list[bytes]:
    """Raw keep-alive POSTs; `key` adds the Authorization header (the floor gets it too,
    so both carry the same bytes)."""
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    return [
        (
            f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: {ctype}\r\n{auth}"
            f"Content-Length: {len(b)}\r\nConnection: keep-alive\r\n\r\n"
        ).encode()
        + b
        for b in bodies
    ]


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def send(self, request: bytes) -> int:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length, chunked = 0, False
        for line in head.split(b"\r\n"):
            name = line[:18].lower()
            if name.startswith(b"content-length:"):
                length = int(line[15:])
            elif name.startswith(b"transfer-encoding:") and b"chunked" in line.lower():
                chunked = True  # e.g. Serve's own plain-text 503 when its queue is full
        if chunked:
            await self._chunks()
        elif length:
            await self.reader.readexactly(length)
        return status

    async def _chunks(self) -> None:
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await self.reader.readexactly(size + 2)  # the chunk and its CRLF
            if size == 0:
                return


async def _connect(port: int) -> _Conn:
    r, w = await asyncio.open_connection(HOST, port)
    return _Conn(r, w)


def _hist() -> HdrHistogram:
    return HdrHistogram(1, 60_000_000, 3)  # microseconds, up to 60 s


def _result(
    h: HdrHistogram,
    statuses: Counter[int],
    seconds: float,
    ok: HdrHistogram | None = None,
    rate: float | None = None,
) -> Result:
    return Result(
        seconds=seconds,
        p50_ms=h.get_value_at_percentile(50) / 1000,
        p99_ms=h.get_value_at_percentile(99) / 1000,
        p999_ms=h.get_value_at_percentile(99.9) / 1000,
        statuses=dict(statuses),
        admitted_p99_ms=ok.get_value_at_percentile(99) / 1000 if ok is not None else 0.0,
        rate=rate,
    )


async def _closed(port: int, requests: list[bytes], connections: int, seconds: float) -> Result:
    conns = [await _connect(port) for _ in range(connections)]
    h = _hist()
    statuses: Counter[int] = Counter()
    stop = time.perf_counter() + seconds

    async def worker(i: int, conn: _Conn) -> None:
        j = i
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            status = await conn.send(requests[j % len(requests)])
            h.record_value(max(1, int((time.perf_counter() - t0) * 1e6)))
            statuses[status] += 1
            j += connections

    t = time.perf_counter()
    await asyncio.gather(*(worker(i, c) for i, c in enumerate(conns)))
    elapsed = time.perf_counter() - t
    for c in conns:
        c.writer.close()
    return _result(h, statuses, elapsed)


class _Pool:
    """The open loop's keep-alive connections: a request takes an idle one, or opens one
    while fewer than `limit` are open, or waits for one to come back."""

    def __init__(self, port: int, limit: int) -> None:
        self.port, self.limit = port, limit
        self.idle: asyncio.Queue[_Conn] = asyncio.Queue()
        self.opened = 0

    async def get(self) -> _Conn:
        if self.idle.empty() and self.opened < self.limit:
            self.opened += 1
            try:
                return await _connect(self.port)
            except BaseException:
                self.opened -= 1
                raise
        return await self.idle.get()

    def put(self, conn: _Conn) -> None:
        self.idle.put_nowait(conn)

    def spend(self, conn: _Conn) -> None:
        """A connection whose answer never came: closed, and a new one may be opened."""
        conn.writer.close()
        self.opened -= 1

    def close(self) -> None:
        while not self.idle.empty():
            self.idle.get_nowait().writer.close()


class _Tally:
    """Latencies from the scheduled send (all answers, and the 2xx alone) and statuses."""

    def __init__(self) -> None:
        self.h, self.ok = _hist(), _hist()
        self.statuses: Counter[int] = Counter()

    def record(self, status: int, scheduled: float) -> None:
        took = max(1, int((time.perf_counter() - scheduled) * 1e6))
        self.h.record_value(took)
        if 200 <= status < 300:
            self.ok.record_value(took)
        self.statuses[status] += 1


async def _one(
    pool: _Pool, tally: _Tally, scheduled: float, request: bytes, timeout_s: float
) -> None:
    """Send `request` on a pooled connection; no answer `timeout_s` after `scheduled`
    (waiting for a connection included) counts as status 0."""
    conn: _Conn | None = None

    async def exchange() -> int:
        nonlocal conn
        conn = await pool.get()
        return await conn.send(request)

    left = scheduled + timeout_s - time.perf_counter()
    try:
        status = await asyncio.wait_for(exchange(), max(left, 0.001))
    except (TimeoutError, OSError, asyncio.IncompleteReadError):
        tally.statuses[0] += 1  # no answer in time (waiting included): the connection is spent
        if conn is not None:
            pool.spend(conn)
        return
    assert conn is not None
    tally.record(status, scheduled)
    pool.put(conn)


async def _open(
    port: int,
    requests: list[bytes],
    rate: float,
    seconds: float,
    max_connections: int,
    timeout_s: float,
) -> Result:
    pool, tally = _Pool(port, max_connections), _Tally()
    tasks = []
    start = time.perf_counter()
    n = int(rate * seconds)
    for i in range(n):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        one = _one(pool, tally, scheduled, requests[i % len(requests)], timeout_s)
        tasks.append(asyncio.ensure_future(one))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    pool.close()
    return _result(tally.h, tally.statuses, elapsed, tally.ok, rate)


def _without_gc(coro: Any) -> Result:
    """Run a measurement with the generator's GC off: its pauses would count as latency."""
    gc.collect()
    gc.disable()
    try:
        result: Result = asyncio.run(coro)
        return result
    finally:
        gc.enable()


def closed_loop(port: int, requests: list[bytes], connections: int, seconds: float) -> Result:
    return _without_gc(_closed(port, requests, connections, seconds))


def open_loop(
    port: int,
    requests: list[bytes],
    rate: float,
    seconds: float,
    max_connections: int = 256,
    timeout_s: float = 60.0,
) -> Result:
    """Send at `rate`/s for `seconds`; a request not answered `timeout_s` after its
    scheduled time counts as status 0."""
    return _without_gc(_open(port, requests, rate, seconds, max_connections, timeout_s))
