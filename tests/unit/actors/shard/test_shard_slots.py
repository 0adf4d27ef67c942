"""Slots moving between two real shards (with their WALs): what a range held reads back
the same from its new owner, before and after both restart (answers given under a
request id too); a shard refuses, without applying anything, a call for a slot it does
not serve; a frozen range waits."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from actors import messages as m
from actors.calls import run_calls
from actors.shard import Shard
from actors.shard import slots as shard_slots
from decisioning.errors import InvalidInput, SlotFrozen, SlotMoved
from decisioning.journal.wal import Replay, replay, segments
from decisioning.profile.slots import SLOTS, Migration, SlotMap, decision_slot, slot_of
from tests.unit import edge
from tests.unit.actors.shard.test_shard_journal import CONFIG, CUSTOMERS, ev, run
from tests.unit.decisioning.policy.test_decide import NOW, Clock

HALF = 5000  # c2 stays on shard 0; c1 and c5 (and the ids merged away) move


def _owner(key: str) -> int:
    return 0 if slot_of(key) < HALF else 1


def view(shards: list[Shard], owner: Any = None) -> dict[str, Any]:
    """What a user sees of the customers, each asked at its owner (`owner(key)`), and
    the state the shards hold between them."""
    owner = owner or (lambda key: 0)
    out: dict[str, Any] = {}
    for c in CUSTOMERS:
        s = shards[owner(c)]
        p = run_calls(s, [("get_profile", (m.GetProfile(c),))])[0]
        if isinstance(p, Exception):  # (compared by kind and attributes, not identity)
            out[f"profile {c}"] = (type(p).__name__, sorted(vars(p).items()))
        else:
            out[f"profile {c}"] = p._replace(shard=0)
        out[f"identity {c}"] = s.identity_of(m.IdentityOf(c, False))
        out[f"resolve {c}"] = s.resolve(m.Resolve(c))
    keyed = ("alias", "forward", "owed", "pin")
    rows = [r for s in shards for r in s.book.rows()]
    out["identity rows"] = sorted(
        {tuple(r) for r in rows if r[0] in keyed or len(shards) == 1}
        | {tuple(r) for r in rows if r[0] not in keyed},
        key=repr,
    )
    out["decisions"] = sorted(((k, tuple(v)) for s in shards for k, v in s.decisions.items()))
    out["seen"] = sorted({k for s in shards for k in s.seen})
    out["contacts"] = sorted((r for s in shards for r in s.contacts.rows()), key=repr)
    out["timers"] = sorted(r for s in shards for r in s.timers.rows())
    out["outbound"] = sorted(repr(x.row()) for s in shards for x in s.triggers.outbox.messages())
    out["customers"] = sorted(c for s in shards for c in s.store.ids)
    out["answers"] = sorted((r for s in shards for r in s.history.answers.rows()), key=repr)
    return out


def _move(src: Shard, dst: Shard, lo: int, hi: int, mid: str = "m1") -> int:
    """The shard side of the protocol, through the request path as the supervisor calls
    it: freeze on src, absorb on dst, the map flipped on both, drop on src."""
    state = run_calls(src, [("freeze_slots", (m.FreezeSlots(mid, lo, hi),))])[0]
    assert run_calls(dst, [("absorb_slots", (m.AbsorbSlots(state),))])[0] == state.profiles
    owners = [1 if lo <= s < hi else 0 for s in range(SLOTS)]
    flipped = SlotMap(3, tuple(owners), 2, Migration(mid, lo, hi, 0, 1, "flipped"))
    for s in (src, dst):
        run_calls(s, [("set_slot_map", (m.SetSlotMap(flipped),))])
    dropped = run_calls(src, [("drop_slots", (m.DropSlots(mid, lo, hi),))])[0]
    done = SlotMap(4, tuple(owners), 2)
    for s in (src, dst):
        run_calls(s, [("set_slot_map", (m.SetSlotMap(done),))])
    return int(dropped)


@pytest.fixture
def two(tmp_path: Path) -> tuple[Shard, Shard, Clock]:
    clock = Clock()
    one = SlotMap(1, (0,) * SLOTS, 1)
    a = Shard(0, CONFIG, clock=clock, log_dir=str(tmp_path / "0"), slot_map=one)
    b = Shard(1, CONFIG, clock=clock, log_dir=str(tmp_path / "1"), slot_map=one)
    run(a, clock)
    for c in ("c1", "c2", "c5"):  # answers under a request id, on both sides of HALF
        edge.decide(a, {"customer_id": c, "channel": "web", "request_id": f"r-{c}"})
    return a, b, clock


def test_a_moved_range_reads_back_the_same_from_its_new_owner_and_after_a_restart(
    two: tuple[Shard, Shard, Clock], tmp_path: Path
) -> None:
    a, b, clock = two
    assert {_owner(c) for c in CUSTOMERS} == {0, 1}  # the move splits them
    before = view([a])
    moved = _move(a, b, HALF, SLOTS)
    assert moved == sum(1 for c in before["customers"] if _owner(c) == 1) > 0
    assert all(_owner(c) == 0 for c in a.store.ids)
    assert all(_owner(c) == 1 for c in b.store.ids)
    assert view([a, b], _owner) == before
    a.close(), b.close()  # no snapshot: the WAL's records bring it back
    a2 = Shard(0, CONFIG, clock=clock, log_dir=str(tmp_path / "0"), slot_map=a.ownership.map)
    b2 = Shard(1, CONFIG, clock=clock, log_dir=str(tmp_path / "1"), slot_map=b.ownership.map)
    assert view([a2, b2], _owner) == before
    a2.snapshot(), b2.snapshot()
    a2.close(), b2.close()
    a3 = Shard(0, CONFIG, clock=clock, log_dir=str(tmp_path / "0"), slot_map=a.ownership.map)
    b3 = Shard(1, CONFIG, clock=clock, log_dir=str(tmp_path / "1"), slot_map=b.ownership.map)
    assert view([a3, b3], _owner) == before
    a3.close(), b3.close()


def test_after_the_move_the_old_owner_refuses_and_the_new_one_serves(
    two: tuple[Shard, Shard, Clock],
) -> None:
    a, b, clock = two
    _move(a, b, HALF, SLOTS)
    gone = next(c for c in CUSTOMERS if _owner(c) == 1)
    before = a.state_digest()
    answer = run_calls(a, [("apply_events", (edge.events([ev(gone, "page_view", NOW)]),))])[0]
    assert isinstance(answer, SlotMoved)
    assert (answer.owner, answer.epoch, answer.slot) == (1, 4, slot_of(gone))
    assert a.state_digest() == before  # nothing applied
    assert run_calls(b, [("apply_events", (edge.events([ev(gone, "page_view", NOW)]),))]) == [1]
    decided = run_calls(
        b, [("decide", (edge.decide_message({"customer_id": gone, "channel": "web"}),))]
    )[0]
    assert decision_slot(decided.decision.decision_id) == slot_of(gone)
    # a batch with one customer not served here is refused whole
    stay = next(c for c in CUSTOMERS if _owner(c) == 0)
    mixed = edge.events([ev(stay, "page_view", NOW, "z1"), ev(gone, "page_view", NOW, "z2")])
    assert isinstance(run_calls(a, [("apply_events", (mixed,))])[0], SlotMoved)
    assert a.state_digest() == before


def test_a_frozen_range_answers_slot_frozen_its_timers_wait_and_a_rollback_serves_it(
    two: tuple[Shard, Shard, Clock],
) -> None:
    a, b, clock = two
    edge.apply_events(a, [ev("c1", "cart_add", clock.t)])  # arms a timer for c1
    lo, hi = slot_of("c1"), slot_of("c1") + 1
    state = run_calls(a, [("freeze_slots", (m.FreezeSlots("m9", lo, hi),))])[0]
    assert state.ids == ("c1",) and state.timers
    answer = run_calls(
        a, [("decide", (edge.decide_message({"customer_id": "c1", "channel": "web"}),))]
    )[0]
    assert isinstance(answer, SlotFrozen) and answer.slot == lo
    clock.t += 3600
    assert a.tick()["fired"] == 0  # c1's timer waits: it moves with the slot
    assert a.timers.get("c1", "cart_abandoned") is not None
    run_calls(a, [("unfreeze_slots", (m.UnfreezeSlots("m9", lo, hi),))])
    assert a.tick()["fired"] == 1
    assert not isinstance(
        run_calls(a, [("decide", (edge.decide_message({"customer_id": "c1", "channel": "web"}),))])[
            0
        ],
        Exception,
    )


def test_a_restarted_source_comes_back_frozen_from_the_stored_map(tmp_path: Path) -> None:
    mig = Migration("m2", 0, HALF, 0, 1, "frozen")
    frozen = SlotMap(2, (0,) * SLOTS, 2, mig)
    a = Shard(0, CONFIG, clock=Clock(), slot_map=frozen)
    c = next(c for c in CUSTOMERS if _owner(c) == 0)
    msg = edge.decide_message({"customer_id": c, "channel": "web"})
    assert isinstance(run_calls(a, [("decide", (msg,))])[0], SlotFrozen)
    assert a.status()["frozen"] == [0, HALF - 1]
    run_calls(a, [("set_slot_map", (m.SetSlotMap(SlotMap(3, (0,) * SLOTS, 2)),))])
    assert not isinstance(run_calls(a, [("decide", (msg,))])[0], Exception)
    # an older map is ignored
    assert a.set_slot_map(m.SetSlotMap(frozen)) == 3 and a.status()["frozen"] is None


def test_a_big_range_is_logged_in_parts_that_replay_to_the_same_state(
    two: tuple[Shard, Shard, Clock], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A WAL record has a size limit: an absorb of many profiles is logged as several
    SlotsAbsorbed parts (the first replaces the range, the rest add to it)."""
    monkeypatch.setattr(shard_slots, "PART", 1)  # every item its own part
    a, b, clock = two
    before = view([a])
    _move(a, b, HALF, SLOTS)
    b.close()
    d = str(tmp_path / "1")
    parts = [r for r in replay(d, [(f, os.path.getsize(os.path.join(d, f))) for *_, f in
             segments(d)], Replay()) if r[0] == "slots+"]  # fmt: skip
    assert len(parts) > 3 and [r[1][4] for r in parts] == list(range(len(parts)))
    b2 = Shard(1, CONFIG, clock=clock, log_dir=d, slot_map=b.ownership.map)
    assert view([a, b2], _owner) == before
    a.close(), b2.close()


def test_an_absorb_of_a_range_already_served_is_refused_and_changes_nothing(
    two: tuple[Shard, Shard, Clock],
) -> None:
    """A late or repeated absorb after the map named the destination would overwrite
    what it acknowledged since: refused."""
    a, b, clock = two
    state = run_calls(a, [("freeze_slots", (m.FreezeSlots("m1", HALF, SLOTS),))])[0]
    _move(a, b, HALF, SLOTS, "m1")
    moved = next(c for c in CUSTOMERS if _owner(c) == 1)
    edge.apply_events(b, [ev(moved, "page_view", NOW, "late-1")])
    digest = b.state_digest()
    answer = run_calls(b, [("absorb_slots", (m.AbsorbSlots(state),))])[0]
    assert isinstance(answer, InvalidInput) and answer.code == "slot_owned"
    assert b.state_digest() == digest


def test_a_retried_request_id_gets_the_same_answer_from_the_new_owner(
    two: tuple[Shard, Shard, Clock], tmp_path: Path
) -> None:
    a, b, clock = two
    moving = next(c for c in ("c1", "c2", "c5") if _owner(c) == 1)
    ask = {"customer_id": moving, "channel": "web", "request_id": f"r-{moving}"}
    given = edge.decide(a, ask)  # (a retry already: the fixture decided it)
    assert len(a.history.answers.rows(HALF, SLOTS)) == 2
    _move(a, b, HALF, SLOTS)
    assert a.history.answers.rows(HALF, SLOTS) == []  # gone from the old owner
    assert len(a.history.answers) == 1  # (the one that stays)
    recorded = len(b.decisions)
    assert edge.decide(b, ask) == given
    assert len(b.decisions) == recorded  # not decided again
    b.close()
    b2 = Shard(1, CONFIG, clock=clock, log_dir=str(tmp_path / "1"), slot_map=b.ownership.map)
    assert edge.decide(b2, ask) == given  # from the absorbed range in its WAL
    b2.close(), a.close()
