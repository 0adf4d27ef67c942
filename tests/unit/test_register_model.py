"""Bring your own model: a LightGBM text file with foreign feature names is registered
through a feature map, or refused with every missing name listed."""

from __future__ import annotations

import json
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest
from typer.testing import CliRunner

from actors.shard import Shard
from decisioning.config import Config
from decisioning.model import ModelBundle
from decisioning.registry import Registry
from serving.cli import app
from tests.conftest import SMALL
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
    assert shard.decide({"customer_id": "c", "channel": "web"})["model_version"] == "propensity@1"
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
