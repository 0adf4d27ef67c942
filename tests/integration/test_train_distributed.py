"""`nextbest train --workers N` on a cluster (RAY_ADDRESS): Ray Train's LightGBMTrainer
over ray.data.read_parquet gives a model version like a local run, and shards take it;
its workers, too, fit on the features as a shard serves them (float32 rounded)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx
import lightgbm as lgb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from decisioning.policy.catalog import Catalog
from decisioning.policy.features import FeaturePlan
from decisioning.policy.scoring import read_model_dir
from decisioning.profile import ProfileSchema
from tests.conftest import EXAMPLE
from tests.integration.harness import ALL_SCOPES_KEY, CLI, Server
from training.demo import generate
from training.train import table_matrix


def _straddling(table: pa.Table) -> pa.Table:
    """Incomes moved an eighth of a float32 step, up for positives, down for negatives:
    each still rounds to its float32 value, but a float64 fit can split between them."""
    income = table["income"].to_numpy(zero_copy_only=False)
    label = table["label"].to_numpy().astype(np.float64)
    step = np.spacing(np.abs(income).astype(np.float32)).astype(np.float64)
    moved = pa.array(income + (label - 0.5) * step / 4)
    return table.set_column(table.column_names.index("income"), "income", moved)


def test_ray_train_on_the_cluster_makes_a_model_the_shards_take(
    server: Server, client: httpx.Client, tmp_path: Path
) -> None:
    table = _straddling(generate(server.config, customers=400, offers=4, seed=21).training)
    pq.write_table(table, tmp_path / "training.parquet")
    # a training node, as on a cluster (the head's CPUs belong to Serve)
    node = server.cluster.add_node(num_cpus=4, object_store_memory=80 << 20)
    server.cluster.wait_for_nodes()
    env = {
        **os.environ,
        "RAY_ADDRESS": server.cluster.address,
        "NEXTBEST_DATA_DIR": str(server.data_dir),
        "NEXTBEST_API_KEY": ALL_SCOPES_KEY,
    }
    try:
        trained = subprocess.run(
            [
                CLI,
                "train",
                str(tmp_path / "training.parquet"),
                "--config",
                str(EXAMPLE),
                "--rounds",
                "20",
                "--out",
                str(tmp_path / "m"),
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )
    finally:
        server.cluster.remove_node(node)
    assert trained.returncode == 0, trained.stdout + trained.stderr
    assert "Ray Train: 2 workers" in trained.stdout and "ray.data.read_parquet" in trained.stdout
    assert "round 20/20" in trained.stdout + trained.stderr  # the workers' progress
    bundle = read_model_dir(tmp_path / "m")  # sha256 checked
    m = bundle.manifest
    assert m.training["trainer"] == "ray-train x2"
    assert 0.5 < m.metrics["auc"] <= 1.0 and m.metrics["trees"] == 20
    # the table scores the same as given and as served (fitted locally on float64, 12
    # rows of it scored up to 0.04 apart)
    schema = ProfileSchema(server.config)
    plan = FeaturePlan.build(
        m.name, m.features, m.categories, server.config, schema, Catalog(server.config, schema)
    )
    x = table_matrix(table, m.features, m.categories)
    booster = lgb.Booster(model_str=bundle.model_text)
    np.testing.assert_array_equal(booster.predict(x), booster.predict(plan.as_served(x)))
    r = client.post(
        "/v1/models/deploy", json={"manifest": m.to_dict(), "model_text": bundle.model_text}
    )
    assert r.status_code == 200, r.text
    d = client.post("/v1/decide", json={"customer_id": "rt-1", "channel": "web"}).json()
    assert d["model_version"] == r.json()["deployed"]
