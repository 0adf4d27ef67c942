"""The router an ingress replica holds, over in-process shards: calls that arrive while
one is in flight go together, a request that timed out in the queue is never sent, a
shard that is down is refused at once until it answers again, and a request is shed
whole. The link stands in for the Ray transport only: the shards are real."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from actors.calls import Call, ShardUnavailable, run_calls
from actors.messages import AbsorbSlots, ApplyEvents, DropSlots, FreezeSlots, SetSlotMap
from actors.router import Coalescer, Router, Unreachable
from actors.shard import Shard
from decisioning.config import Config
from decisioning.config.loader import config_from_dict
from decisioning.profile import Event
from decisioning.profile.slots import SLOTS, SlotMap, contiguous_map, slot_of
from tests.conftest import SMALL
from tests.unit import edge
from tests.unit.decisioning.policy.test_decide import NOW, Clock


class Link:
    """One in-process shard behind a transport a test can hold or break."""

    def __init__(self, shard: Shard) -> None:
        self.shard = shard
        self.open = asyncio.Event()
        self.open.set()
        self.down = False
        self.tried = 0  # batches handed to the transport
        self.sent: list[list[str]] = []  # each batch that reached the shard: event ids

    async def call_many(self, calls: list[Call]) -> list[Any]:
        self.tried += 1
        await self.open.wait()
        if self.down:
            raise Unreachable("ActorDiedError")
        self.sent.append([e.event_id for _, (message,) in calls for e in message.events])
        return run_calls(self.shard, calls)

    async def ready(self) -> None:
        await asyncio.sleep(0)
        if self.down:
            raise Unreachable("ActorUnavailableError")


class Supervisor:
    async def call(self, method: str, *args: Any) -> Any:
        return {"method": method}


def _view(event_id: str, customer: str = "c") -> tuple[ApplyEvents]:
    return (ApplyEvents((Event(customer, "page_view", NOW, {}, event_id),)),)


def _views(shard: Shard, customer: str = "c") -> float:
    return float(edge.get_profile(shard, customer)["aggregates"]["views_all"])


async def _until(condition: Any) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)


async def _code(aw: Any) -> str:
    try:
        await aw
    except ShardUnavailable as e:
        return e.code
    return "answered"


def test_calls_arriving_while_one_is_in_flight_go_together(small_config: Config) -> None:
    link = Link(Shard(0, small_config, clock=Clock()))
    co = Coalescer(link, 0, timeout=30)

    async def run() -> list[Any]:
        link.open.clear()
        first = asyncio.ensure_future(co.submit("apply_events", _view("e1")))
        await _until(lambda: co.flushing and not co.pending)  # e1 is in flight
        rest = [asyncio.ensure_future(co.submit("apply_events", _view(f"e{i}"))) for i in (2, 3)]
        await asyncio.sleep(0)
        link.open.set()
        return list(await asyncio.gather(first, *rest))

    assert asyncio.run(run()) == [1, 1, 1]
    assert link.sent == [["e1"], ["e2", "e3"]]
    assert _views(link.shard) == 3


def test_a_call_that_timed_out_in_the_queue_is_never_sent(small_config: Config) -> None:
    link = Link(Shard(0, small_config, clock=Clock()))
    co = Coalescer(link, 0, timeout=0.05)

    async def run() -> list[str]:
        link.open.clear()
        first = asyncio.ensure_future(_code(co.submit("apply_events", _view("e1"))))
        await _until(lambda: co.flushing and not co.pending)
        queued = await _code(co.submit("apply_events", _view("e2")))
        timed_out = [await first, queued]
        link.open.set()
        await _until(lambda: not co.flushing)
        return timed_out

    assert asyncio.run(run()) == ["shard_timeout", "shard_timeout"]
    assert link.sent == [["e1"]]  # e1 was sent (and applied); e2 never
    assert _views(link.shard) == 1


def test_a_shard_that_is_down_is_refused_at_once_until_it_answers(
    small_config: Config,
) -> None:
    link = Link(Shard(0, small_config, clock=Clock()))
    co = Coalescer(link, 0, timeout=30)

    async def run() -> tuple[list[str], str]:
        link.down = True
        codes = [await _code(co.submit("apply_events", _view("e1")))]
        assert co.probe is not None  # probing until the shard answers
        codes.append(await _code(co.submit("apply_events", _view("e2"))))
        link.down = False
        await _until(lambda: co.probe is None)
        return codes, await _code(co.submit("apply_events", _view("e3")))

    during, after = asyncio.run(run())
    assert during == ["shard_unavailable", "shard_unavailable"]
    assert link.tried == 2  # e1's batch, e3's: e2 was refused without a call
    assert after == "answered" and link.sent == [["e3"]]
    assert _views(link.shard) == 1


def test_a_request_is_shed_whole_and_routed_by_slot() -> None:
    config = config_from_dict(
        {**SMALL, "server": {**SMALL["server"], "max_ongoing_requests": 2}}, "small.yaml"
    )
    links = [Link(Shard(i, config, clock=Clock())) for i in range(2)]
    router = Router(config, Supervisor(), contiguous_map(2), links)

    async def run() -> tuple[str, list[Any], Any]:
        calls = [(s, "apply_events", _view(f"e{s}", f"c{s}")[0]) for s in (0, 1, 0)]
        shed = await _code(router.call_all(calls))
        answered = await router.call_all(calls[:2])
        return shed, answered, await router.supervisor_call("status")

    shed, answered, status = asyncio.run(run())
    assert shed == "overloaded"  # three calls past a limit of two: none was sent
    assert answered == [1, 1] and router.ongoing == 0
    assert [link.sent for link in links] == [[["e0"]], [["e1"]]]
    assert status == {"method": "status"}
    customers = [f"c{i}" for i in range(20)]
    shards = [router.shard_of(c) for c in customers]
    assert shards == [contiguous_map(2)[slot_of(c)] for c in customers] and set(shards) == {0, 1}


class Layout:
    """The supervisor as a router sees it: the slot map it answers (`layout`)."""

    def __init__(self, owners: list[int], epoch: int) -> None:
        self.owners, self.epoch = owners, epoch
        self.asked = 0

    async def call(self, method: str, *args: Any) -> Any:
        assert method == "layout"
        self.asked += 1
        return ["shard-0", "shard-1"], list(self.owners), self.epoch


def _moved_map(lo: int, hi: int, epoch: int) -> SlotMap:
    return SlotMap(epoch, tuple(1 if lo <= s < hi else 0 for s in range(SLOTS)), 2)


def test_a_call_follows_its_slot_to_the_new_owner_and_waits_out_a_move(
    small_config: Config,
) -> None:
    """The router's map is older than the shards': shard 0 answers SlotMoved (nothing
    applied), the router fetches the map and sends the call to shard 1. A call for a
    slot frozen right now is sent again until the move is done, then reaches the owner."""
    one = SlotMap(1, (0,) * SLOTS, 2)
    shards = [Shard(i, small_config, clock=Clock(), slot_map=one) for i in range(2)]
    links = [Link(s) for s in shards]
    moved, frozen = "c-moved", "c-frozen"
    lo = slot_of(moved)
    edge.apply_events(shards[0], [Event(moved, "page_view", NOW, {}, "e0")])
    state = shards[0].freeze_slots(FreezeSlots("m1", lo, lo + 1))
    shards[1].absorb_slots(AbsorbSlots(state))
    new = _moved_map(lo, lo + 1, 2)
    for s in shards:
        s.set_slot_map(SetSlotMap(new))
    shards[0].drop_slots(DropSlots("m1", lo, lo + 1))
    supervisor = Layout(list(new.owners), 2)
    router = Router(small_config, supervisor, list(one.owners), links, epoch=1)

    async def follow() -> Any:
        return await router.call(router.shard_of(moved), "apply_events", *_view("e1", moved))

    assert asyncio.run(follow()) == 1
    assert router.epoch == 2 and supervisor.asked == 1
    assert _views(shards[1], moved) == 2.0 and moved not in shards[0].store
    assert [len(link.sent) for link in links] == [1, 1]  # refused at 0 (not applied), then 1

    f = slot_of(frozen)
    edge.apply_events(shards[0], [Event(frozen, "page_view", NOW, {}, "f0")])
    state = shards[0].freeze_slots(FreezeSlots("m2", f, f + 1))

    async def wait_out_the_move() -> Any:
        call = asyncio.ensure_future(
            router.call(router.shard_of(frozen), "apply_events", *_view("f1", frozen))
        )
        await _until(lambda: len(links[0].sent) >= 3)  # answered SlotFrozen, sent again
        assert not call.done()
        shards[1].absorb_slots(AbsorbSlots(state))
        done = SlotMap(3, tuple(1 if s in (lo, f) else 0 for s in range(SLOTS)), 2)
        for s in shards:
            s.set_slot_map(SetSlotMap(done))
        supervisor.owners, supervisor.epoch = list(done.owners), 3
        return await call

    assert asyncio.run(wait_out_the_move()) == 1
    assert _views(shards[1], frozen) == 2.0


def test_a_removed_shard_that_does_not_answer_makes_the_router_fetch_the_map(
    small_config: Config,
) -> None:
    """Scaled down: shard 1 is gone, and this replica was never told SlotMoved for its
    slots. Its call is a 503 (the client retries), and the map is fetched meanwhile, so
    the retry reaches the owner named now."""
    shards = [Shard(i, small_config, clock=Clock()) for i in range(2)]
    links = [Link(s) for s in shards]
    links[1].down = True
    supervisor = Layout([0] * SLOTS, 5)

    async def layout(method: str, *args: Any) -> Any:
        supervisor.asked += 1
        return ["shard-0"], [0] * SLOTS, 5

    supervisor.call = layout  # type: ignore[method-assign]
    router = Router(small_config, supervisor, contiguous_map(2), links, 4, lambda i: links[i])
    gone = next(f"c{i}" for i in range(100) if router.shard_of(f"c{i}") == 1)

    async def twice() -> tuple[str, Any]:
        first = await _code(router.call(router.shard_of(gone), "apply_events", *_view("g1", gone)))
        return first, await router.call(router.shard_of(gone), "apply_events", *_view("g1", gone))

    first, retried = asyncio.run(twice())
    assert first == "shard_unavailable" and retried == 1
    assert supervisor.asked == 1 and router.epoch == 5 and len(router.shards) == 1
    assert _views(shards[0], gone) == 1.0
