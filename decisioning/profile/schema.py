"""The profile schema: the feature names a config defines and the column layout of the
state behind them, and the checks an event must pass before it is applied.

A shard keeps four matrices indexed by a customer's row: float32 values (attributes,
consent, aggregates, sum/min/max window buckets), uint16 count-window buckets, float64
timestamps and int32 bucket epochs. The columns are allocated in config order
(attributes, aggregates, consent): snapshots hold these matrices as they are, so the
order is part of the snapshot format (`layout_key` changes with the profile config).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from decisioning.config import AggregateSpec, AttributeSpec, Config
from decisioning.errors import InvalidInput
from decisioning.profile.events import CONSENT, PROFILE_UPDATE, Event
from decisioning.profile.windows import CLEAR, Clock, Windows, clocks_of, windows_of

__all__ = ["LAYOUT", "Agg", "ProfileSchema"]

LAYOUT = 2  # of the columns behind a profile schema (2: every `last` keeps its ts)


@dataclass(frozen=True, slots=True)
class Agg:
    """Where one aggregate lives: its feature position and its state columns."""

    spec: AggregateSpec
    feature: int  # position in the profile feature vector
    col: int = -1  # float32 value column, or first bucket (uint16 for a count window)
    ts_col: int = -1  # float64 timestamp column
    ep_col: int = -1  # int32 epoch column shared by the windows of this bucket width
    width: float = 0.0  # bucket width in seconds (windowed)


class _Columns:
    """Allocates state columns one after another, with each one's initial value."""

    def __init__(self) -> None:
        self.init32: list[float] = []
        self.init64: list[float] = []
        self.n16 = 0
        self.epoch_of: dict[float, int] = {}  # bucket width -> its epoch column

    def f32(self, value: float) -> int:
        self.init32.append(value)
        return len(self.init32) - 1

    def f64(self, value: float = math.nan) -> int:
        self.init64.append(value)
        return len(self.init64) - 1

    def u16(self, n: int) -> int:
        self.n16 += n
        return self.n16 - n

    def epoch(self, width: float) -> int:
        return self.epoch_of.setdefault(width, len(self.epoch_of))


def _layout_key(config: Config) -> str:
    """What a snapshot's columns mean: same attributes, aggregates and channels."""
    p = config.profile
    layout = json.dumps(
        [LAYOUT, config.channels, p.model_dump(mode="json", exclude={"max_future", "max_age"})],
        sort_keys=True,
    )
    return hashlib.sha256(layout.encode()).hexdigest()[:16]


def _aggregate(spec: AggregateSpec, pos: int, cols: _Columns) -> tuple[Agg, bool]:
    """Allocate one aggregate's columns; True if its feature is its float32 column as is."""
    if spec.kind == "time_since":
        return Agg(spec, pos, ts_col=cols.f64()), False
    if spec.kind == "decayed_count":
        # "never" is -inf, so a read decays it to 0 with no special case
        return Agg(spec, pos, col=cols.f32(0.0), ts_col=cols.f64(-math.inf)), False
    if spec.kind == "last":  # the value of the latest event (by its ts)
        return Agg(spec, pos, col=cols.f32(math.nan), ts_col=cols.f64()), spec.window is None
    if spec.window is None:
        col = cols.f32(0.0 if spec.kind in ("count", "sum") else math.nan)
        return Agg(spec, pos, col=col), True
    width = spec.window / spec.buckets
    if width < 1.0:
        raise ValueError(f"{spec.name}: window/buckets must be at least 1s")
    ep = cols.epoch(width)
    if spec.kind == "count":
        first = cols.u16(spec.buckets)
    else:
        first = len(cols.init32)
        for _ in range(spec.buckets):
            cols.f32(CLEAR[spec.kind])
    return Agg(spec, pos, col=first, ep_col=ep, width=width), False


class ProfileSchema:
    """The profile's feature names and the column layout behind them, built from config."""

    def __init__(self, config: Config) -> None:
        p = config.profile
        self.channels = list(config.channels)
        self.max_future = p.max_future
        self.max_age = p.max_age
        self.layout_key = _layout_key(config)
        cols = _Columns()
        self.feature_names: list[str] = []
        self._simple: list[tuple[int, int]] = []  # (feature, float32 column) read as is
        self._lay_out_attributes(p.attributes, cols)
        self.aggs: list[Agg] = []
        for spec in p.aggregates:
            agg, simple = _aggregate(spec, self._feature(spec.name), cols)
            self.aggs.append(agg)
            if simple:
                self._simple.append((agg.feature, agg.col))
        self.consent_col: dict[str, int] = {}
        for ch in self.channels:
            self.consent_col[ch] = col = cols.f32(math.nan)
            self._simple.append((self._feature(f"consent_{ch}"), col))
        self._finish(cols)

    def _feature(self, name: str) -> int:
        self.feature_names.append(name)
        return len(self.feature_names) - 1

    def _lay_out_attributes(self, attributes: list[AttributeSpec], cols: _Columns) -> None:
        self.categories: dict[str, tuple[str, ...]] = {}
        self.attr_col: dict[str, int] = {}
        self.attr_values: dict[str, dict[str, int]] = {}
        for a in attributes:
            col = cols.f32(math.nan)
            self.attr_col[a.name] = col
            if a.values is not None:
                self.categories[a.name] = tuple(a.values)
                self.attr_values[a.name] = {v: i for i, v in enumerate(a.values)}
            self._simple.append((self._feature(a.name), col))

    def _finish(self, cols: _Columns) -> None:
        names = self.feature_names
        self.index = {n: i for i, n in enumerate(names)}
        simple_feat = [f for f, _ in self._simple]
        # features read as a float32 number; the others are computed in float64 at read
        # time (time_since, decayed_count) or are sums of uint16 counts (windowed counts)
        self.float32_features = frozenset(
            names[a.feature]
            for a in self.aggs
            if a.spec.kind not in ("time_since", "decayed_count")
            and not (a.spec.kind == "count" and a.spec.window is not None)
        ) | {names[i] for i in simple_feat}
        self.n32, self.n64 = len(cols.init32), len(cols.init64)
        self.ni, self.n16 = len(cols.epoch_of), cols.n16
        self.init32 = np.array(cols.init32, dtype=np.float32)
        self.init64 = np.array(cols.init64, dtype=np.float64)
        self.simple_feat = np.array(simple_feat, dtype=np.intp)
        self.simple_col = np.array([c for _, c in self._simple], dtype=np.intp)
        self.by_event: dict[str, list[Agg]] = {}
        for agg in self.aggs:
            self.by_event.setdefault(agg.spec.event, []).append(agg)
        self._build_readers()

    def _build_readers(self) -> None:
        """Index arrays that read each kind of computed feature in one numpy call."""
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
        self.clocks: dict[int, Clock] = clocks_of(self.aggs)
        self.windows: Windows | None = windows_of(self.aggs)

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
                self.attribute_code(name, value)
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

    def attribute_code(self, name: str, value: Any) -> float:
        """The float32 code of an attribute value (categories by position, null NaN)."""
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
