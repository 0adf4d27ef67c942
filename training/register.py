"""Bring your own model: a LightGBM text model trained elsewhere becomes a version.

Its feature names must each resolve to a feature the shards build (profile attributes
and aggregates, action_*, channel, context_*), directly or through a feature map:

    features: {their_name: our_name, ...}      # renames; unmapped names stay as they are
    categories: {our_name: [v0, v1, ...]}      # categorical codes, in the model's order
                                               # (default: nextbest's own vocabularies)

Otherwise it is refused with every missing name listed. The renamed model is stored as
LightGBM text with its own sha256 (never pickle), signed when the signing key is set.

A shard serves profile features it holds in float32 rounded to float32; a model fitted
on their float64 values can split between the two and score a customer differently
from what it was validated on. Given a check table (rows as the model was fitted on),
the model scores it as given and as served (`FeaturePlan.as_served`), and is refused
when any row differs.
"""

from __future__ import annotations

import getpass
import os
import re
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pyarrow as pa
import yaml

from decisioning.config import Config, Secrets
from decisioning.errors import ModelError
from decisioning.policy.catalog import Catalog
from decisioning.policy.features import FeaturePlan, default_vocabularies
from decisioning.policy.scoring import ModelBundle, ModelManifest, sha256_text, sign
from decisioning.profile import ProfileSchema
from decisioning.stores.registry import Registry
from training.train import TrainingError, table_matrix

__all__ = ["register_external"]

_FEATURE_NAMES = re.compile(r"^feature_names=(.*)$", re.MULTILINE)


def _read_map(path: Path | None) -> tuple[dict[str, str], dict[str, list[str]]]:
    if path is None:
        return {}, {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise TrainingError(f"feature map {path}: {e}") from None
    if not isinstance(data, dict) or set(data) - {"features", "categories"}:
        raise TrainingError(f"feature map {path}: only 'features' and 'categories' are allowed")
    features = data.get("features") or {}
    categories = data.get("categories") or {}
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in features.items()):
        raise TrainingError(f"feature map {path}: features maps names to names")
    if not all(isinstance(v, list) for v in categories.values()):
        raise TrainingError(f"feature map {path}: categories maps a feature to a list of values")
    return features, {k: [str(x) for x in v] for k, v in categories.items()}


def register_external(
    model_file: Path,
    config: Config,
    name: str,
    feature_map: Path | None = None,
    check_table: pa.Table | None = None,
) -> ModelManifest:
    """Check and store `model_file` as the next version of `name`; returns its manifest.
    With `check_table`, it must score every row of it as served as it does as given."""
    try:
        text = model_file.read_text()
        booster = lgb.Booster(model_str=text)
    except (OSError, UnicodeDecodeError) as e:
        raise TrainingError(f"cannot read {model_file}: {e}") from None
    except lgb.basic.LightGBMError as e:
        raise TrainingError(f"{model_file} is not a LightGBM text model: {e}") from None
    renames, categories_in = _read_map(feature_map)
    theirs = booster.feature_name()
    unknown = sorted(set(renames) - set(theirs))
    if unknown:
        raise TrainingError(f"the feature map renames names the model lacks: {', '.join(unknown)}")
    ours = [renames.get(f, f) for f in theirs]
    schema = ProfileSchema(config)
    vocab = default_vocabularies(config, schema)
    categories = {f: categories_in.get(f, vocab.get(f, [])) for f in ours}
    categories = {f: v for f, v in categories.items() if f in vocab or f in categories_in}
    try:
        plan = FeaturePlan.build(name, ours, categories, config, schema, Catalog(config, schema))
    except ModelError as e:
        raise TrainingError(f"refused: {e}") from None
    checked: dict[str, Any] = {}
    if check_table is not None:
        rows = _check_as_served(booster, check_table, theirs, ours, categories, plan)
        checked = {"checked_rows": rows}
    if ours != theirs:
        match = _FEATURE_NAMES.search(text)
        if match is None:
            raise TrainingError(f"{model_file}: no feature_names line to rename")
        text = text[: match.start(1)] + " ".join(ours) + text[match.end(1) :]
    registry = Registry(config.server.data_dir)
    manifest = ModelManifest(
        name=name,
        version=registry.next_version(name),
        features=ours,
        sha256=sha256_text(text),
        categories=categories,
        metrics={},
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        created_by=f"{getpass.getuser()}@{socket.gethostname()}",
        training={**_provenance(model_file, theirs, ours, booster), **checked},
    )
    key = Secrets.resolve(config, os.environ).model_key()
    if key is not None:
        manifest = sign(manifest, key)
    bundle = ModelBundle.verified(manifest, text)
    if lgb.Booster(model_str=text).feature_name() != ours:  # the rename took
        raise TrainingError(f"{model_file}: renaming the features failed")
    return registry.register(bundle)


def _provenance(path: Path, theirs: list[str], ours: list[str], b: lgb.Booster) -> dict[str, Any]:
    renamed = {t: o for t, o in zip(theirs, ours, strict=True) if t != o}
    return {"source": "external", "file": str(path), "renamed": renamed, "trees": b.num_trees()}


def _check_as_served(
    booster: lgb.Booster,
    table: pa.Table,
    theirs: list[str],
    ours: list[str],
    categories: dict[str, list[str]],
    plan: FeaturePlan,
) -> int:
    """Score `table` (columns by the model's names or ours; categorical ones as strings or
    codes) as given and as a shard serves it; refuse the model if any row differs."""
    cols: dict[str, pa.ChunkedArray] = {}
    for t, o in zip(theirs, ours, strict=True):
        src = t if t in table.column_names else o
        if src not in table.column_names:
            raise TrainingError(f"the check table has no column {t!r}")
        cols[o] = table.column(src)
    given = table_matrix(pa.table(cols), ours, categories, codes=True)
    served = plan.as_served(given)
    scores = [
        np.asarray(booster.predict(x, num_threads=1), dtype=np.float64) for x in (given, served)
    ]
    diff = np.abs(scores[0] - scores[1])
    bad = int(np.count_nonzero(diff))  # the same tree paths give the very same score
    if bad:
        rounded = [
            ours[j]
            for j in plan.float32_cols
            if not np.array_equal(given[:, j], served[:, j], equal_nan=True)
        ]
        raise TrainingError(
            f"refused: {bad} of {len(diff)} rows of the check table score differently as "
            f"served, by up to {diff.max():.3g}: the shards hold {', '.join(rounded)} in "
            "float32, and the model was fitted on float64 values between them. Cast those "
            "columns to float32 before fitting (nextbest train does)."
        )
    return len(diff)
