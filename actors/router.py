"""What an ingress replica holds to reach the shards: customer -> slot -> shard, one
coalescer per shard, and the replica's backpressure (no Ray here: `remote.ShardRouter`
builds it over Ray actor handles, a test over in-process shards).

Every request waits at most `request_timeout_s`; a request is shed whole, up front,
when the replica already waits on `max_ongoing_requests` shard calls; a shard that is
down is refused at once until it answers again. Each of these is a `ShardUnavailable`
(503 + Retry-After).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from actors.calls import Call, ShardUnavailable
from actors.shard import decision_slot
from decisioning.config import Config
from decisioning.errors import SlotFrozen, SlotMoved
from decisioning.profile.slots import slot_of

__all__ = ["MAX_SLOT_HOPS", "Coalescer", "Router", "ShardLink", "SupervisorCalls", "Unreachable"]

log = logging.getLogger("nextbest.actors")
MAX_SLOT_HOPS = 8  # times a call follows `slot moved` before the caller gets it
FROZEN_WAIT_S = 1.0  # how long a call waits, all told, for slots that are moving
REFRESH_ON_UNAVAILABLE_S = 1.0  # a shard not answering refetches the map at most this often


class Unreachable(Exception):
    """The shard's process is gone or restarting; `reason` names what the transport saw."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ShardLink(Protocol):
    """One shard as the coalescer reaches it (remote.RayShardLink over an actor handle)."""

    async def call_many(self, calls: list[Call]) -> list[Any]:
        """The shard's answers to `calls`, run in order; raises Unreachable."""
        ...

    async def ready(self) -> None:
        """Returns once the shard answers (recovered); raises Unreachable meanwhile."""
        ...


class SupervisorCalls(Protocol):
    """The supervisor as an ingress reaches it (remote.SupervisorClient)."""

    async def call(self, method: str, *args: Any) -> Any: ...


_Item = tuple[str, tuple[Any, ...], asyncio.Future[Any]]


class Coalescer:
    """At most one call in flight to a shard; requests that arrive meanwhile go together.

    A shard actor runs one task at a time anyway, so nothing waits longer than it would
    in the actor's queue, while N concurrent requests cost one actor hop instead of N.

    Each request waits at most `timeout` seconds. One still queued here when its time is
    up is never sent (so never applied); one already sent may have been applied, which a
    retry with the same event_id makes harmless. When the shard dies, every waiter gets
    `shard_unavailable` at once, and so does every request until a probe finds the shard
    answering again (restarted by Ray and done with its recovery).
    """

    def __init__(self, link: ShardLink, index: int, timeout: float) -> None:
        self.link = link
        self.index = index
        self.timeout = timeout
        self.pending: list[_Item] = []
        self.flushing = False
        self.probe: asyncio.Future[None] | None = None

    async def submit(self, method: str, args: tuple[Any, ...]) -> Any:
        if self.probe is not None:
            raise ShardUnavailable(
                f"shard {self.index} is restarting (it answers once its state is recovered)"
            )
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        item = (method, args, fut)
        self.pending.append(item)
        if not self.flushing:
            self.flushing = True
            asyncio.ensure_future(self._flush())
        timer = loop.call_later(self.timeout, self._expire, item)  # cheaper than wait_for
        try:
            return await fut
        finally:
            timer.cancel()

    def _expire(self, item: _Item) -> None:
        fut = item[2]
        if fut.done():
            return
        for i, queued in enumerate(self.pending):
            if queued is item:  # not sent yet: it never will be
                del self.pending[i]
                break
        fut.set_exception(
            ShardUnavailable(
                f"shard {self.index} did not answer within {self.timeout:g}s", "shard_timeout"
            )
        )

    async def _flush(self) -> None:
        try:
            while self.pending:
                batch, self.pending = self.pending, []
                try:
                    results = await self.link.call_many([(m, a) for m, a, _ in batch])
                except Unreachable as e:
                    err = ShardUnavailable(f"shard {self.index} is unavailable: {e.reason}")
                    batch, self.pending = batch + self.pending, []
                    for _, _, fut in batch:
                        if not fut.done():
                            fut.set_exception(err)
                    if self.probe is None:
                        self.probe = asyncio.ensure_future(self._wait_until_back())
                    continue
                except Exception as e:  # noqa: BLE001 - hand every waiter its error
                    for _, _, fut in batch:
                        if not fut.done():
                            fut.set_exception(e)
                    continue
                for (_, _, fut), result in zip(batch, results, strict=True):
                    if not fut.done():
                        fut.set_result(result)
        finally:
            self.flushing = False

    async def _wait_until_back(self) -> None:
        """Until the shard answers again; a call to a restarting actor waits in Ray until
        the new instance has finished __init__ (its recovery)."""
        try:
            while True:
                try:
                    await self.link.ready()
                    return
                except Unreachable:
                    await asyncio.sleep(0.2)
        finally:
            self.probe = None
            log.warning("shard %d answers again", self.index)


class Router:
    """Used by ingress replicas: customer -> slot -> shard, and the calls.

    The slot map is the supervisor's (`layout`), at an epoch. A shard asked about a slot
    it does not own answers `SlotMoved` and applies nothing: a call to one shard (`call`)
    then refreshes the map and goes to the owner, and one waiting on a slot that is
    moving (`SlotFrozen`) is sent again shortly, for up to `FROZEN_WAIT_S`; whatever is
    left over reaches the caller (503). Calls to several shards (`call_all`) hand such
    answers back: the caller regroups the items by the refreshed map (serving/fanout.py).
    """

    def __init__(
        self,
        config: Config,
        supervisor: SupervisorCalls,
        slot_map: list[int],
        links: Sequence[ShardLink],
        epoch: int = 0,
        link_of: Callable[[int], ShardLink] | None = None,
    ) -> None:
        self.config = config
        self.supervisor = supervisor
        self.slot_map = slot_map
        self.epoch = epoch
        self.shards = list(links)
        self.link_of = link_of  # a link to a shard added since (None: shards are fixed)
        self.timeout = config.server.request_timeout_s
        self.coalescers = [Coalescer(link, i, self.timeout) for i, link in enumerate(self.shards)]
        self.max_ongoing = config.server.max_ongoing_requests
        self.ongoing = 0  # calls waiting on shards, over every route of this replica
        self._refreshing: asyncio.Future[None] | None = None
        self._rechecked = 0.0  # when a shard not answering last made us fetch the map

    def shard_of(self, customer_id: str) -> int:
        return self.slot_map[slot_of(customer_id)]

    def shard_of_decision(self, decision_id: str) -> int:
        return self.slot_map[decision_slot(decision_id)]

    def admit(self, n: int = 1) -> None:
        """Shed a request up front, whole: never a part of a batch sent and a part not.
        Routes call it before they read the body too, so shedding costs little."""
        if self.ongoing + n > self.max_ongoing:
            raise ShardUnavailable(
                f"overloaded: {self.ongoing} calls already wait on shards here", "overloaded"
            )

    async def _call(self, shard: int, method: str, args: tuple[Any, ...]) -> Any:
        self.ongoing += 1
        try:
            return await self.coalescers[shard].submit(method, args)
        except ShardUnavailable:
            await self._recheck_map()
            raise
        finally:
            self.ongoing -= 1

    async def _settled(self, shard: int, method: str, args: tuple[Any, ...]) -> Any:
        """`_call`, with `ShardUnavailable` as the answer instead of raised."""
        try:
            return await self._call(shard, method, args)
        except ShardUnavailable as e:
            return e

    async def _recheck_map(self) -> None:
        """A shard did not answer: it may be restarting, or it was removed (scaled down)
        and this replica's map still names it, having never been told `SlotMoved`. Fetch
        the map again (at most once every REFRESH_ON_UNAVAILABLE_S), so the client's retry
        goes where the slot lives now."""
        now = time.monotonic()
        if now - self._rechecked < REFRESH_ON_UNAVAILABLE_S:
            return
        self._rechecked = now
        with contextlib.suppress(Exception):  # a restarting supervisor: keep the map
            await self.refresh()

    async def call(self, shard: int, method: str, *args: Any) -> Any:
        """One call to one shard, following the slot it addresses wherever it moved."""
        self.admit(1)
        answer = await self._call(shard, method, args)
        waited = 0.0
        for hop in range(MAX_SLOT_HOPS):
            if isinstance(answer, SlotMoved) and answer.epoch >= self.epoch:
                await self.refresh()  # the shard knows a newer map than ours
                if self.slot_map[answer.slot] != shard:
                    shard = self.slot_map[answer.slot]
                    answer = await self._call(shard, method, args)
                    continue
            # frozen (moving now), or the shard has not heard of our newer map yet
            if not isinstance(answer, SlotMoved | SlotFrozen) or waited >= FROZEN_WAIT_S:
                return answer
            pause = min(0.01 * 2**hop, 0.25)
            await asyncio.sleep(pause)
            waited += pause
            await self.refresh()
            shard = self.slot_map[answer.slot]
            answer = await self._call(shard, method, args)
        return answer

    async def call_all(self, calls: list[tuple[int, str, Any]], settle: bool = False) -> list[Any]:
        """One call per shard, concurrently. A timeout or restart of one shard can leave
        the others' parts applied: the 503 says so, and a retry with the same event ids
        counts each event once. A part answered `SlotMoved` refreshes the map first.

        `settle`: a call that cannot be served now (overloaded, a shard down or timed
        out) answers its `ShardUnavailable` instead of raising it, so the others' answers
        still reach a caller that answers each part on its own (POST /v1/decide/batch)."""
        try:
            self.admit(len(calls))
        except ShardUnavailable as e:
            if not settle:
                raise
            return [e] * len(calls)
        call = self._settled if settle else self._call
        aws: list[Awaitable[Any]] = [call(shard, m, (arg,)) for shard, m, arg in calls]
        answers = list(await asyncio.gather(*aws))
        if any(isinstance(a, SlotMoved) for a in answers):
            await self.refresh()
        return answers

    async def refresh(self) -> None:
        """Fetch the supervisor's slot map (one fetch at a time per replica; callers that
        arrive meanwhile wait for that one)."""
        if self._refreshing is not None:
            await asyncio.shield(self._refreshing)
            return
        self._refreshing = asyncio.get_running_loop().create_future()
        try:
            names, owners, epoch = await self.supervisor.call("layout")
            self._adopt(len(names), list(owners), int(epoch))
        finally:
            fut, self._refreshing = self._refreshing, None
            fut.set_result(None)

    def _adopt(self, shards: int, owners: list[int], epoch: int) -> None:
        if epoch < self.epoch:
            return
        if self.link_of is not None:
            while len(self.shards) < shards:
                link = self.link_of(len(self.shards))
                self.coalescers.append(Coalescer(link, len(self.shards), self.timeout))
                self.shards.append(link)
            del self.shards[shards:], self.coalescers[shards:]  # removed: own no slot
        self.slot_map, self.epoch = owners, epoch
        log.info("slot map epoch %d: %d shards", epoch, shards)

    async def supervisor_call(self, method: str, *args: Any) -> Any:
        return await self.supervisor.call(method, *args)
