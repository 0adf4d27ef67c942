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
from training.metrics import auc, calibration, logloss
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
    # the shard must be able to build exactly these features: check before training
    plan = FeaturePlan.build(name, features, categories, config, schema, catalog)

    # fitted, validated and compared on exactly the values a shard will score
    x = plan.as_served(table_matrix(table, features, categories))
    y_col = table.column(label).cast(pa.float64())
    if y_col.null_count:
        raise TrainingError(f"label column {label!r} has {y_col.null_count} nulls")
    y = y_col.to_numpy()
    if not np.isin(y, (0.0, 1.0)).all():
        raise TrainingError(f"label column {label!r} must be 0/1")
    if y.min() == y.max():
        raise TrainingError("the label has a single class; nothing to learn")

    rng = np.random.default_rng(seed)
    if "ts" in table.column_names:  # split by time: validate on the latest rows
        order = np.argsort(table.column("ts").cast(pa.float64()).to_numpy(), kind="stable")
        split = "time"
    else:
        order = rng.permutation(table.num_rows)
        split = "random"
    n_valid = max(1, int(table.num_rows * valid_fraction))
    train_idx, valid_idx = order[:-n_valid], order[-n_valid:]
    p = {**DEFAULT_PARAMS, "seed": seed, **(params or {})}
    dtrain = lgb.Dataset(
        x[train_idx],
        y[train_idx],
        feature_name=features,
        categorical_feature=list(plan.categorical),
        free_raw_data=False,
    )
    dvalid = dtrain.create_valid(x[valid_idx], y[valid_idx])
    progress(
        f"training {name}: {len(train_idx)} rows, {len(features)} features, "
        f"{len(valid_idx)} held out ({split} split), up to {rounds} rounds"
    )

    def report(env: Any) -> None:
        if (env.iteration + 1) % 50 == 0 or env.iteration + 1 == env.end_iteration:
            loss = env.evaluation_result_list[0][2]
            progress(f"  round {env.iteration + 1}/{env.end_iteration}  valid logloss {loss:.4f}")

    if workers:
        from training.distributed import fit_on_ray

        booster = fit_on_ray(
            x[train_idx],
            y[train_idx],
            x[valid_idx],
            y[valid_idx],
            features,
            list(plan.categorical),
            p,
            rounds,
            workers,
            progress,
            staging=_staging_dir(config),
            cpus_per_worker=cpus_per_worker,
        )
    else:
        booster = lgb.train(
            p,
            dtrain,
            num_boost_round=rounds,
            valid_sets=[dvalid],
            valid_names=["valid"],
            callbacks=[report],
        )
    xv, yv = x[valid_idx], y[valid_idx]
    pv = booster.predict(xv, num_threads=1)
    metrics: dict[str, Any] = {
        "auc": round(auc(yv, pv), 6),
        "logloss": round(logloss(yv, pv), 6),
        "base_rate": round(float(yv.mean()), 6),
        "rows_train": len(train_idx),
        "rows_valid": len(valid_idx),
        "trees": booster.num_trees(),
        "calibration": calibration(yv, pv),
    }
    if "action_id" in features:
        j, vocab = features.index("action_id"), categories["action_id"]
        metrics["auc_by_action"] = {
            vocab[int(code)]: round(a, 6)
            for code in np.unique(xv[:, j][~np.isnan(xv[:, j])])
            if not math.isnan(a := auc(yv[xv[:, j] == code], pv[xv[:, j] == code]))
        }
    registry = Registry(config.server.data_dir)
    champion = _champion_on(registry, name, features, categories, xv, yv)
    if champion is not None:
        metrics["champion"] = {k: v for k, v in champion.items() if k != "p"}
        progress(
            f"champion {champion['version']} on the same held-out rows: "
            f"AUC {champion['auc']:.3f}, logloss {champion['logloss']:.4f}"
        )
    text = booster.model_to_string()
    version = registry.next_version(name)
    manifest = ModelManifest(
        name=name,
        version=version,
        features=list(features),
        sha256=sha256_text(text),
        categories=categories,
        metrics=metrics,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        created_by=f"{getpass.getuser()}@{socket.gethostname()}",
        training={
            "label": label,
            "rounds": rounds,
            "split": split,
            "params": p,
            "lightgbm": lgb.__version__,
            "trainer": f"ray-train x{workers}" if workers else "lightgbm",
            **(training_info or {}),
        },
    )
    key = Secrets.resolve(config, os.environ).model_key()
    if key is not None:  # the trainer holds the key: its models verify where it is required
        manifest = sign(manifest, key)
    bundle = ModelBundle.verified(manifest, text)
    curves = [Curve(f"{manifest.ref} (new)", yv, pv)]
    if champion is not None:
        curves.append(Curve(f"{champion['version']} (champion)", yv, champion["p"]))
    gain = booster.feature_importance(importance_type="gain").tolist()
    page = render(manifest, curves, gain, metrics.get("champion"))
    if out_dir is None:
        registry.register(bundle)
        path = registry.path(name, version)
        registry.write_extra(name, version, REPORT_FILE, page)
    else:
        path = str(write_model_dir(out_dir, bundle))
        Path(path, REPORT_FILE).write_text(page)
    progress(
        f"{manifest.ref}: AUC {metrics['auc']:.3f}, logloss {metrics['logloss']:.4f} -> {path}"
    )
    progress(f"report: {path}/{REPORT_FILE}")
    return TrainResult(manifest, path)


def _staging_dir(config: Config) -> str | None:
    """Under the data dir when it is a path (shared by the nodes of a cluster)."""
    root = config.server.data_dir.removeprefix("file://")
    if "://" in root:
        return None
    return os.path.join(os.path.abspath(root), "train-staging", uuid.uuid4().hex)


def _champion_on(
    registry: Registry,
    name: str,
    features: list[str],
    categories: dict[str, list[str]],
    x: np.ndarray,
    y: np.ndarray,
) -> dict[str, Any] | None:
    """The current champion's metrics on the new model's held-out rows, when it takes
    the same features with the same vocabularies (else no fair comparison exists)."""
    version = registry.deployed(name)
    if version is None:
        return None
    try:
        m = registry.read(name, version).manifest
        text = registry.read(name, version).model_text
    except NextbestError:
        return None
    if m.features != features or m.categories != categories:
        return None
    p = lgb.Booster(model_str=text).predict(x, num_threads=1)
    return {
        "version": m.ref,
        "auc": round(auc(y, p), 6),
        "logloss": round(logloss(y, p), 6),
        "base_rate": round(float(y.mean()), 6),
        "p": p,
    }
