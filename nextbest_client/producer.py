"""Batching producers: `send(event)` returns at once with a future of the event's id;
events go in batches per owning shard (batching.py), one request each.

    with client.producer(linger_s=0.005, batch_size=500) as p:
        futures = [p.send({"customer_id": c, "type": "page_view"}) for c in customers]
    # closed: every event sent; each future holds its event_id or the error

Each event gets its `event_id` in `send`, before anything is sent, so every retry of its
batch (the client's, or a caller's resend of a failed future's event) counts it once.
`flush()` sends what waits and returns when every event sent before it is answered;
`close()` flushes. A batch is sent by the client's `send_events`, with its routing
and retries: a future fails only with the error that call raised at its deadline.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from nextbest_client.batching import Batches
from nextbest_client.calls import with_id
from nextbest_client.errors import NextbestError
from nextbest_client.slots import slot_of

if TYPE_CHECKING:
    from nextbest_client.aclient import AsyncClient
    from nextbest_client.client import Client

__all__ = ["AsyncProducer", "Producer"]


def _settle(batch: list[tuple[dict[str, Any], Any]], error: BaseException | None) -> None:
    """Each future of `batch`: its event id, or the error (events the error's `pending`
    does not hold were acknowledged)."""
    pending = {e["event_id"] for e in getattr(error, "pending", ())} if error else set()
    for ev, fut in batch:
        if fut.done():
            continue
        if error is not None and (ev["event_id"] in pending or not pending):
            fut.set_exception(error)
        else:
            fut.set_result(ev["event_id"])


class Producer:
    """A thread batches and hands batches to `max_in_flight` sender threads."""

    def __init__(
        self, client: Client, linger_s: float, batch_size: int, max_in_flight: int = 8
    ) -> None:
        self.client = client
        self._batches: Batches[str | None, tuple[dict[str, Any], Any]] = Batches(
            linger_s, min(batch_size, client.settings.max_batch)
        )
        self._cond = threading.Condition()
        self._flushing = 0
        self._closed = False
        self._senders = concurrent.futures.ThreadPoolExecutor(max_in_flight, "nextbest-send")
        self._thread = threading.Thread(target=self._run, name="nextbest-producer", daemon=True)
        self._thread.start()

    def send(self, event: Mapping[str, Any]) -> concurrent.futures.Future[str]:
        """Queue an event; the future gives its `event_id` once acknowledged."""
        ev = with_id(event)
        fut: concurrent.futures.Future[str] = concurrent.futures.Future()
        key = self.client.routing.endpoint_for(
            (slot_of(str(ev.get("customer_id", ""))),), time.monotonic()
        )
        with self._cond:
            if self._closed:
                raise RuntimeError("the producer is closed")
            if self._batches.add(key, (ev, fut), time.monotonic()) or self._batches.waiting == 1:
                self._cond.notify_all()
        return fut

    def flush(self, timeout: float | None = None) -> None:
        """Send what waits; return once nothing waits or is in flight."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._flushing += 1
            self._cond.notify_all()
            try:
                while not self._batches.idle:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        raise TimeoutError("events still in flight")
                    self._cond.wait(left)
            finally:
                self._flushing -= 1

    def close(self) -> None:
        """Flush, then stop the threads."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        self._thread.join()
        self._senders.shutdown(wait=True)

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        with self._cond:
            while not (self._closed and self._batches.idle):
                now = time.monotonic()
                flush = self._flushing > 0 or self._closed
                for key, batch in self._batches.take(now, flush):
                    self._senders.submit(self._send, key, batch)
                due = self._batches.next_due()
                self._cond.wait(None if due is None or flush else max(0.0, due - now))

    def _send(self, key: str | None, batch: list[tuple[dict[str, Any], Any]]) -> None:
        error: BaseException | None = None
        try:
            self.client.send_events([ev for ev, _ in batch])
        except NextbestError as e:
            error = e
        except BaseException as e:  # noqa: BLE001 - handed to the events' futures
            error = e
        _settle(batch, error)
        with self._cond:
            self._batches.done(key)
            self._cond.notify_all()


class AsyncProducer:
    """The asyncio twin: `send` returns an awaitable future; a task sends the batches."""

    def __init__(self, client: AsyncClient, linger_s: float, batch_size: int) -> None:
        self.client = client
        self._batches: Batches[str | None, tuple[dict[str, Any], Any]] = Batches(
            linger_s, min(batch_size, client.settings.max_batch)
        )
        self._cond: asyncio.Condition | None = None
        self._task: asyncio.Task[None] | None = None
        self._flushing = 0
        self._closed = False
        self._sending: set[asyncio.Task[None]] = set()

    def _condition(self) -> asyncio.Condition:
        if self._cond is None:
            self._cond = asyncio.Condition()
            self._task = asyncio.get_running_loop().create_task(self._run())
        return self._cond

    def send(self, event: Mapping[str, Any]) -> asyncio.Future[str]:
        """Queue an event; await the future for its `event_id` once acknowledged."""
        if self._closed:
            raise RuntimeError("the producer is closed")
        cond = self._condition()
        ev = with_id(event)
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        key = self.client.routing.endpoint_for(
            (slot_of(str(ev.get("customer_id", ""))),), time.monotonic()
        )
        if self._batches.add(key, (ev, fut), time.monotonic()) or self._batches.waiting == 1:
            self._wake(cond)
        return fut

    @staticmethod
    def _wake(cond: asyncio.Condition) -> None:
        async def notify() -> None:
            async with cond:
                cond.notify_all()

        asyncio.get_running_loop().create_task(notify())

    async def flush(self) -> None:
        """Send what waits; return once nothing waits or is in flight."""
        cond = self._condition()
        async with cond:
            self._flushing += 1
            cond.notify_all()
            try:
                await cond.wait_for(lambda: self._batches.idle)
            finally:
                self._flushing -= 1

    async def close(self) -> None:
        """Flush, then stop."""
        if self._closed:
            return
        self._closed = True
        if self._cond is None:
            return
        async with self._cond:
            self._cond.notify_all()
        if self._task is not None:
            await self._task

    async def __aenter__(self) -> AsyncProducer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _run(self) -> None:
        cond = self._condition()
        async with cond:
            while not (self._closed and self._batches.idle):
                now = time.monotonic()
                flush = self._flushing > 0 or self._closed
                for key, batch in self._batches.take(now, flush):
                    task = asyncio.get_running_loop().create_task(self._send(key, batch))
                    self._sending.add(task)
                    task.add_done_callback(self._sending.discard)
                due = self._batches.next_due()
                timeout = None if due is None or flush else max(0.0, due - now)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(cond.wait(), timeout)

    async def _send(self, key: str | None, batch: list[tuple[dict[str, Any], Any]]) -> None:
        error: BaseException | None = None
        try:
            await self.client.send_events([ev for ev, _ in batch])
        except Exception as e:  # noqa: BLE001 - handed to the events' futures
            error = e
        _settle(batch, error)
        cond = self._condition()
        async with cond:
            self._batches.done(key)
            cond.notify_all()
