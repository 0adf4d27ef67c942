"""The supervisor's slot map and shard operations over in-process shards: it starts from
the stored map (not the config), settles a migration its predecessor left, answers the
layout routers fetch and the shards view operators read, and answers a bad or
concurrent operation as an error value."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from actors import messages as m
from actors.calls import refused
from actors.deployed import slot_store
from actors.fleet import LocalFleet
from actors.shard import Shard
from actors.supervisor import Supervisor
from decisioning.config import Config
from decisioning.config.loader import config_from_dict
from decisioning.errors import InvalidInput, MoveInProgress, UnknownShard
from decisioning.profile.slots import SLOTS, Migration, SlotMap, slot_of
from tests.conftest import SMALL
from tests.unit.actors.test_slots import CUSTOMERS, Gate, _write
from tests.unit.decisioning.policy.test_decide import Clock


def _config(tmp_path: Path, shards: int) -> Config:
    server = {**SMALL["server"], "data_dir": str(tmp_path / "data"), "shards": shards}
    return config_from_dict({**SMALL, "server": server}, "small.yaml")


def _fleet(config: Config) -> LocalFleet:
    """The shards the stored map names, each started as a shard actor starts: its own
    directory, the stored map; new ones made the same way."""
    slot_map = slot_store(config).initial(config.server.shards)

    def make(i: int) -> Shard:
        root = Path(config.server.data_dir) / "shards" / str(i)
        return Shard(
            i, config, clock=Clock(), log_dir=str(root), slot_map=slot_store(config).load()
        )

    return LocalFleet([make(i) for i in range(slot_map.shards)], make)


def _profiles(supervisor: Supervisor) -> dict[str, Any]:
    _, owners, _ = supervisor.layout()
    fleet = supervisor.fleet
    return {
        c: fleet.call_on(owners[slot_of(c)], "get_profile", m.GetProfile(c))._replace(shard=0)
        for c in CUSTOMERS
    }


def test_scaling_through_the_supervisor_keeps_every_profile(tmp_path: Path) -> None:
    config = _config(tmp_path, 1)
    fleet = _fleet(config)
    supervisor = Supervisor(config, fleet)
    _write(fleet, 0)
    before = _profiles(supervisor)
    assert supervisor.shards()["moving"] is None
    started = supervisor.start_scale(3)
    assert not refused(started) and started["state"] == "running"
    assert supervisor.wait_for_move(60)["state"] == "done"
    names, owners, epoch = supervisor.layout()
    assert names == ["shard-0", "shard-1", "shard-2"] and sorted(set(owners)) == [0, 1, 2]
    assert _profiles(supervisor) == before
    view = supervisor.shards()
    assert view["epoch"] == epoch and view["moving"]["operation"] == "scale 1->3"
    assert [s["slots"] for s in view["shards"]] == [5462, 5461, 5461]
    assert sum(s["profiles"] for s in view["shards"]) == len(CUSTOMERS)
    assert all(s["ready"] and s["node"] == LocalFleet.NODE for s in view["shards"])
    covered = sorted(r for s in view["shards"] for r in s["ranges"])
    assert covered[0][0] == 0 and covered[-1][1] == SLOTS - 1  # inclusive ranges
    assert all(a[1] + 1 == b[0] for a, b in zip(covered, covered[1:], strict=False))

    supervisor.start_scale(2)
    assert supervisor.wait_for_move(60)["state"] == "done"
    assert supervisor.layout()[0] == ["shard-0", "shard-1"]
    assert _profiles(supervisor) == before
    assert supervisor.move_progress()["operation"] == "scale 3->2"

    # a new supervisor (the old one's node was lost) finds the map it stored
    again = Supervisor(config, fleet)
    assert again.layout() == supervisor.layout()


def test_a_stored_map_rules_over_the_config(tmp_path: Path) -> None:
    two = _config(tmp_path, 2)
    slot_store(two).initial(2)
    three = _config(tmp_path, 3)  # the config says 3 now: the shards still run 2
    supervisor = Supervisor(three, _fleet(three))
    names, owners, epoch = supervisor.layout()
    assert names == ["shard-0", "shard-1"] and owners == list(SlotMap.contiguous(2).owners)
    assert epoch == 1


def test_the_supervisor_settles_the_migration_it_was_stopped_in(tmp_path: Path) -> None:
    config = _config(tmp_path, 2)
    fleet = _fleet(config)
    store = slot_store(config)
    stored = store.load()
    assert stored is not None
    mig = Migration("dead-1", 0, 100, 0, 1)
    store.save(replace(stored, epoch=5, migration=mig))
    fleet.call_on(0, "freeze_slots", m.FreezeSlots(mig.id, mig.lo, mig.hi))
    supervisor = Supervisor(config, fleet)
    slot_map = store.load()
    assert slot_map is not None and slot_map.migration is None and slot_map.epoch > 5
    assert slot_map.owners == SlotMap.contiguous(2).owners
    assert fleet.shards[0].status()["frozen"] is None
    assert supervisor.layout()[2] == slot_map.epoch


def test_a_bad_or_second_operation_is_answered_as_an_error(tmp_path: Path) -> None:
    config = _config(tmp_path, 1)
    gate = Gate(_fleet(config), "freeze_slots")
    supervisor = Supervisor(config, gate)
    for answer, kind, code in (
        (supervisor.start_scale(0), InvalidInput, "invalid_field"),
        (supervisor.start_scale(65), InvalidInput, "invalid_field"),
        (supervisor.start_move(10, 5, 0), InvalidInput, "invalid_field"),
        (supervisor.start_move(0, 5, 1), UnknownShard, "unknown_shard"),
    ):
        assert isinstance(answer, kind) and answer.code == code, answer
    supervisor.start_scale(2)
    assert gate.reached.wait(30)
    busy = supervisor.start_rebalance()
    assert isinstance(busy, MoveInProgress) and busy.code == "move_in_progress"
    assert supervisor.shards()["moving"]["state"] == "running"
    gate.open.set()
    assert supervisor.wait_for_move(60)["state"] == "done"
    assert not refused(supervisor.start_rebalance())
    assert supervisor.wait_for_move(60)["slots_total"] == 0


@pytest.mark.parametrize("shards", [1, 2])
def test_layout_epoch_grows_with_every_change(tmp_path: Path, shards: int) -> None:
    config = _config(tmp_path, shards)
    supervisor = Supervisor(config, _fleet(config))
    _, _, first = supervisor.layout()
    supervisor.start_move(0, 10, shards - 1)
    assert supervisor.wait_for_move(60)["state"] == "done"
    _, owners, epoch = supervisor.layout()
    assert owners[:10] == [shards - 1] * 10
    assert epoch > first or shards == 1  # (moving to its owner moves nothing)
