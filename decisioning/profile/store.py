"""Every profile of one shard as rows of preallocated numeric columns: events applied
to them, features read from them at `now`, rows exported to and loaded from snapshots.

The profile *features* (attributes, aggregates, consent_<channel>) are derived from the
state at read time for a given `now`, so windows expire as time passes without any
background work (see decisioning/profile/windows.py). An IdIndex maps customer ids to
rows; an erased customer's row is blanked and never reused.
"""

from __future__ import annotations

import math
import mmap
from collections.abc import Iterable
from typing import Any

import numpy as np

from decisioning.profile.events import CONSENT, PROFILE_UPDATE, Event
from decisioning.profile.ids import IdIndex
from decisioning.profile.merge import RowState, merge_into
from decisioning.profile.schema import Agg, ProfileSchema
from decisioning.profile.windows import NEVER, U16_MAX, advance_row, read_windows

__all__ = ["ProfileStore"]


def _number(value: Any) -> float | None:
    """A finite number, or None for anything else (a bool is not a number here)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    v = float(value)
    return v if math.isfinite(v) else None


def _copy(arr: np.ndarray) -> np.ndarray:
    """A copy in memory the kernel maps in one go (MAP_POPULATE): copying 400 MB into
    fresh pages otherwise spends ~0.8 s taking a page fault per 4 KiB, ~0.16 s so."""
    if arr.nbytes < 1 << 20 or not hasattr(mmap, "MAP_POPULATE"):
        return arr.copy()
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | mmap.MAP_POPULATE
    out = np.frombuffer(mmap.mmap(-1, arr.nbytes, flags=flags), dtype=arr.dtype)
    out = out.reshape(arr.shape)
    out[...] = arr
    return out


class ProfileStore:
    """Every profile of one shard, as rows of preallocated columns."""

    def __init__(self, schema: ProfileSchema, capacity: int = 1024) -> None:
        self.schema = schema
        self.ids = IdIndex(capacity)
        self._capacity = 0
        self.f32 = np.empty((0, schema.n32), dtype=np.float32)
        self.f64 = np.empty((0, schema.n64), dtype=np.float64)
        self.i32 = np.empty((0, schema.ni), dtype=np.int32)
        self.u16 = np.empty((0, schema.n16), dtype=np.uint16)
        self._grow(max(capacity, 1))
        self.empty_features = self._read(self._blank_state(), 0.0)

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, customer_id: str) -> bool:
        return customer_id in self.ids

    def nbytes(self) -> int:
        """Bytes held by the columns for the allocated capacity."""
        return int(self.f32.nbytes + self.f64.nbytes + self.i32.nbytes + self.u16.nbytes)

    def _blank_state(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        s = self.schema
        return (
            s.init32.copy(),
            s.init64.copy(),
            np.full(s.ni, NEVER, dtype=np.int32),
            np.zeros(s.n16, dtype=np.uint16),
        )

    def _grow(self, capacity: int) -> None:
        s = self.schema
        old = self._capacity
        for name, init in (("f32", s.init32), ("f64", s.init64)):
            arr = np.empty((capacity, init.shape[0]), dtype=init.dtype)
            arr[:old] = getattr(self, name)[:old]
            arr[old:] = init
            setattr(self, name, arr)
        i32 = np.full((capacity, s.ni), NEVER, dtype=np.int32)
        i32[:old] = self.i32[:old]
        self.i32 = i32
        u16 = np.zeros((capacity, s.n16), dtype=np.uint16)
        u16[:old] = self.u16[:old]
        self.u16 = u16
        self._capacity = capacity

    def row(self, customer_id: str) -> int:
        """The row of a customer, created empty on first sight."""
        r = self.ids.get(customer_id)
        if r is None:
            r = self.ids.add(customer_id)
            if r >= self._capacity:
                self._grow(self._capacity * 2)
        return r

    def export(self) -> tuple[bytes, np.ndarray, dict[str, np.ndarray]]:
        """A copy of the state for a snapshot: the ids (UTF-8 back to back, and where each
        ends) and their rows of every matrix, in row order; erased customers left out."""
        n = self.ids.rows
        live = self.ids.live_rows()
        blob, ends = self.ids.buffers()

        def rows(m: np.ndarray) -> np.ndarray:
            return _copy(m[:n]) if live is None else m[live]

        return (
            blob,
            ends,
            {name: rows(getattr(self, name)) for name in ("f32", "f64", "i32", "u16")},
        )

    def erase(self, customer_id: str) -> bool:
        """Forget a customer: the id out of the index, the row blanked (it is never
        reused, and snapshots leave it out). False if the customer was not known."""
        r = self.ids.remove(customer_id)
        if r is None:
            return False
        f32, f64, i32, u16 = self._blank_state()
        self.f32[r], self.f64[r], self.i32[r], self.u16[r] = f32, f64, i32, u16
        return True

    def load(self, blob: bytes, ends: np.ndarray, matrices: dict[str, np.ndarray]) -> None:
        """Replace the state with exported rows (an empty store's, from a snapshot)."""
        if len(self.ids):
            raise RuntimeError("load() needs an empty store")
        n = len(ends)
        for name, arr in matrices.items():
            want = getattr(self, name).shape[1]
            if arr.shape != (n, want):
                raise ValueError(f"snapshot {name}: shape {arr.shape}, expected ({n}, {want})")
        self.ids = IdIndex.from_buffers(blob, ends)
        if n > self._capacity:  # room to grow: the next doubling is a long copy
            self._grow(max(n + n // 4, 2 * self._capacity))
        for name, arr in matrices.items():
            getattr(self, name)[:n] = arr

    def apply(self, event: Event) -> None:
        """Apply one (already checked) event to its customer's profile."""
        s = self.schema
        r = self.row(event.customer_id)
        if event.type == PROFILE_UPDATE:
            for name, value in event.properties.items():
                self.f32[r, s.attr_col[name]] = s.attribute_code(name, value)
        elif event.type == CONSENT:
            for ch, granted in event.properties.items():
                self.f32[r, s.consent_col[ch]] = math.nan if granted is None else float(granted)
        for agg in s.by_event.get(event.type, ()):
            self._apply_agg(r, agg, event)

    def apply_many(self, events: Iterable[Event], now: float | None = None) -> int:
        """Check every event first, then apply them all: a batch is never half-applied."""
        batch = list(events)
        for e in batch:
            self.schema.check_event(e, now)
        for e in batch:
            self.apply(e)
        return len(batch)

    def _apply_agg(self, r: int, agg: Agg, event: Event) -> None:
        spec = agg.spec
        props = event.properties
        if spec.where and any(props.get(k) != v for k, v in spec.where.items()):
            return
        v = 1.0
        if spec.property is not None:
            num = _number(props.get(spec.property))
            if num is None:
                return  # the property is missing or not a number: nothing to aggregate
            v = num
        t = event.ts
        kind = spec.kind
        f32, f64 = self.f32, self.f64
        if kind == "time_since":
            prev = f64[r, agg.ts_col]
            if not prev >= t:
                f64[r, agg.ts_col] = t
        elif kind == "decayed_count":
            prev_t = f64[r, agg.ts_col]
            hl = spec.half_life or 1.0
            if prev_t == -math.inf:
                f32[r, agg.col], f64[r, agg.ts_col] = 1.0, t
            elif t >= prev_t:
                f32[r, agg.col] = f32[r, agg.col] * 2.0 ** (-(t - prev_t) / hl) + 1.0
                f64[r, agg.ts_col] = t
            else:
                f32[r, agg.col] += 2.0 ** (-(prev_t - t) / hl)
        elif kind == "last":
            if not f64[r, agg.ts_col] > t:
                f32[r, agg.col], f64[r, agg.ts_col] = v, t
        elif agg.ep_col < 0:
            cur = f32[r, agg.col]
            if kind == "count":
                f32[r, agg.col] = cur + 1.0
            elif kind == "sum":
                f32[r, agg.col] = cur + v
            elif kind == "min":
                f32[r, agg.col] = v if not cur <= v else cur
            else:
                f32[r, agg.col] = v if not cur >= v else cur
        else:
            self._apply_window(r, agg, t, v)

    def _apply_window(self, r: int, agg: Agg, t: float, v: float) -> None:
        b = agg.spec.buckets
        e = int(t // agg.width)
        last = int(self.i32[r, agg.ep_col])
        if e > last:
            self._advance(r, agg.ep_col, last, e)
        elif last - e >= b:
            return  # older than the window: only all-time aggregates keep it
        kind = agg.spec.kind
        c = agg.col + e % b
        if kind == "count":
            if self.u16[r, c] < U16_MAX:
                self.u16[r, c] += 1
            return
        cur = self.f32[r, c]
        if kind == "sum":
            self.f32[r, c] = cur + v
        elif kind == "min":
            self.f32[r, c] = min(cur, v)
        else:
            self.f32[r, c] = max(cur, v)

    def _advance(self, r: int, ep_col: int, last: int, e: int) -> None:
        """Move a clock on from epoch `last` to `e`: empty the buckets of epochs
        last+1 .. e in every window of that bucket width."""
        advance_row(self.schema.clocks[ep_col], self.f32[r], self.u16[r], last, e)
        self.i32[r, ep_col] = e

    def take(self, customer_id: str) -> RowState | None:
        """A copy of a customer's state (for a merge), or None if unknown."""
        r = self.ids.get(customer_id)
        if r is None:
            return None
        return RowState(
            self.f32[r].copy(), self.f64[r].copy(), self.i32[r].copy(), self.u16[r].copy()
        )

    def merge(self, customer_id: str, other: RowState) -> None:
        """Fold another profile of the same person into this customer's (see
        decisioning/profile/merge.py)."""
        r = self.row(customer_id)
        merge_into(self.schema, RowState(self.f32[r], self.f64[r], self.i32[r], self.u16[r]), other)

    def features(self, customer_id: str, now: float) -> np.ndarray:
        """The profile feature vector (float64, schema order) as of `now`."""
        r = self.ids.get(customer_id)
        if r is None:
            return self.empty_features.copy()
        return self._read((self.f32[r], self.f64[r], self.i32[r], self.u16[r]), now)

    def _read(
        self, state: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], now: float
    ) -> np.ndarray:
        s = self.schema
        f32, f64, i32, u16 = state
        out = np.empty(len(s.feature_names), dtype=np.float64)
        out[s.simple_feat] = f32[s.simple_col]
        if s.ts_feat.size:
            out[s.ts_feat] = np.maximum(now - f64[s.ts_col], 0.0)
        if s.wl_feat.size:
            fresh = (now - f64[s.wl_ts]) < s.wl_window
            out[s.wl_feat] = np.where(fresh, f32[s.wl_col], np.nan)
        if s.dc_feat.size:
            age = np.minimum(f64[s.dc_ts] - now, 0.0)  # -inf if never: decays to 0
            out[s.dc_feat] = f32[s.dc_col] * np.exp2(age * s.dc_inv_hl)
        if s.windows is not None:
            out[s.windows.features] = read_windows(s.windows, f32, u16, i32, now)
        return out

    def profile_view(self, customer_id: str, now: float) -> dict[str, Any]:
        """Attributes, aggregates and consent of a customer, decoded for people."""
        s = self.schema
        vec = self.features(customer_id, now)
        attrs: dict[str, Any] = {}
        aggs: dict[str, Any] = {}
        consent: dict[str, bool | None] = {}
        for i, name in enumerate(s.feature_names):
            v = float(vec[i])
            # state is float32: show the 7 significant digits it really holds
            value: Any = None if math.isnan(v) else float(f"{v:.7g}")
            if name in s.attr_col:
                vocab = s.categories.get(name)
                attrs[name] = vocab[int(v)] if vocab and value is not None else value
            elif name.startswith("consent_"):
                consent[name[len("consent_") :]] = None if value is None else v > 0.5
            else:
                aggs[name] = value
        return {
            "customer_id": customer_id,
            "known": customer_id in self.ids,
            "attributes": attrs,
            "aggregates": aggs,
            "consent": consent,
        }
