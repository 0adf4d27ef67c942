"""Bring your own model: a LightGBM text file with foreign feature names is registered
through a feature map, or refused with every missing name listed."""

from __future__ import annotations

import json
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from actors.shard import Shard
from decisioning.config import Config
from decisioning.policy.scoring import ModelBundle
from decisioning.stores.registry import Registry
from serving.cli import app
from tests.conftest import SMALL
from tests.unit import edge
from tests.unit.decisioning.policy.test_decide import NOW, Clock
from tests.unit.models import tiny_model
from training.register import register_external
from training.train import TrainingError


def _foreign(tmp_path: Path, names: list[str]) -> Path:
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 100, (300, len(names)))
    y = (x[:, 0] > 50).astype(float)
    booster = lgb.train(
        {"objective": "binary", "verbose": -1, "num_threads": 1},
        lgb.Dataset(x, y, feature_name=names),
        num_boost_round=5,
    )
    path = tmp_path / "model.txt"
    path.write_text(booster.model_to_string())
    return path


def test_foreign_names_are_mapped_and_the_shard_scores_it(
    small_config: Config, tmp_path: Path
) -> None:
    path = _foreign(tmp_path, ["cust_age", "pageviews", "offer_value"])
    fmap = tmp_path / "map.yaml"
    fmap.write_text("features: {cust_age: age, pageviews: views_all, offer_value: action_value}\n")
    m = register_external(path, small_config, "propensity", fmap)
    assert (m.ref, m.features) == ("propensity@1", ["age", "views_all", "action_value"])
    assert m.training["renamed"]["cust_age"] == "age"
    bundle = Registry(small_config.server.data_dir).read("propensity", 1)  # sha256 checked
    shard = Shard(0, small_config, [bundle])
    assert (
        edge.decide(shard, {"customer_id": "c", "channel": "web"})["model_version"]
        == "propensity@1"
    )
    # the original scores the same rows the same way: only the names changed
    x = np.array([[30.0, 2.0, 100.0]])
    same = lgb.Booster(model_str=path.read_text()).predict(x)
    np.testing.assert_array_equal(lgb.Booster(model_str=bundle.model_text).predict(x), same)


def test_unresolvable_features_are_refused_with_the_missing_ones(
    small_config: Config, tmp_path: Path
) -> None:
    path = _foreign(tmp_path, ["age", "shoe_size", "hat_size"])
    with pytest.raises(TrainingError) as e:
        register_external(path, small_config, "propensity")
    assert "shoe_size" in str(e.value) and "hat_size" in str(e.value)
    assert Registry(small_config.server.data_dir).versions("propensity") == []
    bad = tmp_path / "map.yaml"
    bad.write_text("features: {nope: age}\n")
    with pytest.raises(TrainingError, match="lacks: nope"):
        register_external(path, small_config, "propensity", bad)
    junk = tmp_path / "junk.txt"
    junk.write_text("not a model")
    with pytest.raises(TrainingError, match="not a LightGBM text model"):
        register_external(junk, small_config, "propensity")


def test_cli_register(small_config: Config, tmp_path: Path) -> None:
    bundle: ModelBundle = tiny_model(small_config)
    path = tmp_path / "model.txt"
    path.write_text(bundle.model_text)
    cfg = tmp_path / "small.yaml"
    cfg.write_text(
        json.dumps({**SMALL, "server": {**SMALL["server"], "data_dir": str(tmp_path / "d")}})
    )
    r = CliRunner().invoke(
        app, ["models", "register", str(path), "--name", "propensity", "--config", str(cfg)]
    )
    assert r.exit_code == 0, r.output
    assert "registered propensity@1" in r.output and "models promote propensity" in r.output
    other = _foreign(tmp_path, ["shoe_size"])
    r = CliRunner().invoke(
        app, ["models", "register", str(other), "--name", "propensity", "--config", str(cfg)]
    )
    assert r.exit_code == 1 and "shoe_size" in r.output


def _straddling(tmp_path: Path, as_float32: bool) -> tuple[Path, pa.Table]:
    """A model fitted elsewhere on ages 85.4 + k·1e-6 (two float32 values between them)
    and action codes, on float64 values or on the float32 ones a shard holds."""
    rng = np.random.default_rng(4)
    k = rng.integers(0, 12, 1000)
    table = pa.table({"cust_age": 85.4 + k * 1e-6, "action_id": rng.integers(0, 2, 1000)})
    x = np.column_stack([table["cust_age"].to_numpy(), table["action_id"].to_numpy()])
    if as_float32:
        x[:, 0] = x[:, 0].astype(np.float32)
    y = (rng.random(1000) < np.where(k % 4 < 2, 0.1, 0.8)).astype(float)
    booster = lgb.train(
        {"objective": "binary", "verbose": -1, "num_threads": 1},
        lgb.Dataset(x, y, feature_name=["cust_age", "action_id"], categorical_feature=[1]),
        num_boost_round=20,
    )
    path = tmp_path / f"model-{as_float32}.txt"
    path.write_text(booster.model_to_string())
    return path, table


def test_a_check_table_refuses_a_model_fitted_on_float64_values_the_shard_rounds(
    small_config: Config, tmp_path: Path
) -> None:
    fmap = tmp_path / "map.yaml"
    fmap.write_text("features: {cust_age: age}\n")
    path, table = _straddling(tmp_path, as_float32=False)
    with pytest.raises(TrainingError, match="score differently as served") as e:
        register_external(path, small_config, "propensity", fmap, check_table=table)
    assert "age" in str(e.value) and "float32" in str(e.value)
    assert Registry(small_config.server.data_dir).versions("propensity") == []
    path, table = _straddling(tmp_path, as_float32=True)
    m = register_external(path, small_config, "propensity", fmap, check_table=table)
    assert m.training["checked_rows"] == table.num_rows
    # and the shard serves it as Booster.predict scores the table
    bundle = Registry(small_config.server.data_dir).read("propensity", 1)
    shard = Shard(0, small_config, [bundle], clock=Clock())
    booster = lgb.Booster(model_str=path.read_text())
    for i, (age, code) in enumerate(zip(*table.to_pydict().values(), strict=True)):
        if i % 50:
            continue
        cid = f"c-{i}"
        edge.apply_events(
            shard,
            [{"customer_id": cid, "type": "profile_update", "ts": NOW, "properties": {"age": age}}],
        )
        d = edge.decide(shard, {"customer_id": cid, "channel": "web", "limit": 3})
        p = {a["action_id"]: a["propensity"] for a in d["actions"]}[["card", "loan"][code]]
        assert abs(p - booster.predict(np.array([[age, code]]))[0]) <= 1e-9


def test_cli_register_with_a_check_table(tmp_path: Path) -> None:
    cfg = tmp_path / "small.yaml"
    cfg.write_text(
        json.dumps({**SMALL, "server": {**SMALL["server"], "data_dir": str(tmp_path / "d")}})
    )
    fmap = tmp_path / "map.yaml"
    fmap.write_text("features: {cust_age: age}\n")
    for as_float32, code, said in ((False, 1, "float32"), (True, 0, "the 1000 rows score")):
        path, table = _straddling(tmp_path, as_float32)
        pq.write_table(table, tmp_path / "rows.parquet")
        args = ["models", "register", str(path), "--name", "propensity", "--config", str(cfg)]
        args += ["--feature-map", str(fmap), "--check-table", str(tmp_path / "rows.parquet")]
        r = CliRunner().invoke(app, args)
        assert r.exit_code == code and said in r.output, r.output
