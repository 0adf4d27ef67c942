"""Live customer profiles as preallocated numeric columns, and `apply(event)`.

A shard keeps four matrices indexed by a customer's row: float32 values (attributes,
consent, aggregates, sum/min/max window buckets), uint16 count-window buckets, float64
timestamps and int32 bucket epochs; an IdIndex maps customer ids to rows. The profile
*features* (attributes, aggregates, consent_<channel>) are derived from that state at
read time for a given `now`, so windows expire as time passes without any background
work.

Windowed aggregates keep `buckets` buckets of width window/buckets in a ring; an event
lands in the bucket of its own timestamp, and a read at `now` sums (or mins/maxes) the
buckets whose time range is within (now - window, now], at bucket granularity. Events
older than the window are still counted by all-time aggregates. Every window with the
same bucket width shares one epoch (the newest bucket) per customer: moving it on clears
the expired buckets of all of them, which is what time does to each anyway. A count
bucket saturates at 65,535 events (one customer, one event type, one bucket).
"""

from __future__ import annotations

import hashlib
import json
import math
import mmap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from decisioning.config import AggregateSpec, Config
from decisioning.errors import InvalidInput
from decisioning.profile.ids import IdIndex

__all__ = ["CONSENT", "PROFILE_UPDATE", "Event", "ProfileSchema", "ProfileStore", "event_from_wire"]

PROFILE_UPDATE = "profile_update"
CONSENT = "consent"
_NEVER = np.iinfo(np.int32).min + 1
_U16_MAX = 65535
_CLEAR = {"count": 0.0, "sum": 0.0, "min": math.inf, "max": -math.inf}
LAYOUT = 2  # of the columns behind a profile schema (2: every `last` keeps its ts)


class RowState(NamedTuple):
    """One customer's row of each state matrix (copies)."""

    f32: np.ndarray
    f64: np.ndarray
    i32: np.ndarray
    u16: np.ndarray


def _advance_row(clock: _Clock, f32: np.ndarray, u16: np.ndarray, last: int, e: int) -> None:
    """Empty the buckets of epochs last+1 .. e of one row, for one bucket width."""
    ks = np.arange(max(last + 1, e - clock.max_buckets + 1), e + 1)
    if clock.f32_base.size:
        f32[clock.f32_base[:, None] + ks % clock.f32_b[:, None]] = clock.f32_clear[:, None]
    if clock.u16_base.size:
        u16[clock.u16_base[:, None] + ks % clock.u16_b[:, None]] = 0


@dataclass(frozen=True, slots=True)
class Event:
    """A validated customer event; `ts` is unix seconds."""

    customer_id: str
    type: str
    ts: float
    properties: Mapping[str, Any] = field(default_factory=dict)
    event_id: str | None = None


def event_from_wire(e: Mapping[str, Any]) -> Event:
    """An event from its (already validated) wire dict."""
    return Event(
        customer_id=e["customer_id"],
        type=e["type"],
        ts=e["ts"],
        properties=e.get("properties") or {},
        event_id=e.get("event_id"),
    )


@dataclass(frozen=True, slots=True)
class _Agg:
    spec: AggregateSpec
    feature: int  # position in the profile feature vector
    col: int = -1  # float32 value column, or first bucket (uint16 for a count window)
    ts_col: int = -1  # float64 timestamp column
    ep_col: int = -1  # int32 epoch column shared by the windows of this bucket width
    width: float = 0.0  # bucket width in seconds (windowed)


@dataclass(frozen=True, slots=True)
class _Clock:
    """The windows of one bucket width, whose buckets an epoch advance clears together."""

    f32_base: np.ndarray  # first float32 bucket of each sum/min/max member
    f32_b: np.ndarray  # its bucket count
    f32_clear: np.ndarray  # the value of its empty bucket
    u16_base: np.ndarray  # first uint16 bucket of each count member
    u16_b: np.ndarray
    max_buckets: int


@dataclass(frozen=True, slots=True)
class _Windows:
    """Every windowed count/sum/min/max aggregate, read in one go (numpy calls cost ~1 µs
    each whatever their size, so one read of all windows beats one per bucket count)."""

    max_buckets: int  # W: the most buckets of any member; fewer are padded (never live)
    cols16: np.ndarray  # (c, W) uint16 columns of the c count members (members [0, c))
    cols: np.ndarray  # (n - c, W) float32 columns: sums, then mins, then maxes
    ep_cols: np.ndarray  # (n,) epoch column of each member
    widths: np.ndarray  # (n,) bucket width in seconds
    buckets: np.ndarray  # (n,) bucket count B of each member
    table: np.ndarray  # (n,) which live table a member uses
    live: np.ndarray  # (tables, W, 2W + 1, W) bool: see _live_tables
    features: np.ndarray  # (n,)
    fill: np.ndarray  # (n - c, 1) value of an empty float32 bucket: 0, +inf (min), -inf (max)
    n_count: int  # members [0, c) are counts
    n_sum: int  # members [0, n_sum) are counts or sums
    n_min: int  # members [n_sum, n_sum + n_min) are mins, the rest maxes


def _live_tables(counts: list[int], w: int) -> np.ndarray:
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


class ProfileSchema:
    """The profile's feature names and the column layout behind them, built from config."""

    def __init__(self, config: Config) -> None:
        p = config.profile
        self.channels = list(config.channels)
        self.max_future = p.max_future
        self.max_age = p.max_age
        # what a snapshot's columns mean: same attributes, aggregates and channels
        layout = json.dumps(
            [
                LAYOUT,
                config.channels,
                p.model_dump(mode="json", exclude={"max_future", "max_age"}),
            ],
            sort_keys=True,
        )
        self.layout_key = hashlib.sha256(layout.encode()).hexdigest()[:16]
        names: list[str] = []
        self.categories: dict[str, tuple[str, ...]] = {}
        n32 = n64 = ni = n16 = 0
        clock_of: dict[float, int] = {}  # bucket width -> its epoch column
        self.attr_col: dict[str, int] = {}
        self.attr_values: dict[str, dict[str, int]] = {}
        simple_feat: list[int] = []
        simple_col: list[int] = []
        init32: list[float] = []
        init64: list[float] = []

        def add32(value: float) -> int:
            nonlocal n32
            init32.append(value)
            n32 += 1
            return n32 - 1

        def add64(value: float = math.nan) -> int:
            nonlocal n64
            init64.append(value)
            n64 += 1
            return n64 - 1

        for a in p.attributes:
            col = add32(math.nan)
            self.attr_col[a.name] = col
            if a.values is not None:
                self.categories[a.name] = tuple(a.values)
                self.attr_values[a.name] = {v: i for i, v in enumerate(a.values)}
            simple_feat.append(len(names))
            simple_col.append(col)
            names.append(a.name)

        self.aggs: list[_Agg] = []
        for spec in p.aggregates:
            pos = len(names)
            names.append(spec.name)
            if spec.kind in ("time_since",):
                self.aggs.append(_Agg(spec, pos, ts_col=add64()))
            elif spec.kind == "decayed_count":
                # "never" is -inf, so a read decays it to 0 with no special case
                self.aggs.append(_Agg(spec, pos, col=add32(0.0), ts_col=add64(-math.inf)))
            elif spec.kind == "last":  # the value of the latest event (by its ts)
                self.aggs.append(_Agg(spec, pos, col=add32(math.nan), ts_col=add64()))
                if spec.window is None:
                    simple_feat.append(pos)
                    simple_col.append(self.aggs[-1].col)
            elif spec.window is None:
                col = add32(0.0 if spec.kind in ("count", "sum") else math.nan)
                self.aggs.append(_Agg(spec, pos, col=col))
                simple_feat.append(pos)
                simple_col.append(col)
            else:
                width = spec.window / spec.buckets
                if width < 1.0:
                    raise ValueError(f"{spec.name}: window/buckets must be at least 1s")
                if width not in clock_of:
                    clock_of[width] = ni
                    ni += 1
                if spec.kind == "count":
                    first = n16
                    n16 += spec.buckets
                else:
                    first = n32
                    for _ in range(spec.buckets):
                        add32(_CLEAR[spec.kind])
                self.aggs.append(_Agg(spec, pos, col=first, ep_col=clock_of[width], width=width))

        self.consent_col: dict[str, int] = {}
        for ch in self.channels:
            col = add32(math.nan)
            self.consent_col[ch] = col
            simple_feat.append(len(names))
            simple_col.append(col)
            names.append(f"consent_{ch}")

        self.feature_names = names
        self.index = {n: i for i, n in enumerate(names)}
        # features read as a float32 number; the others are computed in float64 at read
        # time (time_since, decayed_count) or are sums of uint16 counts (windowed counts)
        self.float32_features = frozenset(
            names[a.feature]
            for a in self.aggs
            if a.spec.kind not in ("time_since", "decayed_count")
            and not (a.spec.kind == "count" and a.spec.window is not None)
        ) | {names[i] for i in simple_feat}
        self.n32, self.n64, self.ni, self.n16 = n32, n64, ni, n16
        self.init32 = np.array(init32, dtype=np.float32)
        self.init64 = np.array(init64, dtype=np.float64)
        self.simple_feat = np.array(simple_feat, dtype=np.intp)
        self.simple_col = np.array(simple_col, dtype=np.intp)
        self.by_event: dict[str, list[_Agg]] = {}
        for agg in self.aggs:
            self.by_event.setdefault(agg.spec.event, []).append(agg)
        self._build_readers()

    def _build_readers(self) -> None:
        ts = [a for a in self.aggs if a.spec.kind == "time_since"]
        self.ts_feat = np.array([a.feature for a in ts], dtype=np.intp)
        self.ts_col = np.array([a.ts_col for a in ts], dtype=np.intp)
        wl = [a for a in self.aggs if a.spec.kind == "last" and a.spec.window is not None]
        self.wl_feat = np.array([a.feature for a in wl], dtype=np.intp)
        self.wl_col = np.array([a.col for a in wl], dtype=np.intp)
        self.wl_ts = np.array([a.ts_col for a in wl], dtype=np.intp)
        self.wl_window = np.array([a.spec.window for a in wl], dtype=np.float64)
        dc = [a for a in self.aggs if a.spec.kind == "decayed_count"]
        self.dc_feat = np.array([a.feature for a in dc], dtype=np.intp)
        self.dc_col = np.array([a.col for a in dc], dtype=np.intp)
        self.dc_ts = np.array([a.ts_col for a in dc], dtype=np.intp)
        self.dc_inv_hl = np.array([1.0 / (a.spec.half_life or 1.0) for a in dc])
        order = {"count": 0, "sum": 1, "min": 2, "max": 3}
        members = sorted((a for a in self.aggs if a.ep_col >= 0), key=lambda a: order[a.spec.kind])
        self.clocks: dict[int, _Clock] = {}
        for ep in sorted({a.ep_col for a in members}):
            on = [a for a in members if a.ep_col == ep]
            f32 = [a for a in on if a.spec.kind != "count"]
            u16 = [a for a in on if a.spec.kind == "count"]
            self.clocks[ep] = _Clock(
                f32_base=np.array([a.col for a in f32], dtype=np.intp),
                f32_b=np.array([a.spec.buckets for a in f32], dtype=np.intp),
                f32_clear=np.array([_CLEAR[a.spec.kind] for a in f32], dtype=np.float32),
                u16_base=np.array([a.col for a in u16], dtype=np.intp),
                u16_b=np.array([a.spec.buckets for a in u16], dtype=np.intp),
                max_buckets=max(a.spec.buckets for a in on),
            )
        self.windows: _Windows | None = None
        if members:
            kinds: list[str] = [a.spec.kind for a in members]
            counts = sorted({a.spec.buckets for a in members})
            w = max(counts)
            n_count = kinds.count("count")

            def columns(aggs: list[_Agg]) -> np.ndarray:
                cols = [[a.col + min(k, a.spec.buckets - 1) for k in range(w)] for a in aggs]
                return np.array(cols, dtype=np.intp).reshape(len(aggs), w)

            self.windows = _Windows(
                max_buckets=w,
                cols16=columns(members[:n_count]),
                cols=columns(members[n_count:]),
                ep_cols=np.array([a.ep_col for a in members], dtype=np.intp),
                widths=np.array([a.width for a in members], dtype=np.float64),
                buckets=np.array([a.spec.buckets for a in members], dtype=np.int64),
                table=np.array([counts.index(a.spec.buckets) for a in members], dtype=np.intp),
                live=_live_tables(counts, w),
                features=np.array([a.feature for a in members], dtype=np.intp),
                fill=np.array([_CLEAR[k] for k in kinds[n_count:]], dtype=np.float32).reshape(
                    -1, 1
                ),
                n_count=n_count,
                n_sum=sum(k in ("count", "sum") for k in kinds),
                n_min=kinds.count("min"),
            )

    def check_event(self, event: Event, now: float | None = None) -> None:
        """Refuse an event that cannot be applied, before anything is applied; with `now`,
        also one dated more than `profile.max_future` ahead of it or `profile.max_age`
        before it."""
        if now is not None and event.ts > now + self.max_future:
            raise InvalidInput(
                f"ts is {event.ts - now:.0f}s in the future (at most {self.max_future:.0f}s "
                "of clock skew is accepted)",
                field="ts",
            )
        if now is not None and event.ts < now - self.max_age:
            raise InvalidInput(
                f"ts is {(now - event.ts) / 86400:.0f} days old (at most "
                f"{self.max_age / 86400:.0f} days: profile.max_age)",
                field="ts",
            )
        if event.type == PROFILE_UPDATE:
            for name, value in event.properties.items():
                self._attribute_code(name, value)
        elif event.type == CONSENT:
            for ch, granted in event.properties.items():
                if ch not in self.consent_col:
                    raise InvalidInput(
                        f"unknown channel {ch!r} in consent event (known: "
                        f"{', '.join(self.channels)})",
                        field=f"properties.{ch}",
                        code="unknown_channel",
                    )
                if granted is not None and not isinstance(granted, bool):
                    raise InvalidInput(
                        "consent values must be true, false or null",
                        field=f"properties.{ch}",
                    )

    def category(self, features: np.ndarray, name: str) -> str | None:
        """Categorical attribute `name` as read from a profile feature vector (None if
        unset)."""
        code = float(features[self.feature_names.index(name)])
        return None if math.isnan(code) else self.categories[name][int(code)]

    def _attribute_code(self, name: str, value: Any) -> float:
        if name not in self.attr_col:
            raise InvalidInput(
                f"unknown attribute {name!r}", field=f"properties.{name}", code="unknown_field"
            )
        if value is None:
            return math.nan
        vocab = self.attr_values.get(name)
        if vocab is not None:
            if not isinstance(value, str) or value not in vocab:
                raise InvalidInput(
                    f"{value!r} is not a value of {name} (values: {', '.join(vocab)})",
                    field=f"properties.{name}",
                )
            return float(vocab[value])
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidInput(f"{name} must be a number", field=f"properties.{name}")
        return float(value)


def _number(value: Any) -> float | None:
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
            np.full(s.ni, _NEVER, dtype=np.int32),
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
        i32 = np.full((capacity, s.ni), _NEVER, dtype=np.int32)
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
                self.f32[r, s.attr_col[name]] = s._attribute_code(name, value)
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

    def _apply_agg(self, r: int, agg: _Agg, event: Event) -> None:
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

    def _apply_window(self, r: int, agg: _Agg, t: float, v: float) -> None:
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
            if self.u16[r, c] < _U16_MAX:
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
        _advance_row(self.schema.clocks[ep_col], self.f32[r], self.u16[r], last, e)
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
        """Fold another profile of the same person into this customer's, per kind, as
        if one profile had received both event streams: counts and sums add, min and
        max combine, `last` and time-since take the latest, decayed counts decay to the
        later time and add, windows align their clocks and combine bucket by bucket.
        Attributes stay unless unset here; consent takes the stricter (no, then
        unknown, then yes)."""
        s = self.schema
        r = self.row(customer_id)
        d32, d64, di, d16 = self.f32[r], self.f64[r], self.i32[r], self.u16[r]
        a32, a64, ai, a16 = (x.copy() for x in other)
        for ep, clock in s.clocks.items():  # both windows' clocks to the later epoch
            e = max(int(di[ep]), int(ai[ep]))
            if int(di[ep]) < e:
                self._advance(r, ep, int(di[ep]), e)
            if int(ai[ep]) < e:
                _advance_row(clock, a32, a16, int(ai[ep]), e)
                ai[ep] = e
        for agg in s.aggs:
            kind, c, t = agg.spec.kind, agg.col, agg.ts_col
            if kind == "time_since":
                d64[t] = np.fmax(d64[t], a64[t])
            elif kind == "decayed_count":
                late = max(d64[t], a64[t])
                if late == -math.inf:
                    continue
                hl = agg.spec.half_life or 1.0
                d32[c] = d32[c] * 2.0 ** (-(late - d64[t]) / hl) + a32[c] * 2.0 ** (
                    -(late - a64[t]) / hl
                )
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
                    d16[b] = np.minimum(d16[b].astype(np.int64) + a16[b], _U16_MAX)
                elif kind == "sum":
                    d32[b] += a32[b]
                elif kind == "min":
                    d32[b] = np.minimum(d32[b], a32[b])
                else:
                    d32[b] = np.maximum(d32[b], a32[b])
        for col in s.attr_col.values():
            if math.isnan(d32[col]):
                d32[col] = a32[col]
        for col in s.consent_col.values():
            x, y = d32[col], a32[col]
            d32[col] = (
                0.0 if (x == 0 or y == 0) else (math.nan if math.isnan(x) or math.isnan(y) else 1.0)
            )

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
            out[s.windows.features] = _read_windows(s.windows, f32, u16, i32, now)
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


def _read_windows(
    g: _Windows, f32: np.ndarray, u16: np.ndarray, i32: np.ndarray, now: float
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
