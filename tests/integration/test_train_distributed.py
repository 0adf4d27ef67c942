"""`nextbest train --workers N` on a cluster (RAY_ADDRESS): Ray Train's LightGBMTrainer
over ray.data.read_parquet gives a model version like a local run, and shards take it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx
import pyarrow.parquet as pq

from decisioning.model import read_model_dir
from tests.conftest import EXAMPLE
from tests.integration.harness import ALL_SCOPES_KEY, CLI, Server
from training.demo import generate


def test_ray_train_on_the_cluster_makes_a_model_the_shards_take(
    server: Server, client: httpx.Client, tmp_path: Path
) -> None:
    data = generate(server.config, customers=400, offers=4, seed=21)
    pq.write_table(data.training, tmp_path / "training.parquet")
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
    r = client.post(
        "/v1/models/deploy", json={"manifest": m.to_dict(), "model_text": bundle.model_text}
    )
    assert r.status_code == 200, r.text
    d = client.post("/v1/decide", json={"customer_id": "rt-1", "channel": "web"}).json()
    assert d["model_version"] == r.json()["deployed"]
