"""Folding one profile into another of the same person (an identity merge), per kind of
aggregate, as if one profile had received both event streams.

A merge moves one customer's `RowState` (a copy of its row of each state matrix) from
the merged id's shard to the survivor's, and `merge_into` folds it into the survivor's
row there: counts and sums add, min and max combine, `last` and time-since take the
latest, decayed counts decay to the later time and add, windows align their clocks and
combine bucket by bucket. Attributes stay unless unset here; consent takes the stricter
(no, then unknown, then yes). Folding is done once per merge id (see
decisioning/profile/identity.py), so it need not be idempotent.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from decisioning.profile.windows import U16_MAX, advance_row

if TYPE_CHECKING:
    from decisioning.profile.schema import Agg, ProfileSchema

__all__ = ["RowState", "merge_into"]


class RowState(NamedTuple):
    """One customer's row of each state matrix (copies)."""

    f32: np.ndarray
    f64: np.ndarray
    i32: np.ndarray
    u16: np.ndarray


def merge_into(schema: ProfileSchema, dest: RowState, other: RowState) -> None:
    """Fold `other` into `dest`, whose arrays are the survivor's rows (written in place);
    `other` is left as it is."""
    src = RowState(*(x.copy() for x in other))
    _align_clocks(schema, dest, src)
    for agg in schema.aggs:
        _fold(agg, dest, src)
    d32, a32 = dest.f32, src.f32
    for col in schema.attr_col.values():
        if math.isnan(d32[col]):
            d32[col] = a32[col]
    for col in schema.consent_col.values():
        x, y = d32[col], a32[col]
        d32[col] = (
            0.0 if (x == 0 or y == 0) else (math.nan if math.isnan(x) or math.isnan(y) else 1.0)
        )


def _align_clocks(schema: ProfileSchema, dest: RowState, src: RowState) -> None:
    """Both rows' window clocks to the later epoch, so buckets line up one to one."""
    for ep, clock in schema.clocks.items():
        d, a = int(dest.i32[ep]), int(src.i32[ep])
        e = max(d, a)
        for row, last in ((dest, d), (src, a)):
            if last < e:
                advance_row(clock, row.f32, row.u16, last, e)
                row.i32[ep] = e


def _fold(agg: Agg, dest: RowState, src: RowState) -> None:
    """Fold one aggregate's state of `src` into `dest`."""
    d32, d64, d16 = dest.f32, dest.f64, dest.u16
    a32, a64, a16 = src.f32, src.f64, src.u16
    kind, c, t = agg.spec.kind, agg.col, agg.ts_col
    if kind == "time_since":
        d64[t] = np.fmax(d64[t], a64[t])
    elif kind == "decayed_count":
        late = max(d64[t], a64[t])
        if late == -math.inf:
            return
        hl = agg.spec.half_life or 1.0
        d32[c] = d32[c] * 2.0 ** (-(late - d64[t]) / hl) + a32[c] * 2.0 ** (-(late - a64[t]) / hl)
        d64[t] = late
    elif kind == "last":
        if a64[t] > d64[t] or (math.isnan(d64[t]) and not math.isnan(a64[t])):
            d32[c], d64[t] = a32[c], a64[t]
    elif agg.ep_col < 0:
        if kind in ("count", "sum"):
            d32[c] += a32[c]
        elif kind == "min":
            d32[c] = np.fmin(d32[c], a32[c])
        else:
            d32[c] = np.fmax(d32[c], a32[c])
    else:
        b = slice(c, c + agg.spec.buckets)
        if kind == "count":
            d16[b] = np.minimum(d16[b].astype(np.int64) + a16[b], U16_MAX)
        elif kind == "sum":
            d32[b] += a32[b]
        elif kind == "min":
            d32[b] = np.minimum(d32[b], a32[b])
        else:
            d32[b] = np.maximum(d32[b], a32[b])
