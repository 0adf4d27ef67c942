"""Slots moving between real in-process shards, run by the supervisor's mover
(actors/slots.py) over a LocalFleet: scaling 1 -> 3 -> 2 keeps every customer readable,
the same, from its owner (and only there); a mover stopped in the middle of a migration
is rolled back or finished by the next one's resume; a shard that keeps failing a step
rolls the migration back; one operation at a time; bad requests are refused up front."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from actors import messages as m
from actors.calls import refused
from actors.fleet import LocalFleet
from actors.shard import Shard
from actors.slots import SlotMover
from decisioning.config import Config
from decisioning.errors import InvalidInput, MoveInProgress, SlotFrozen, SlotMoved, UnknownShard
from decisioning.profile import event_from_wire
from decisioning.profile.slots import SLOTS, Migration, SlotMap, slot_of
from decisioning.stores.slotmap import SlotMapStore
from tests.unit.decisioning.policy.test_decide import NOW, Clock

CUSTOMERS = [f"c{i}" for i in range(120)]


class FakeTime:
    """The mover's clock and sleep: a sleep moves the clock (retries end at once)."""

    def __init__(self) -> None:
        self.t = 0.0

    def clock(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


@dataclass
class World:
    config: Config
    root: Path
    store: SlotMapStore
    fleet: LocalFleet
    time: FakeTime
    published: list[SlotMap]

    def shard(self, i: int) -> Shard:
        """Shard `i` as a (re)started actor makes it: its directory, the stored map."""
        return Shard(
            i,
            self.config,
            clock=Clock(),
            log_dir=str(self.root / str(i)),
            slot_map=self.store.load(),
        )

    def mover(self, **kw: Any) -> SlotMover:
        return SlotMover(
            self.store,
            self.fleet,
            self.published.append,
            retry_s=1.0,
            clock=self.time.clock,
            sleep=self.time.sleep,
            **kw,
        )

    def owner(self, customer: str) -> int:
        slot_map = self.store.load()
        assert slot_map is not None
        return slot_map.owners[slot_of(customer)]

    def read(self, customer: str, shard: int | None = None) -> Any:
        i = self.owner(customer) if shard is None else shard
        return self.fleet.call_on(i, "get_profile", m.GetProfile(customer))

    def profiles(self) -> dict[str, Any]:
        """Every customer's profile as its owner answers it (where it lives aside)."""
        return {c: self.read(c)._replace(shard=0) for c in CUSTOMERS}


@pytest.fixture
def world(small_config: Config, tmp_path: Path) -> Iterator[World]:
    store = SlotMapStore.at(small_config.server.data_dir)
    store.initial(1)
    w = World(small_config, tmp_path / "shards", store, LocalFleet([]), FakeTime(), [])
    w.fleet = LocalFleet([w.shard(0)], w.shard)
    _write(w.fleet, 0)
    yield w
    for s in w.fleet.shards:
        s.close()


def _event(customer: str, kind: str, event_id: str, **props: Any) -> Any:
    wire = {"customer_id": customer, "type": kind, "ts": NOW, "properties": props}
    return event_from_wire({**wire, "event_id": event_id})


def _write(fleet: LocalFleet, shard: int) -> None:
    """Events and decisions for every customer, through the request path."""
    events = []
    for i, c in enumerate(CUSTOMERS):
        events.append(_event(c, "page_view", f"{c}-v", page="cards"))
        events.append(_event(c, "purchase", f"{c}-p", amount=float(i)))
    assert fleet.call_on(shard, "apply_events", m.ApplyEvents(tuple(events))) == len(events)
    for c in CUSTOMERS[::7]:
        decided = fleet.call_on(shard, "decide", m.Decide(c, "web"))
        assert not refused(decided), decided


def _done(mover: SlotMover) -> dict[str, Any]:
    progress = mover.wait(60)
    assert progress["state"] == "done", progress
    return progress


def test_scaling_1_3_2_keeps_every_profile_readable_the_same_from_its_owner(
    world: World,
) -> None:
    before = world.profiles()
    mover = world.mover()
    started = mover.scale(3)
    assert started["state"] == "running" and started["operation"] == "scale 1->3"
    assert started["target"] == "3 shards" and started["slots_moved"] == 0
    progress = _done(mover)
    assert progress["slots_moved"] == progress["slots_total"] == SLOTS - (SLOTS // 3 + 1)
    assert progress["profiles_moved"] == sum(1 for c in CUSTOMERS if world.owner(c) != 0)
    slot_map = world.store.load()
    assert slot_map is not None and slot_map == mover.current()
    assert slot_map.shards == 3 and slot_map.migration is None
    assert sorted(slot_map.count(s) for s in range(3)) == [5461, 5461, 5462]
    assert len(world.fleet) == 3
    assert world.profiles() == before
    assert {world.owner(c) for c in CUSTOMERS} == {0, 1, 2}
    for c in CUSTOMERS:  # only the owner answers; the others point at it
        for i in set(range(3)) - {world.owner(c)}:
            answer = world.read(c, i)
            assert isinstance(answer, SlotMoved) and answer.owner == world.owner(c)
    held = [set(s.profiles.store.ids) for s in world.fleet.shards]
    assert sum(len(h) for h in held) == len(CUSTOMERS)  # dropped where they left
    assert world.published[-1].owners == slot_map.owners

    mover.scale(2)
    progress = _done(mover)
    assert progress["operation"] == "scale 3->2" and len(world.fleet) == 2
    slot_map = world.store.load()
    assert slot_map is not None and slot_map.shards == 2
    assert sorted(slot_map.count(s) for s in range(2)) == [8192, 8192]
    assert world.profiles() == before
    assert sum(len(s.profiles.store.ids) for s in world.fleet.shards) == len(CUSTOMERS)
    assert [s.status()["slot_epoch"] for s in world.fleet.shards] == [slot_map.epoch] * 2

    restarted = [world.shard(i) for i in range(2)]  # from their logs and the stored map
    for s in world.fleet.shards:
        s.close()
    world.fleet.shards = restarted
    assert world.profiles() == before


def test_a_move_and_a_rebalance(world: World) -> None:
    before = world.profiles()
    mover = world.mover()
    mover.scale(2)
    _done(mover)
    with pytest.raises(UnknownShard):
        mover.move(0, 100, 2)
    mover.move(0, 3000, 1)
    progress = _done(mover)
    assert progress["operation"] == "move 0-2999 -> 1" and progress["slots_moved"] == 3000
    assert progress["target"] == "slots 0-2999 to 1" and progress["error"] is None
    assert world.store.load().count(1) == SLOTS // 2 + 3000  # type: ignore[union-attr]
    assert world.profiles() == before
    mover.rebalance()
    assert _done(mover)["slots_moved"] == 3000
    assert world.store.load().count(1) == SLOTS // 2  # type: ignore[union-attr]
    assert world.profiles() == before
    mover.rebalance()  # nothing to do
    assert _done(mover)["slots_total"] == 0


@pytest.mark.parametrize(
    ("call", "args", "error"),
    [
        ("scale", (0,), InvalidInput),
        ("scale", (65,), InvalidInput),
        ("move", (5, 5, 0), InvalidInput),
        ("move", (-1, 5, 0), InvalidInput),
        ("move", (0, SLOTS + 1, 0), InvalidInput),
        ("move", (0, 10, 1), UnknownShard),
    ],
)
def test_a_bad_request_is_refused_before_anything_moves(
    world: World, call: str, args: tuple[int, ...], error: type[Exception]
) -> None:
    mover = world.mover()
    with pytest.raises(error) as err:
        getattr(mover, call)(*args)
    assert err.value.message  # type: ignore[attr-defined]
    assert mover.status()["state"] == "idle"
    assert world.store.load() == SlotMap.contiguous(1)


class Gate(LocalFleet):
    """A LocalFleet whose calls of `method` wait until the test opens the gate, or fail
    while `failing` names the method."""

    def __init__(self, fleet: LocalFleet, method: str = "") -> None:
        super().__init__(fleet.shards, fleet.factory)
        self.method = method
        self.reached, self.open = threading.Event(), threading.Event()
        self.failing: set[str] = set()  # methods failing on every shard
        self.failing_on: set[tuple[int, str]] = set()  # (shard, method)
        self.calls: list[tuple[int, str]] = []
        self.deaf_after_drop = False  # shard 0 hears no map once it dropped a range

    def call_on(self, i: int, method: str, *args: Any) -> Any:
        self.calls.append((i, method))
        if method == self.method:
            self.reached.set()
            assert self.open.wait(30)
        if method in self.failing or (i, method) in self.failing_on:
            raise ConnectionError(f"shard {i} is restarting")
        answer = super().call_on(i, method, *args)
        if self.deaf_after_drop and (i, method) == (0, "drop_slots"):
            self.failing_on.add((0, "set_slot_map"))
        return answer


def test_one_operation_at_a_time(world: World) -> None:
    gate = Gate(world.fleet, "freeze_slots")
    world.fleet = gate
    mover = world.mover()
    mover.scale(2)
    assert gate.reached.wait(30)
    running = mover.status()
    assert running["state"] == "running" and running["slots_moved"] == 0
    assert running["slots_total"] == SLOTS // 2 and running["eta_s"] is None
    with pytest.raises(MoveInProgress) as err:
        mover.rebalance()
    assert err.value.code == "move_in_progress" and "scale 1->2" in str(err.value)
    gate.open.set()
    assert _done(mover)["slots_moved"] == SLOTS // 2


def test_a_shard_that_keeps_failing_rolls_the_migration_back(world: World) -> None:
    before = world.profiles()
    gate = Gate(world.fleet)
    gate.failing.add("absorb_slots")
    world.fleet = gate
    mover = world.mover()
    mover.scale(2)
    progress = mover.wait(60)
    assert progress["state"] == "failed"
    assert "absorb_slots" in progress["error"] and "rolled back" in progress["error"]
    slot_map = world.store.load()
    assert slot_map is not None and slot_map.migration is None
    assert slot_map.owners == SlotMap.contiguous(1).owners  # nothing moved
    assert world.profiles() == before  # shard 0 serves the range again
    assert gate.shards[0].status()["frozen"] is None
    assert len(gate.shards[1].profiles.store.ids) == 0
    gate.failing.clear()
    mover.rebalance()  # the next operation runs from there
    assert _done(mover)["slots_moved"] == SLOTS // 2
    assert world.profiles() == before


def _stopped_after(world: World, step: str) -> tuple[Migration, set[str]]:
    """A supervisor that died in the middle of moving the upper half of shard 0 to a new
    shard 1, after `step` (b: frozen on src, c: absorbed on dst, d: map flipped); the
    customers that move."""
    world.fleet.grow(2)
    start = world.store.load()
    assert start is not None
    start = replace(start, epoch=start.epoch + 1, shards=2)
    mig = Migration("dead-0", SLOTS // 2, SLOTS, 0, 1)
    frozen = replace(start, epoch=start.epoch + 1, migration=mig)
    world.store.save(frozen)
    for i in range(2):
        world.fleet.call_on(i, "set_slot_map", m.SetSlotMap(frozen))
    state = world.fleet.call_on(0, "freeze_slots", m.FreezeSlots(mig.id, mig.lo, mig.hi))
    if step in "cd":
        assert world.fleet.call_on(1, "absorb_slots", m.AbsorbSlots(state)) == state.profiles
    if step == "d":
        owners = list(frozen.owners)
        owners[mig.lo :] = [1] * (SLOTS - mig.lo)
        mig = replace(mig, step="flipped")
        flipped = SlotMap(frozen.epoch + 1, tuple(owners), 2, mig)
        world.store.save(flipped)
        world.fleet.call_on(1, "set_slot_map", m.SetSlotMap(flipped))  # src never heard
    return mig, set(state.ids)


@pytest.mark.parametrize("step", ["b", "c"])
def test_resume_rolls_back_a_migration_left_frozen(world: World, step: str) -> None:
    before = world.profiles()
    mig, moving = _stopped_after(world, step)
    assert moving
    c = next(iter(moving))
    assert isinstance(world.read(c), SlotFrozen)  # waiting for the dead supervisor
    world.fleet.shards[0].close()
    world.fleet.shards[0] = world.shard(0)  # a restarted source comes back frozen too
    assert isinstance(world.read(c), SlotFrozen)
    mover = world.mover()
    mover.resume()
    slot_map = world.store.load()
    assert slot_map is not None and slot_map.migration is None
    assert slot_map.owners == SlotMap.contiguous(1).owners
    assert world.profiles() == before
    assert len(world.fleet.shards[1].profiles.store.ids) == 0  # the copy is dropped
    assert mover.status()["state"] == "idle"


def test_resume_finishes_a_migration_left_flipped(world: World) -> None:
    before = world.profiles()
    mig, moving = _stopped_after(world, "d")
    mover = world.mover()
    mover.resume()
    slot_map = world.store.load()
    assert slot_map is not None and slot_map.migration is None
    assert slot_map.count(1) == SLOTS // 2
    assert world.profiles() == before
    assert set(world.fleet.shards[1].profiles.store.ids) == moving
    assert not moving & set(world.fleet.shards[0].profiles.store.ids)
    c = next(iter(moving))
    assert isinstance(world.read(c, 0), SlotMoved)  # the source does not serve it again


def test_the_source_holds_the_flipped_map_before_it_drops_the_range(world: World) -> None:
    """Else the drop thaws the range on a source whose map still names it the owner:
    it would serve those customers again, empty, if the next map does not reach it."""
    _, moving = _stopped_after(world, "d")
    gate = Gate(world.fleet)
    gate.deaf_after_drop = True
    world.fleet = gate
    world.mover().resume()
    assert (0, "set_slot_map") in gate.failing_on  # the last map missed shard 0
    for c in moving:
        assert isinstance(world.read(c, 0), SlotMoved)


def test_a_new_operation_settles_a_migration_left_behind_first(world: World) -> None:
    before = world.profiles()
    _stopped_after(world, "c")  # the upper half frozen on 0, copied to 1
    mover = world.mover()  # no resume() at start: the operation does it
    mover.move(0, 100, 1)
    assert _done(mover)["slots_moved"] == 100
    assert world.profiles() == before
    held = set(world.fleet.shards[1].profiles.store.ids)
    assert held == {c for c in CUSTOMERS if slot_of(c) < 100}  # no stale copy left
