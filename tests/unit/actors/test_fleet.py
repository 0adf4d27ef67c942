"""A fleet of in-process shards grows (each new shard made by the factory, answering at
once), shrinks (the last shards stop gracefully: a snapshot their next start restores),
and answers one call on one shard through the request path, a refusal as a value."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from actors.calls import refused
from actors.fleet import LocalFleet
from actors.messages import Decide, GetProfile
from actors.shard import Shard
from decisioning.config import Config
from tests.unit.decisioning.policy.test_decide import NOW, Clock
from tests.unit.edge import apply_events


def _factory(config: Config, root: Path) -> tuple[list[int], Callable[[int], Shard]]:
    made: list[int] = []

    def make(i: int) -> Shard:
        made.append(i)
        return Shard(i, config, clock=Clock(), log_dir=str(root / str(i)))

    return made, make


def test_a_fleet_grows_by_its_factory_and_shrinks_from_the_end(
    small_config: Config, tmp_path: Path
) -> None:
    made, make = _factory(small_config, tmp_path)
    fleet = LocalFleet([make(0)], make)
    fleet.grow(3)
    assert made == [0, 1, 2] and len(fleet) == 3
    assert [s["shard"] for s in fleet.status()] == [0, 1, 2]
    assert fleet.node_of(2) == LocalFleet.NODE and fleet.node_of(3) is None
    event = {"customer_id": "c-1", "type": "page_view", "event_id": "e-1", "ts": NOW}
    apply_events(fleet.shards[2], [{**event, "properties": {"page": "cards"}}])
    fleet.grow(2)  # never shrinks
    assert len(fleet) == 3
    fleet.shrink(1)
    assert len(fleet) == 1
    back = Shard(2, small_config, clock=Clock(), log_dir=str(tmp_path / "2"))
    assert back.recovery["snapshot_profiles"] == 1  # it stopped with a snapshot
    assert back.get_profile(GetProfile("c-1")).known


def test_a_fleet_without_a_factory_cannot_grow(small_config: Config) -> None:
    fleet = LocalFleet([Shard(0, small_config, clock=Clock())])
    fleet.grow(1)
    with pytest.raises(ValueError, match="cannot grow"):
        fleet.grow(2)


def test_call_on_runs_one_request_path_call_and_answers_a_refusal_as_a_value(
    small_config: Config,
) -> None:
    fleet = LocalFleet([Shard(i, small_config, clock=Clock()) for i in range(2)])
    answer = fleet.call_on(1, "get_profile", GetProfile("c-9"))
    assert answer.shard == 1 and not answer.known
    bad = fleet.call_on(0, "decide", Decide("c-9", "fax"))
    assert refused(bad)
    with pytest.raises(ValueError, match="not a request method"):
        fleet.call_on(0, "status")
