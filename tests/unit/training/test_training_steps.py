"""The steps `train()` is made of: which rows are held out, which columns are features,
what the labels must be, and how the new model is judged against the champion."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from decisioning.config import Config
from decisioning.stores.registry import Registry
from tests.conftest import examples
from tests.unit.models import FEATURES, tiny_model
from training.holdout import auc_by_action, evaluate_held_out
from training.metrics import auc
from training.train import TrainingError, _choose_features, _labels, _split


@examples(50)
@given(rows=st.integers(1, 300), fraction=st.floats(0.01, 0.9), seed=st.integers(0, 99))
def test_a_split_holds_out_a_share_and_fits_on_the_rest(
    rows: int, fraction: float, seed: int
) -> None:
    table = pa.table({"age": np.arange(rows, dtype=float)})
    split = _split(table, fraction, seed)
    assert split.how == "random"
    assert len(split.valid) == max(1, int(rows * fraction))
    assert sorted([*split.train, *split.valid]) == list(range(rows))  # each row once
    again = _split(table, fraction, seed)
    assert list(again.valid) == list(split.valid)  # the seed decides


def test_with_a_ts_column_the_latest_rows_are_held_out() -> None:
    ts = [5.0, 1.0, 9.0, 3.0, 7.0, 2.0, 8.0, 4.0, 6.0, 0.0]
    split = _split(pa.table({"ts": ts}), 0.3, seed=1)
    assert split.how == "time"
    assert sorted(ts[i] for i in split.valid) == [7.0, 8.0, 9.0]
    assert max(ts[i] for i in split.train) < min(ts[i] for i in split.valid)


def test_labels_must_be_two_classes_of_zero_and_one() -> None:
    assert list(_labels(pa.table({"y": [0, 1, 1]}), "y")) == [0.0, 1.0, 1.0]
    assert list(_labels(pa.table({"y": [False, True]}), "y")) == [0.0, 1.0]
    for bad, reason in (
        ([0, None], "1 nulls"),
        ([0, 2], "must be 0/1"),
        ([1, 1], "single class"),
    ):
        with pytest.raises(TrainingError, match=reason):
            _labels(pa.table({"y": pa.array(bad, pa.int64())}), "y")


def test_features_are_the_columns_a_shard_can_build(small_config: Config) -> None:
    table = pa.table({"id": ["a"], "age": [1.0], "action_id": ["card"], "label": [1]})
    said: list[str] = []
    chosen = _choose_features(table, small_config, "propensity", "label", None, said.append)
    assert chosen.names == ["age", "action_id"]
    assert chosen.categories == {"action_id": ["card", "loan", "tip"]}
    assert said == ["ignoring columns that are not features: id"]
    given_ = _choose_features(table, small_config, "p", "label", ["action_id"], said.append)
    assert given_.names == ["action_id"] and len(said) == 1  # given: nothing is ignored
    with pytest.raises(TrainingError, match="no label column 'y'"):
        _choose_features(table, small_config, "p", "y", ["nope"], said.append)
    with pytest.raises(TrainingError, match="can build: nope"):
        _choose_features(table, small_config, "p", "label", ["nope"], said.append)


def test_auc_by_action_leaves_out_actions_of_one_class() -> None:
    codes = np.array([0, 0, 0, 1, 1, 2, 2, 2, np.nan])
    y = np.array([0, 1, 1, 1, 1, 0, 1, 0, 1], dtype=float)
    p = np.array([0.1, 0.8, 0.3, 0.5, 0.6, 0.2, 0.9, 0.4, 0.5])
    got = auc_by_action(codes, y, p, ["a", "b", "c"])
    assert got == {"a": round(auc(y[:3], p[:3]), 6), "c": 1.0}  # b: accepts only


def _rows(n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    x = np.column_stack(
        [rng.uniform(18, 80, n), rng.poisson(3, n), rng.integers(0, 3, n), rng.uniform(1, 99, n)]
    )
    return x, (x[:, 1] + rng.normal(0, 1, n) > 3).astype(float)


def test_the_champion_is_scored_on_the_same_rows_when_comparable(small_config: Config) -> None:
    bundle = tiny_model(small_config)
    registry = Registry(small_config.server.data_dir)
    booster = lgb.Booster(model_str=bundle.model_text)
    categories = dict(bundle.manifest.categories)
    x, y = _rows()
    said: list[str] = []

    def judge(features: list[str]) -> dict[str, object]:
        return evaluate_held_out(
            booster, x, y, 1000, features, categories, registry, "propensity", said.append
        ).metrics

    alone = judge(FEATURES)  # nothing deployed: nothing to compare with
    assert "champion" not in alone and said == []
    assert alone["rows_train"] == 1000 and alone["rows_valid"] == len(y)
    assert set(alone["auc_by_action"]) <= {"card", "loan", "tip"}  # type: ignore[arg-type]
    registry.register(bundle)
    registry.set_deployed("propensity", 1)
    same = judge(FEATURES)
    # the champion is this very model: on the same rows it scores the same
    assert same["champion"] == {
        "version": "propensity@1",
        "auc": same["auc"],
        "logloss": same["logloss"],
        "base_rate": same["base_rate"],
    }
    assert said == [
        f"champion propensity@1 on the same held-out rows: AUC {same['auc']:.3f}, "
        f"logloss {same['logloss']:.4f}"
    ]
    assert "champion" not in judge(["views_all", "age", "action_id", "action_value"])
