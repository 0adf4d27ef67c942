"""Sliding windows as rings of time buckets: where an event lands, how time empties
buckets, and how every window is read at `now` in a dozen numpy calls.

Windowed aggregates keep `buckets` buckets of width window/buckets in a ring; an event
lands in the bucket of its own timestamp, and a read at `now` sums (or mins/maxes) the
buckets whose time range is within (now - window, now], at bucket granularity. Events
older than the window are still counted by all-time aggregates. Every window with the
same bucket width shares one epoch (the newest bucket) per customer: moving it on clears
the expired buckets of all of them, which is what time does to each anyway. A count
bucket saturates at 65,535 events (one customer, one event type, one bucket).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from decisioning.profile.schema import Agg

__all__ = [
    "CLEAR",
    "NEVER",
    "U16_MAX",
    "Clock",
    "Windows",
    "advance_row",
    "clocks_of",
    "read_windows",
    "windows_of",
]

NEVER = np.iinfo(np.int32).min + 1  # the epoch of a clock that never moved
U16_MAX = 65535  # a count bucket saturates here
CLEAR = {"count": 0.0, "sum": 0.0, "min": math.inf, "max": -math.inf}  # an empty bucket
_ORDER = {"count": 0, "sum": 1, "min": 2, "max": 3}  # members of Windows, in this order


@dataclass(frozen=True, slots=True)
class Clock:
    """The windows of one bucket width, whose buckets an epoch advance clears together."""

    f32_base: np.ndarray  # first float32 bucket of each sum/min/max member
    f32_b: np.ndarray  # its bucket count
    f32_clear: np.ndarray  # the value of its empty bucket
    u16_base: np.ndarray  # first uint16 bucket of each count member
    u16_b: np.ndarray
    max_buckets: int


@dataclass(frozen=True, slots=True)
class Windows:
    """Every windowed count/sum/min/max aggregate, read in one go (numpy calls cost ~1 µs
    each whatever their size, so one read of all windows beats one per bucket count)."""

    max_buckets: int  # W: the most buckets of any member; fewer are padded (never live)
    cols16: np.ndarray  # (c, W) uint16 columns of the c count members (members [0, c))
    cols: np.ndarray  # (n - c, W) float32 columns: sums, then mins, then maxes
    ep_cols: np.ndarray  # (n,) epoch column of each member
    widths: np.ndarray  # (n,) bucket width in seconds
    buckets: np.ndarray  # (n,) bucket count B of each member
    table: np.ndarray  # (n,) which live table a member uses
    live: np.ndarray  # (tables, W, 2W + 1, W) bool: see live_tables
    features: np.ndarray  # (n,)
    fill: np.ndarray  # (n - c, 1) value of an empty float32 bucket: 0, +inf (min), -inf (max)
    n_count: int  # members [0, c) are counts
    n_sum: int  # members [0, n_sum) are counts or sums
    n_min: int  # members [n_sum, n_sum + n_min) are mins, the rest maxes


def live_tables(counts: list[int], w: int) -> np.ndarray:
    """live[t, L mod B, clip(E - L, -W, W) + W, k]: is bucket k inside the window at E?

    For table t, B = counts[t]. Bucket k of a window whose clock is at epoch L holds
    epoch L - d with d = (L - k) mod B; it is inside the window at epoch E iff
    E - B < L - d <= E, so never when |E - L| >= B. Padding buckets (k >= B) are never
    inside.
    """
    out = np.zeros((len(counts), w, 2 * w + 1, w), dtype=bool)
    for t, b in enumerate(counts):
        r = np.arange(b)[:, None, None]
        age = np.arange(-b, b + 1)[None, :, None]
        d = np.mod(r - np.arange(b)[None, None, :], b)
        out[t, :b, w - b : w + b + 1, :b] = (d >= -age) & (d < b - age)
    return out


def _members(aggs: list[Agg]) -> list[Agg]:
    """The windowed count/sum/min/max aggregates, counts first, then sums, mins, maxes."""
    return sorted((a for a in aggs if a.ep_col >= 0), key=lambda a: _ORDER[a.spec.kind])


def clocks_of(aggs: list[Agg]) -> dict[int, Clock]:
    """Per epoch column, the buckets its advance clears."""
    members = _members(aggs)
    clocks: dict[int, Clock] = {}
    for ep in sorted({a.ep_col for a in members}):
        on = [a for a in members if a.ep_col == ep]
        f32 = [a for a in on if a.spec.kind != "count"]
        u16 = [a for a in on if a.spec.kind == "count"]
        clocks[ep] = Clock(
            f32_base=np.array([a.col for a in f32], dtype=np.intp),
            f32_b=np.array([a.spec.buckets for a in f32], dtype=np.intp),
            f32_clear=np.array([CLEAR[a.spec.kind] for a in f32], dtype=np.float32),
            u16_base=np.array([a.col for a in u16], dtype=np.intp),
            u16_b=np.array([a.spec.buckets for a in u16], dtype=np.intp),
            max_buckets=max(a.spec.buckets for a in on),
        )
    return clocks


def windows_of(aggs: list[Agg]) -> Windows | None:
    """How `read_windows` reads every window at once; None when there is none."""
    members = _members(aggs)
    if not members:
        return None
    kinds: list[str] = [a.spec.kind for a in members]
    counts = sorted({a.spec.buckets for a in members})
    w = max(counts)
    n_count = kinds.count("count")

    def columns(of: list[Agg]) -> np.ndarray:
        cols = [[a.col + min(k, a.spec.buckets - 1) for k in range(w)] for a in of]
        return np.array(cols, dtype=np.intp).reshape(len(of), w)

    return Windows(
        max_buckets=w,
        cols16=columns(members[:n_count]),
        cols=columns(members[n_count:]),
        ep_cols=np.array([a.ep_col for a in members], dtype=np.intp),
        widths=np.array([a.width for a in members], dtype=np.float64),
        buckets=np.array([a.spec.buckets for a in members], dtype=np.int64),
        table=np.array([counts.index(a.spec.buckets) for a in members], dtype=np.intp),
        live=live_tables(counts, w),
        features=np.array([a.feature for a in members], dtype=np.intp),
        fill=np.array([CLEAR[k] for k in kinds[n_count:]], dtype=np.float32).reshape(-1, 1),
        n_count=n_count,
        n_sum=sum(k in ("count", "sum") for k in kinds),
        n_min=kinds.count("min"),
    )


def advance_row(clock: Clock, f32: np.ndarray, u16: np.ndarray, last: int, e: int) -> None:
    """Empty the buckets of epochs last+1 .. e of one row, for one bucket width."""
    ks = np.arange(max(last + 1, e - clock.max_buckets + 1), e + 1)
    if clock.f32_base.size:
        f32[clock.f32_base[:, None] + ks % clock.f32_b[:, None]] = clock.f32_clear[:, None]
    if clock.u16_base.size:
        u16[clock.u16_base[:, None] + ks % clock.u16_b[:, None]] = 0


def read_windows(
    g: Windows, f32: np.ndarray, u16: np.ndarray, i32: np.ndarray, now: float
) -> np.ndarray:
    """Sum/min/max of the buckets still inside each window, in a dozen numpy calls."""
    w = g.max_buckets
    last = i32[g.ep_cols].astype(np.int64)
    # ages beyond +-w leave no bucket live, like +-B (the table is padded to w)
    age = np.minimum(np.maximum((now // g.widths).astype(np.int64) - last, -w), w) + w
    live = g.live[g.table, last % g.buckets, age]
    c = g.n_count
    masked = np.where(live[c:], f32[g.cols], g.fill)
    i, j = g.n_sum - c, g.n_sum + g.n_min - c
    out = np.concatenate(
        (
            np.add.reduce(u16[g.cols16] * live[:c], axis=1),
            np.add.reduce(masked[:i], axis=1),
            np.minimum.reduce(masked[i:j], axis=1),
            np.maximum.reduce(masked[j:], axis=1),
        ),
        dtype=np.float64,
    )
    out[np.isinf(out)] = np.nan  # no event in the window: min/max are null
    return out
