"""`nextbest train`: a Parquet/CSV table -> a LightGBM model version with a manifest.

The table has a label column (0/1) and feature columns named like the features the
shards build (profile features, action_id, action_group, action_value, action_lever,
channel, context_<name>); other columns (ids, timestamps) are ignored and listed.
Categorical columns hold the category strings; they are encoded with the same
vocabularies the shards use, and the vocabularies go into the manifest. Profile features
the shards hold in float32 are rounded to float32 before fitting (`FeaturePlan.as_served`),
so the model is fitted, validated and compared on the values it will be served.
"""

from __future__ import annotations

import getpass
import math
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from decisioning.config import Config, Secrets
from decisioning.errors import NextbestError
from decisioning.policy.catalog import Catalog
from decisioning.policy.features import FeaturePlan, default_vocabularies, encode
from decisioning.policy.scoring import (
    ModelBundle,
    ModelManifest,
    sha256_text,
    sign,
    write_model_dir,
)
from decisioning.profile import ProfileSchema
from decisioning.stores.registry import Registry
from training.holdout import HeldOut, evaluate_held_out
from training.report import Curve, render

__all__ = ["REPORT_FILE", "TrainResult", "TrainingError", "read_table", "table_matrix", "train"]

REPORT_FILE = "report.html"

DEFAULT_PARAMS: dict[str, Any] = {
    "objective": "binary",
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_data_in_leaf": 20,
    "feature_fraction": 0.9,
    "bagging_fraction": 0.9,
    "bagging_freq": 1,
    "verbose": -1,
    "num_threads": 2,
    "seed": 7,
}


class TrainingError(NextbestError):
    """The table cannot be trained on; the message says why."""


@dataclass(frozen=True, slots=True)
class TrainResult:
    manifest: ModelManifest
    path: str


def read_table(path: str | Path) -> pa.Table:
    p = str(path)
    try:
        if p.endswith(".csv"):
            return pacsv.read_csv(p)
        return pq.read_table(p)
    except (OSError, pa.ArrowInvalid) as e:
        raise TrainingError(f"cannot read {p}: {e}") from None


def table_matrix(
    table: pa.Table,
    features: list[str],
    categories: dict[str, list[str]],
    codes: bool = False,
) -> np.ndarray:
    """The table's feature columns as a float64 matrix, values as given (a model is fitted
    on `FeaturePlan.as_served` of it). Categorical columns hold strings, encoded with
    `categories`; with `codes`, a numeric one is taken as codes already."""
    x = np.empty((table.num_rows, len(features)), dtype=np.float64)
    for j, f in enumerate(features):
        col = table.column(f)
        numeric = (
            pa.types.is_integer(col.type)
            or pa.types.is_floating(col.type)
            or pa.types.is_boolean(col.type)
            or pa.types.is_null(col.type)
        )
        if f in categories and not (codes and numeric):
            if not pa.types.is_string(col.type) and not pa.types.is_large_string(col.type):
                raise TrainingError(f"column {f} is categorical: it must hold strings")
            x[:, j] = encode(col.to_pylist(), categories[f])
        elif not numeric:
            raise TrainingError(f"column {f} must be numeric, not {col.type}")
        else:
            x[:, j] = col.cast(pa.float64()).fill_null(math.nan).to_numpy()
    return x


def _candidate_features(config: Config, schema: ProfileSchema) -> set[str]:
    names = set(schema.feature_names)
    names |= {"action_id", "action_group", "action_value", "action_lever", "channel"}
    names |= {f"context_{c.name}" for c in config.context}
    return names


@dataclass(frozen=True, slots=True)
class _Features:
    """The features a model is fitted on, their vocabularies, and the plan a shard
    builds them with."""

    names: list[str]
    categories: dict[str, list[str]]
    plan: FeaturePlan


@dataclass(frozen=True, slots=True)
class _Split:
    """The rows fitted on and the rows held out (indices), and how they were chosen."""

    train: np.ndarray
    valid: np.ndarray
    how: str  # "time" or "random"


def train(
    table: pa.Table,
    config: Config,
    *,
    name: str = "propensity",
    label: str = "label",
    features: list[str] | None = None,
    rounds: int = 200,
    params: dict[str, Any] | None = None,
    out_dir: str | None = None,
    valid_fraction: float = 0.2,
    seed: int = 7,
    progress: Callable[[str], None] = print,
    training_info: dict[str, Any] | None = None,
    workers: int | None = None,
    cpus_per_worker: float = 1.0,
) -> TrainResult:
    """Train, evaluate on a held-out split, write the version to the registry (or out_dir).
    With `workers`, Ray Train's LightGBMTrainer fits the model (Ray must be running)."""
    chosen = _choose_features(table, config, name, label, features, progress)
    # fitted, validated and compared on exactly the values a shard will score
    x = chosen.plan.as_served(table_matrix(table, chosen.names, chosen.categories))
    y = _labels(table, label)
    split = _split(table, valid_fraction, seed)
    p = {**DEFAULT_PARAMS, "seed": seed, **(params or {})}
    progress(
        f"training {name}: {len(split.train)} rows, {len(chosen.names)} features, "
        f"{len(split.valid)} held out ({split.how} split), up to {rounds} rounds"
    )
    booster = _fit(x, y, split, chosen, p, rounds, progress, config, workers, cpus_per_worker)
    registry = Registry(config.server.data_dir)
    held_out = evaluate_held_out(
        booster,
        x[split.valid],
        y[split.valid],
        len(split.train),
        chosen.names,
        chosen.categories,
        registry,
        name,
        progress,
    )
    setup = {
        "label": label,
        "rounds": rounds,
        "split": split.how,
        "params": p,
        "lightgbm": lgb.__version__,
        "trainer": f"ray-train x{workers}" if workers else "lightgbm",
        **(training_info or {}),
    }
    text = booster.model_to_string()
    manifest = _manifest(config, name, registry.next_version(name), chosen, held_out, text, setup)
    path = _write(manifest, text, booster, held_out, registry, out_dir)
    m = held_out.metrics
    progress(f"{manifest.ref}: AUC {m['auc']:.3f}, logloss {m['logloss']:.4f} -> {path}")
    progress(f"report: {path}/{REPORT_FILE}")
    return TrainResult(manifest, path)


def _choose_features(
    table: pa.Table,
    config: Config,
    name: str,
    label: str,
    features: list[str] | None,
    progress: Callable[[str], None],
) -> _Features:
    """The given features, or every column named like one; each checked against what
    a shard can build (before training: a model no shard can serve is refused)."""
    schema = ProfileSchema(config)
    catalog = Catalog(config, schema)
    if label not in table.column_names:
        raise TrainingError(f"the table has no label column {label!r}")
    known = _candidate_features(config, schema)
    if features is None:
        features = [c for c in table.column_names if c in known and c != label]
        ignored = [c for c in table.column_names if c not in known and c != label]
        if ignored:
            progress(f"ignoring columns that are not features: {', '.join(ignored)}")
    unknown = [f for f in features if f not in known]
    if unknown:
        raise TrainingError(f"not features the shards can build: {', '.join(unknown)}")
    if not features:
        raise TrainingError("no feature columns found (names must match profile features)")
    vocab_all = default_vocabularies(config, schema)
    categories = {f: vocab_all[f] for f in features if f in vocab_all}
    plan = FeaturePlan.build(name, features, categories, config, schema, catalog)
    return _Features(features, categories, plan)


def _labels(table: pa.Table, label: str) -> np.ndarray:
    """The label column as 0.0/1.0, refused when it has nulls, other values or one class."""
    y_col = table.column(label).cast(pa.float64())
    if y_col.null_count:
        raise TrainingError(f"label column {label!r} has {y_col.null_count} nulls")
    y = np.asarray(y_col.to_numpy())
    if not np.isin(y, (0.0, 1.0)).all():
        raise TrainingError(f"label column {label!r} must be 0/1")
    if y.min() == y.max():
        raise TrainingError("the label has a single class; nothing to learn")
    return y


def _split(table: pa.Table, valid_fraction: float, seed: int) -> _Split:
    """Hold out `valid_fraction` of the rows: the latest when the table has a `ts`
    column (validated as it will be used, on the future), else a seeded random share."""
    rng = np.random.default_rng(seed)
    if "ts" in table.column_names:
        order = np.argsort(table.column("ts").cast(pa.float64()).to_numpy(), kind="stable")
        how = "time"
    else:
        order = rng.permutation(table.num_rows)
        how = "random"
    n_valid = max(1, int(table.num_rows * valid_fraction))
    return _Split(order[:-n_valid], order[-n_valid:], how)


def _fit(
    x: np.ndarray,
    y: np.ndarray,
    split: _Split,
    chosen: _Features,
    params: dict[str, Any],
    rounds: int,
    progress: Callable[[str], None],
    config: Config,
    workers: int | None,
    cpus_per_worker: float,
) -> lgb.Booster:
    """LightGBM on this machine, or Ray Train's LightGBMTrainer with `workers`."""
    xt, yt, xv, yv = x[split.train], y[split.train], x[split.valid], y[split.valid]
    categorical = list(chosen.plan.categorical)
    if workers:
        from training.distributed import fit_on_ray

        return fit_on_ray(
            xt,
            yt,
            xv,
            yv,
            chosen.names,
            categorical,
            params,
            rounds,
            workers,
            progress,
            staging=_staging_dir(config),
            cpus_per_worker=cpus_per_worker,
        )
    dtrain = lgb.Dataset(
        xt, yt, feature_name=chosen.names, categorical_feature=categorical, free_raw_data=False
    )

    def report(env: Any) -> None:
        if (env.iteration + 1) % 50 == 0 or env.iteration + 1 == env.end_iteration:
            loss = env.evaluation_result_list[0][2]
            progress(f"  round {env.iteration + 1}/{env.end_iteration}  valid logloss {loss:.4f}")

    return lgb.train(
        params,
        dtrain,
        num_boost_round=rounds,
        valid_sets=[dtrain.create_valid(xv, yv)],
        valid_names=["valid"],
        callbacks=[report],
    )


def _staging_dir(config: Config) -> str | None:
    """Under the data dir when it is a path (shared by the nodes of a cluster)."""
    root = config.server.data_dir.removeprefix("file://")
    if "://" in root:
        return None
    return os.path.join(os.path.abspath(root), "train-staging", uuid.uuid4().hex)


def _manifest(
    config: Config,
    name: str,
    version: int,
    chosen: _Features,
    held_out: HeldOut,
    text: str,
    setup: dict[str, Any],
) -> ModelManifest:
    """The new version's manifest, signed when this process holds the model key (so its
    models verify where a signature is required)."""
    manifest = ModelManifest(
        name=name,
        version=version,
        features=list(chosen.names),
        sha256=sha256_text(text),
        categories=chosen.categories,
        metrics=held_out.metrics,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        created_by=f"{getpass.getuser()}@{socket.gethostname()}",
        training=setup,
    )
    key = Secrets.resolve(config, os.environ).model_key()
    return manifest if key is None else sign(manifest, key)


def _write(
    manifest: ModelManifest,
    text: str,
    booster: lgb.Booster,
    held_out: HeldOut,
    registry: Registry,
    out_dir: str | None,
) -> str:
    """Write the model and its report to the registry (or `out_dir`); the path written."""
    bundle = ModelBundle.verified(manifest, text)
    curves = [Curve(f"{manifest.ref} (new)", held_out.y, held_out.p)]
    if held_out.champion is not None:
        curves.append(
            Curve(f"{held_out.champion['version']} (champion)", held_out.y, held_out.champion["p"])
        )
    gain = booster.feature_importance(importance_type="gain").tolist()
    page = render(manifest, curves, gain, held_out.metrics.get("champion"))
    if out_dir is None:
        registry.register(bundle)
        path = registry.path(manifest.name, manifest.version)
        registry.write_extra(manifest.name, manifest.version, REPORT_FILE, page)
        return path
    path = str(write_model_dir(out_dir, bundle))
    Path(path, REPORT_FILE).write_text(page)
    return path
