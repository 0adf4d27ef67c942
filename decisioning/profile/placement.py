"""Where slots should live: a balanced slot map that moves as few slots as possible from
the current one, and the moves that get there (pure; actors/slots.py runs them).

Moving a slot costs: its profiles are frozen, copied and dropped, and its customers wait
meanwhile. So a new layout is not `contiguous_map(n)` (which reshuffles most slots when n
changes) but the current map changed where it must be:

- every shard `s < shards` gets a quota of `SLOTS // shards` slots, `+1` for the
  `SLOTS % shards` shards that hold the most now (so the remainder is not moved either);
- a shard keeps its slots up to its quota (the first ones, in slot order, so a
  contiguous range stays one range) and gives away the rest; a shard `>= shards` gives
  all of its slots away;
- the slots given away go, in slot order, to the shards under their quota, in shard
  order: each receiver takes a run of them.

A slot moves only if its owner is over its quota or goes away: no balanced map moves
fewer.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from decisioning.profile.slots import SLOTS

__all__ = ["Transfer", "balanced", "chunked", "quotas", "transfers"]

Transfer = tuple[int, int, int, int]  # (lo, hi exclusive, src, dst)


def quotas(owners: Sequence[int], shards: int) -> list[int]:
    """How many slots each of `shards` shards ends with: SLOTS // shards, one more for
    the SLOTS % shards shards owning the most now (the lowest id first among equals)."""
    if shards < 1:
        msg = f"shards must be at least 1, not {shards}"
        raise ValueError(msg)
    held = _counts(owners, shards)
    base, extra = divmod(SLOTS, shards)
    q = [base] * shards
    for s in sorted(range(shards), key=lambda s: (-held[s], s))[:extra]:
        q[s] += 1
    return q


def balanced(owners: Sequence[int], shards: int) -> list[int]:
    """A map of every slot to one of `shards` shards, each holding its quota, that keeps
    every slot it can where `owners` has it (see the module docstring)."""
    q = quotas(owners, shards)
    kept = [0] * shards
    target = list(owners)
    freed: list[int] = []
    for slot, owner in enumerate(owners):
        if owner < shards and kept[owner] < q[owner]:
            kept[owner] += 1
        else:
            freed.append(slot)
    receivers = (s for s in range(shards) for _ in range(q[s] - kept[s]))
    for slot, s in zip(freed, receivers, strict=True):
        target[slot] = s
    return target


def transfers(current: Sequence[int], target: Sequence[int]) -> list[Transfer]:
    """The slots whose owner differs, as maximal runs `(lo, hi, src, dst)` in slot order."""
    out: list[Transfer] = []
    for slot, (src, dst) in enumerate(zip(current, target, strict=True)):
        if src == dst:
            continue
        if out and out[-1][1] == slot and out[-1][2:] == (src, dst):
            lo, _, _, _ = out[-1]
            out[-1] = (lo, slot + 1, src, dst)
        else:
            out.append((slot, slot + 1, src, dst))
    return out


def chunked(runs: Iterable[Transfer], size: int = 1024) -> list[Transfer]:
    """Each run split into pieces of at most `size` slots (one migration each: a piece
    is what customers wait on while it moves)."""
    if size < 1:
        msg = f"size must be at least 1, not {size}"
        raise ValueError(msg)
    return [
        (lo, min(lo + size, hi), src, dst)
        for start, hi, src, dst in runs
        for lo in range(start, hi, size)
    ]


def _counts(owners: Sequence[int], shards: int) -> list[int]:
    held = [0] * shards
    for owner in owners:
        if owner < shards:
            held[owner] += 1
    return held
