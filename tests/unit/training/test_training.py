from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pytest

from decisioning.config import Config
from decisioning.policy.scoring import read_model_dir
from decisioning.stores.registry import Registry
from training.demo import generate
from training.metrics import auc, logloss
from training.train import TrainingError, read_table, train


def test_metrics() -> None:
    assert auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert auc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)
    assert logloss([1, 0], [0.9, 0.1]) == pytest.approx(0.1053605, rel=1e-5)


def test_demo_data_trains_a_model_that_learns(example_config: Config) -> None:
    data = generate(example_config, customers=400, offers=5)
    assert data.training.num_rows > 1000
    assert 0.05 < pc.mean(data.training.column("label")).as_py() < 0.6
    result = train(data.training, example_config, rounds=60, progress=lambda m: None)
    m = result.manifest
    assert m.ref == "propensity@1"
    assert m.features[:2] == ["age", "income"]
    assert m.categories["segment"] == ["mass", "affluent", "private", "student"]
    assert m.metrics["auc"] > 0.65  # the synthetic outcomes depend on the profile
    bundle = read_model_dir(result.path)  # sha256 verified on read
    assert bundle.manifest == m
    registry = Registry(example_config.server.data_dir)
    assert registry.versions("propensity") == [1]
    again = train(data.training, example_config, rounds=10, progress=lambda m: None)
    assert again.manifest.version == 2


def test_csv_and_out_dir(example_config: Config, tmp_path: Path) -> None:
    table = generate(example_config, customers=150, offers=4).training
    path = tmp_path / "t.csv"
    pacsv.write_csv(table, path)
    result = train(
        read_table(path),
        example_config,
        rounds=5,
        out_dir=str(tmp_path / "m"),
        progress=lambda m: None,
    )
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert manifest["sha256"] == result.manifest.sha256
    assert manifest["metrics"]["rows_train"] + manifest["metrics"]["rows_valid"] == table.num_rows


def test_bad_tables_are_refused_with_reasons(example_config: Config) -> None:
    good = {"age": [30.0, 40.0], "label": [0, 1]}
    with pytest.raises(TrainingError, match="no label column"):
        train(pa.table({"age": [1.0]}), example_config, progress=lambda m: None)
    with pytest.raises(TrainingError, match="must be 0/1"):
        train(pa.table({**good, "label": [0, 2]}), example_config, progress=lambda m: None)
    with pytest.raises(TrainingError, match="single class"):
        train(pa.table({**good, "label": [1, 1]}), example_config, progress=lambda m: None)
    with pytest.raises(TrainingError, match="shoe_size"):
        train(pa.table(good), example_config, features=["shoe_size"], progress=lambda m: None)
    with pytest.raises(TrainingError, match="must hold strings"):
        train(pa.table({**good, "segment": [1, 2]}), example_config, progress=lambda m: None)
