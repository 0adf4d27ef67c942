"""The one feature function: profile + action + context -> a model's feature matrix.

Feature names a model may use:
  <attribute>, <aggregate>, consent_<channel>     from the live profile
  action_id, action_group (categorical), action_value, action_lever
  channel (categorical)
  context_<name>                                  declared context fields
Categorical features are integer codes into the vocabulary in the model's manifest, so a
model keeps its own encoding even when the catalog or config order changes.

A shard holds profile values in float32, so a model is served 85.4000015 for an
attribute of 85.4. A model fitted on the float64 85.4 can split between the two (a
threshold of 85.40000000000002) and take the other branch when served; so every
training matrix goes through `FeaturePlan.as_served`, which rounds exactly the columns
the shard holds in float32, and the model is fitted on what it will be served.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from decisioning.config import Config, ContextFieldSpec
from decisioning.errors import ModelIncompatible
from decisioning.policy.catalog import Action, Catalog
from decisioning.profile import ProfileSchema

__all__ = ["FeaturePlan", "default_vocabularies", "encode"]


def encode(values: Sequence[Any], vocab: Sequence[str]) -> np.ndarray:
    """Strings -> float codes into `vocab`; unknown or missing -> NaN."""
    index = {v: float(i) for i, v in enumerate(vocab)}
    return np.array([index.get(v, math.nan) for v in values], dtype=np.float64)


def default_vocabularies(config: Config, schema: ProfileSchema) -> dict[str, list[str]]:
    """The categorical vocabularies nextbest's own training writes into a manifest."""
    vocab: dict[str, list[str]] = {k: list(v) for k, v in schema.categories.items()}
    vocab["action_id"] = [a.id for a in config.actions]
    vocab["action_group"] = sorted({a.group for a in config.actions})
    vocab["channel"] = list(config.channels)
    for c in config.context:
        if c.values:
            vocab[f"context_{c.name}"] = list(c.values)
    return vocab


def _remap(source: Sequence[str], target: Sequence[str]) -> np.ndarray:
    """A lookup table from codes of `source` to codes of `target` (NaN if absent)."""
    return encode(list(source), target)


@dataclass(frozen=True, slots=True)
class FeaturePlan:
    """How to fill each column of one model's feature matrix."""

    names: tuple[str, ...]
    prof_pos: np.ndarray
    prof_idx: np.ndarray
    prof_remaps: tuple[tuple[int, np.ndarray], ...]  # (column, lookup) for categoricals
    action_cols: tuple[tuple[int, np.ndarray], ...]  # (column, per-action code/lever)
    value_col: int
    channel_col: int
    channel_codes: Mapping[str, float]
    ctx_cols: tuple[tuple[int, str, Mapping[str, float] | None], ...]
    categorical: tuple[int, ...]
    float32_cols: np.ndarray  # numeric profile features the shard holds in float32

    @classmethod
    def build(
        cls,
        model: str,
        names: Sequence[str],
        categories: Mapping[str, Sequence[str]],
        config: Config,
        schema: ProfileSchema,
        catalog: Catalog,
    ) -> FeaturePlan:
        """Resolve every feature name, or refuse the model listing what is missing."""
        ctx_fields = {f"context_{c.name}": c for c in config.context}
        b = _Builder(categories)
        for col, name in enumerate(names):
            if name in schema.index:
                b.profile(col, name, schema)
            elif name in ("action_id", "action_group", "action_lever"):
                b.action(col, name, catalog)
            elif name == "action_value":
                b.value_col = col
            elif name == "channel":
                b.channel(col)
            elif name in ctx_fields:
                b.context(col, name, ctx_fields[name])
            else:
                b.missing.append(name)
        if b.missing:
            raise ModelIncompatible(model, b.missing)
        return cls(
            names=tuple(names),
            prof_pos=np.array(b.prof_pos, dtype=np.intp),
            prof_idx=np.array(b.prof_idx, dtype=np.intp),
            prof_remaps=tuple(b.remaps),
            action_cols=tuple(b.action_cols),
            value_col=b.value_col,
            channel_col=b.channel_col,
            channel_codes=b.channel_codes,
            ctx_cols=tuple(b.ctx_cols),
            categorical=tuple(b.categorical),
            float32_cols=np.array(b.float32_cols, dtype=np.intp),
        )

    def as_served(self, x: np.ndarray) -> np.ndarray:
        """A copy of feature matrix `x` (model column order) holding each value exactly as
        a shard would score it: the profile features it keeps in float32 rounded to
        float32. Training fits on this, so a split cannot fall between the two."""
        out = np.array(x, dtype=np.float64)
        cols = self.float32_cols
        with np.errstate(over="ignore"):  # beyond float32's range the shard holds inf too
            out[:, cols] = out[:, cols].astype(np.float32)
        return out

    def matrix(
        self,
        profile: np.ndarray,
        actions: Sequence[Action],
        values: Sequence[float],
        channel: str,
        context: Mapping[str, Any],
    ) -> np.ndarray:
        """The feature matrix: one row per candidate action, columns in model order."""
        k = len(actions)
        x = np.empty((k, len(self.names)), dtype=np.float64)
        row = np.empty(len(self.names), dtype=np.float64)
        row[self.prof_pos] = profile[self.prof_idx]
        for col, lookup in self.prof_remaps:
            code = row[col]
            row[col] = math.nan if code != code else lookup[int(code)]
        if self.channel_col >= 0:
            row[self.channel_col] = self.channel_codes.get(channel, math.nan)
        for col, key, vocab in self.ctx_cols:
            row[col] = _context_value(context.get(key), vocab)
        x[:] = row
        if self.action_cols:
            idx = np.fromiter((a.index for a in actions), dtype=np.intp, count=k)
            for col, per_action in self.action_cols:
                x[:, col] = per_action[idx]
        if self.value_col >= 0:
            x[:, self.value_col] = values
        return x


class _Builder:
    """The columns of a plan as `FeaturePlan.build` resolves them, one feature at a time,
    and the names it cannot build."""

    def __init__(self, categories: Mapping[str, Sequence[str]]) -> None:
        self.categories = categories
        self.prof_pos: list[int] = []
        self.prof_idx: list[int] = []
        self.remaps: list[tuple[int, np.ndarray]] = []
        self.action_cols: list[tuple[int, np.ndarray]] = []
        self.ctx_cols: list[tuple[int, str, Mapping[str, float] | None]] = []
        self.value_col = self.channel_col = -1
        self.channel_codes: dict[str, float] = {}
        self.missing: list[str] = []
        self.categorical: list[int] = []
        self.float32_cols: list[int] = []

    def vocab(self, col: int, name: str) -> Sequence[str] | None:
        """A categorical feature's vocabulary in the manifest (None: missing, noted)."""
        self.categorical.append(col)
        v = self.categories.get(name)
        if v is None:
            self.missing.append(f"{name} (categorical, but the manifest has no vocabulary)")
        return v

    def profile(self, col: int, name: str, schema: ProfileSchema) -> None:
        """A profile column; a categorical one remapped from the config's codes to the
        model's, a numeric one the shard holds in float32 noted for `as_served`."""
        self.prof_pos.append(col)
        self.prof_idx.append(schema.index[name])
        if name in schema.categories:
            vocab = self.vocab(col, name)
            if vocab is not None:
                self.remaps.append((col, _remap(schema.categories[name], vocab)))
        elif name in schema.float32_features:
            self.float32_cols.append(col)

    def action(self, col: int, name: str, catalog: Catalog) -> None:
        """A per-action column: the action's id or group code, or its lever."""
        if name == "action_lever":
            self.action_cols.append((col, np.array([a.lever for a in catalog.actions])))
            return
        vocab = self.vocab(col, name)
        if vocab is not None:
            keys = [a.id if name == "action_id" else a.group for a in catalog.actions]
            self.action_cols.append((col, encode(keys, vocab)))

    def channel(self, col: int) -> None:
        vocab = self.vocab(col, "channel")
        if vocab is not None:
            self.channel_col = col
            self.channel_codes = {v: float(i) for i, v in enumerate(vocab)}

    def context(self, col: int, name: str, spec: ContextFieldSpec) -> None:
        """A request context field: its code in the vocabulary, or its number."""
        if spec.type != "categorical":
            self.ctx_cols.append((col, spec.name, None))
            return
        vocab = self.vocab(col, name)
        if vocab is not None:
            self.ctx_cols.append((col, spec.name, {v: float(i) for i, v in enumerate(vocab)}))


def _context_value(v: Any, vocab: Mapping[str, float] | None) -> float:
    if vocab is not None:
        return vocab.get(v, math.nan) if isinstance(v, str) else math.nan
    if isinstance(v, bool) or not isinstance(v, int | float):
        return math.nan
    return float(v)
