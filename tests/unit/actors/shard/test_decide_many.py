"""A shard's side of POST /v1/decide/batch (`Shard.decide_many`, run as the actor runs a
call: actors/calls.py `run_calls`): each request decided as `decide` decides it, in
order, a refused one answering its own error; one WAL commit for the call; and the slot
check covers every request, so a call naming one slot the shard does not serve is
refused whole, with nothing applied."""

from __future__ import annotations

from pathlib import Path

from actors.calls import run_calls
from actors.messages import Decide, Decided, DecideMany, FreezeSlots
from actors.shard import Shard
from decisioning.config import Config
from decisioning.config.loader import config_from_dict
from decisioning.errors import InvalidInput, Moved, SlotFrozen, SlotMoved
from decisioning.profile.slots import SlotMap, contiguous_map, slot_of
from tests.conftest import SMALL
from tests.unit.decisioning.policy.test_decide import Clock


def _config(tmp: Path) -> Config:
    data = {**SMALL, "server": {**SMALL["server"], "data_dir": str(tmp / "data")}}
    return config_from_dict(data, "small.yaml")


def test_decide_many_answers_each_request_and_commits_once(tmp_path: Path) -> None:
    config = _config(tmp_path)
    shard = Shard(0, config, clock=Clock(), log_dir=str(tmp_path / "s0"))
    try:
        flushes = 0
        flush = shard.flush

        def counted() -> None:
            nonlocal flushes
            flushes += 1
            flush()

        shard.flush = counted  # type: ignore[method-assign]
        many = DecideMany((Decide("a", "web"), Decide("b", "web", limit=50), Decide("c", "email")))
        [answers] = run_calls(shard, [("decide_many", (many,))])
        ok, refused, ok2 = answers
        assert isinstance(ok, Decided) and ok.decision.customer_id == "a"
        assert isinstance(refused, InvalidInput) and refused.field == "limit"
        assert isinstance(ok2, Decided) and ok2.decision.channel == "email"
        assert flushes == 1 and shard.counters["decisions"] == 2
        shard.forwards["gone"] = "a"  # merged into a: answered moved, on its own
        again = DecideMany((Decide("gone", "web"), Decide("b", "web")))
        [answers] = run_calls(shard, [("decide_many", (again,))])
        assert isinstance(answers[0], Moved) and answers[0].target == "a"
        assert isinstance(answers[1], Decided)
    finally:
        shard.close()


def test_decide_many_is_refused_whole_when_any_slot_is_not_served_here(tmp_path: Path) -> None:
    config = _config(tmp_path)
    slot_map = SlotMap(1, tuple(contiguous_map(2)), 2)
    shard = Shard(0, config, clock=Clock(), slot_map=slot_map)
    mine = [c for c in (f"c{i}" for i in range(200)) if slot_map.owners[slot_of(c)] == 0]
    theirs = next(c for c in (f"c{i}" for i in range(200)) if slot_map.owners[slot_of(c)] == 1)
    many = DecideMany((Decide(mine[0], "web"), Decide(theirs, "web"), Decide(mine[1], "web")))
    [answer] = run_calls(shard, [("decide_many", (many,))])
    assert isinstance(answer, SlotMoved) and answer.owner == 1
    assert shard.counters["decisions"] == 0  # nothing of the call was applied
    lo = slot_of(mine[1])
    shard.freeze_slots(FreezeSlots("m", lo, lo + 1))
    both = DecideMany((Decide(mine[0], "web"), Decide(mine[1], "web")))
    [answer] = run_calls(shard, [("decide_many", (both,))])
    assert isinstance(answer, SlotFrozen) and shard.counters["decisions"] == 0
