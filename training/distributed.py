"""Training on a Ray cluster: Ray Train's LightGBMTrainer over `ray.data.read_parquet`.

`train(..., workers=N)` uses this instead of `lightgbm.train` on one machine. The
training and validation rows are written as Parquet under a staging dir that every
node must read: `train()` puts it under the data dir when that is a local or mounted
path (shared on a cluster), and it is removed afterwards. Ray Data reads them and hands each
worker its shard, and the workers train one model together through LightGBM's own
network (Ray Train sets up the machines list). No distribution is hand-written here.
The model comes back as LightGBM text, the same as a local run; the metrics and the
report are computed by the caller on the held-out rows. The rows arrive as served
(`train()` has rounded the float32 profile features) and Parquet keeps them bit for bit.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

import lightgbm as lgb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["fit_on_ray"]


def _table(x: np.ndarray, y: np.ndarray, features: list[str]) -> pa.Table:
    cols = {f: x[:, j] for j, f in enumerate(features)}
    return pa.table({**cols, "__label__": y})


def fit_on_ray(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_valid: np.ndarray,
    y_valid: np.ndarray,
    features: list[str],
    categorical: list[int],
    params: dict[str, Any],
    rounds: int,
    workers: int,
    progress: Callable[[str], None],
    staging: str | None = None,
    cpus_per_worker: float = 1.0,
) -> lgb.Booster:
    """Train with `workers` Ray Train workers; Ray must be initialised (local or cluster).
    `staging` must be a path every node reads (default: a temporary dir on this machine,
    enough for one machine; the CLI passes one under the data dir); it is removed after."""

    import ray.data
    from ray.train.lightgbm import RayTrainReportCallback

    staging = staging or tempfile.mkdtemp(prefix="nextbest-train-")
    try:
        train_dir = stage(os.path.join(staging, "train"), x_train, y_train, features, workers)
        valid_dir = stage(os.path.join(staging, "valid"), x_valid, y_valid, features, workers)
        datasets = {  # reads take what a worker takes: they must fit beside the workers
            "train": ray.data.read_parquet(train_dir, num_cpus=cpus_per_worker),
            "valid": ray.data.read_parquet(valid_dir, num_cpus=cpus_per_worker),
        }
        progress(
            f"Ray Train: {workers} workers, {len(y_train)} rows via "
            f"ray.data.read_parquet({train_dir})"
        )
        loop_config = {
            "features": features,
            "categorical": categorical,
            "params": {**params, "num_threads": max(1, int(cpus_per_worker))},
            "rounds": rounds,
        }
        result = _trainer(datasets, loop_config, workers, cpus_per_worker, staging).fit()
        if result.error is not None:
            raise result.error
        assert result.checkpoint is not None
        booster = RayTrainReportCallback.get_model(result.checkpoint)
        progress(f"Ray Train: done, {booster.num_trees()} trees")
        return booster
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # a fresh dir per run: never reused


def stage(directory: str, x: np.ndarray, y: np.ndarray, features: list[str], parts: int) -> str:
    """The rows as `parts` Parquet files under `directory` (a file per worker, so each
    reads its part in parallel), the label as `__label__`; the directory."""
    os.makedirs(directory, exist_ok=True)
    for i, part in enumerate(np.array_split(np.arange(len(y)), parts)):
        pq.write_table(
            _table(x[part], y[part], features), os.path.join(directory, f"part-{i}.parquet")
        )
    return directory


def _trainer(
    datasets: dict[str, Any],
    loop_config: dict[str, Any],
    workers: int,
    cpus_per_worker: float,
    staging: str,
) -> Any:
    """Ray Train's LightGBMTrainer running `_worker_loop` on `workers` workers."""
    import ray.train
    from ray.train.lightgbm import LightGBMTrainer

    return LightGBMTrainer(
        _worker_loop,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=workers, resources_per_worker={"CPU": cpus_per_worker}
        ),
        run_config=ray.train.RunConfig(
            name="nextbest-train", storage_path=os.path.join(staging, "runs")
        ),
        datasets=datasets,
    )


def _worker_loop(config: dict[str, Any]) -> None:
    """One Ray Train worker: its shard of the rows, LightGBM with the network params."""
    import ray.train
    from ray.train.lightgbm import RayTrainReportCallback, get_network_params

    def load(name: str) -> tuple[np.ndarray, np.ndarray]:
        shard = ray.train.get_dataset_shard(name)
        batches = list(shard.iter_batches(batch_format="numpy", batch_size=None))
        cols = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
        x = np.column_stack([cols[f] for f in config["features"]]).astype(np.float64)
        return x, cols["__label__"].astype(np.float64)

    xt, yt = load("train")
    xv, yv = load("valid")
    dtrain = lgb.Dataset(
        xt, yt, feature_name=config["features"], categorical_feature=config["categorical"]
    )
    dvalid = dtrain.create_valid(xv, yv)
    params = {**config["params"], "metric": "binary_logloss", **get_network_params()}
    lgb.train(
        params,
        dtrain,
        num_boost_round=config["rounds"],
        valid_sets=[dvalid],
        valid_names=["valid"],
        callbacks=[RayTrainReportCallback(), _progress],
    )


def _progress(env: Any) -> None:
    """Rank 0 prints its progress (the driver shows worker output with log_to_driver)."""
    import ray.train

    done, total = env.iteration + 1, env.end_iteration
    if ray.train.get_context().get_world_rank() == 0 and (done % 10 == 0 or done == total):
        loss = env.evaluation_result_list[0][2] if env.evaluation_result_list else float("nan")
        print(f"round {done}/{total}  valid logloss {loss:.4f}", flush=True)
