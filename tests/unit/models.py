"""A tiny real LightGBM model for tests (trained in-process on synthetic rows)."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np

from decisioning.config import Config
from decisioning.policy.features import default_vocabularies
from decisioning.policy.scoring import ModelBundle, ModelManifest, sha256_text
from decisioning.profile import ProfileSchema

FEATURES = ["age", "views_all", "action_id", "action_value"]


def tiny_model(config: Config, version: int = 1, rounds: int = 10) -> ModelBundle:
    rng = np.random.default_rng(0)
    n = 400
    x = np.column_stack(
        [rng.uniform(18, 80, n), rng.poisson(3, n), rng.integers(0, 3, n), rng.uniform(1, 100, n)]
    ).astype(np.float64)
    y = (x[:, 1] + rng.normal(0, 1, n) > 3).astype(float)
    ds = lgb.Dataset(x, y, feature_name=FEATURES, categorical_feature=[2])
    booster = lgb.train(
        {"objective": "binary", "verbose": -1, "num_threads": 1, "min_data_in_leaf": 5},
        ds,
        num_boost_round=rounds,
    )
    text = booster.model_to_string()
    vocab = default_vocabularies(config, ProfileSchema(config))
    manifest = ModelManifest(
        name="propensity",
        version=version,
        features=FEATURES,
        sha256=sha256_text(text),
        categories={"action_id": vocab["action_id"]},
    )
    return ModelBundle.verified(manifest, text)
