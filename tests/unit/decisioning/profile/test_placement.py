"""Placement: from any map to any shard count, the target is balanced, names only running
shards, is reached by applying the transfers, and moves no slot it could keep."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from decisioning.errors import NotFound
from decisioning.profile.placement import balanced, chunked, quotas, transfers
from decisioning.profile.slots import SLOTS, contiguous_map, decision_slot, ranges


@st.composite
def maps(draw: st.DrawFn) -> list[int]:
    """A slot map over 1..8 shards: runs of random lengths and owners (so some shards
    own much, some nothing), or a contiguous one."""
    shards = draw(st.integers(1, 8))
    if draw(st.booleans()):
        return contiguous_map(shards)
    cuts = sorted(draw(st.sets(st.integers(1, SLOTS - 1), max_size=20)))
    owners: list[int] = []
    for lo, hi in zip([0, *cuts], [*cuts, SLOTS], strict=True):
        owners += [draw(st.integers(0, shards - 1))] * (hi - lo)
    return owners


def _applied(current: list[int], moves: list[tuple[int, int, int, int]]) -> list[int]:
    out = list(current)
    for lo, hi, src, dst in moves:
        assert all(out[s] == src for s in range(lo, hi))  # each move starts where it says
        out[lo:hi] = [dst] * (hi - lo)
    return out


def _kept_at_most(current: list[int], shards: int) -> int:
    """The most slots any balanced map over `shards` can leave where they are."""
    base, extra = divmod(SLOTS, shards)
    held = [current.count(s) for s in range(shards)]
    return sum(min(h, base) for h in held) + min(extra, sum(1 for h in held if h > base))


@settings(max_examples=60, deadline=None)
@given(current=maps(), shards=st.integers(1, 12))
def test_the_target_is_balanced_reachable_and_moves_no_slot_it_could_keep(
    current: list[int], shards: int
) -> None:
    target = balanced(current, shards)
    assert len(target) == SLOTS and all(0 <= s < shards for s in target)
    held = [target.count(s) for s in range(shards)]
    assert max(held) - min(held) <= 1 and sum(held) == SLOTS
    assert held == quotas(current, shards)
    moves = transfers(current, target)
    assert _applied(current, moves) == target
    assert _applied(current, chunked(moves, 100)) == target
    moved = sum(hi - lo for lo, hi, _, _ in moves)
    assert moved == SLOTS - _kept_at_most(current, shards)  # minimal
    # no slot leaves a shard that keeps a share at or under its quota
    had = [current.count(s) for s in range(shards)]
    for _, _, src, _ in moves:
        assert src >= shards or had[src] > held[src]


@settings(max_examples=40, deadline=None)
@given(current=maps(), shards=st.integers(1, 12))
def test_transfers_are_maximal_runs_and_chunks_are_small(current: list[int], shards: int) -> None:
    moves = transfers(current, balanced(current, shards))
    for a, b in zip(moves, moves[1:], strict=False):
        assert a[1] <= b[0] and not (a[1] == b[0] and a[2:] == b[2:])  # ordered, maximal
    pieces = chunked(moves, 1024)
    assert all(0 < hi - lo <= 1024 for lo, hi, _, _ in pieces)
    assert sum(hi - lo for lo, hi, _, _ in pieces) == sum(hi - lo for lo, hi, _, _ in moves)


def test_scaling_a_contiguous_map_moves_one_run_per_new_shard() -> None:
    one_to_two = transfers(contiguous_map(1), balanced(contiguous_map(1), 2))
    assert one_to_two == [(SLOTS // 2, SLOTS, 0, 1)]
    two = balanced(contiguous_map(1), 2)
    three = balanced(two, 3)
    assert [r[2] for r in ranges(three)] == [0, 2, 1, 2]  # each keeps one range
    assert sum(hi - lo for lo, hi, _, _ in transfers(two, three)) == SLOTS // 3
    back = balanced(three, 2)  # shard 2 gives everything back, nobody else moves
    assert all(src == 2 for _, _, src, _ in transfers(three, back))
    assert len(chunked(one_to_two)) == SLOTS // 2 // 1024


def test_a_balanced_map_stays_put() -> None:
    for shards in (1, 3, 7):
        same = balanced(contiguous_map(shards), shards)
        assert transfers(contiguous_map(shards), same) == []


def test_a_decision_id_naming_no_slot_is_an_unknown_decision() -> None:
    assert decision_slot("d-3fff-abc") == SLOTS - 1
    for bad in ("d-4000-abc", "d-ffff-abc", "d-zzzz-abc", "d-12-abc", "x-0001-abc", "d-0001"):
        with pytest.raises(NotFound) as e:
            decision_slot(bad)
        assert e.value.code == "unknown_decision", bad
