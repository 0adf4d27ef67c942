"""Training sees what serving sees: a shard holds profile values in float32, so every
training matrix rounds exactly those features to float32 before fitting, and a model's
served propensities equal Booster.predict on the training table."""

from __future__ import annotations

import math
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from actors.shard import Shard
from decisioning.config import Config, LogsSpec
from decisioning.policy.catalog import Catalog
from decisioning.policy.features import FeaturePlan, default_vocabularies
from decisioning.policy.scoring import ModelBundle, ModelManifest, read_model_dir, sha256_text
from decisioning.profile import Event, ProfileSchema, ProfileStore
from decisioning.stores.decision_log import DecisionLog
from decisioning.stores.registry import Registry
from tests.conftest import examples
from tests.unit import edge
from tests.unit.decisioning.policy.test_decide import NOW, Clock
from training.demo import DEMO_FEATURES, generate
from training.from_logs import table_from_logs
from training.train import table_matrix, train

FLOAT32 = {
    "age",
    "views_all",
    "spend_1h",
    "min_1h",
    "max_1h",
    "spend_all",
    "min_all",
    "max_all",
    "last_amount",
    "last_amount_1h",
    "consent_web",
    "consent_email",
}


def _plan(config: Config, names: list[str]) -> FeaturePlan:
    schema = ProfileSchema(config)
    vocab = default_vocabularies(config, schema)
    cats = {n: v for n, v in vocab.items() if n in names}
    return FeaturePlan.build("m", names, cats, config, schema, Catalog(config, schema))


def test_exactly_the_features_a_shard_holds_in_float32_are_rounded(small_config: Config) -> None:
    schema = ProfileSchema(small_config)
    numeric = [n for n in schema.feature_names if n not in schema.categories]
    names = [*numeric, "segment", "action_value", "action_lever", "action_id"]
    plan = _plan(small_config, names)
    # time_since and decayed_count are float64 at read time, windowed counts integers
    assert {names[j] for j in plan.float32_cols} == FLOAT32
    x = np.full((2, len(names)), 85.4)
    x[:, names.index("segment")] = x[:, names.index("action_id")] = 1.0
    x[1] = math.nan
    out = plan.as_served(x)
    for j, n in enumerate(names):
        want = float(np.float32(85.4)) if n in FLOAT32 else x[0, j]
        assert out[0, j] == want, n
    assert np.isnan(out[1]).all() and x[0, 0] == 85.4  # NaN stays NaN; x is not modified


@examples(60, HealthCheck.function_scoped_fixture)
@given(
    events=st.lists(
        st.tuples(
            st.sampled_from(["purchase", "login", "page_view", "profile_update"]),
            st.floats(min_value=0, max_value=2 * 3600),
            st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
        ),
        max_size=20,
    ),
    later=st.floats(min_value=0, max_value=3 * 3600),
)
def test_a_served_feature_vector_is_already_as_served(
    small_config: Config, events: list[tuple[str, float, float]], later: float
) -> None:
    """Rounding changes nothing a shard computed: the float32 columns are float32 and the
    float64 ones (time since, decayed counts, values) are left as they are."""
    schema = ProfileSchema(small_config)
    store = ProfileStore(schema, capacity=1)
    for kind, off, v in events:
        props = {"age": v} if kind == "profile_update" else {"amount": v, "page": "cards"}
        store.apply(Event("c", kind, NOW + off, props))
    names = [*schema.feature_names, "action_value", "action_id", "channel"]
    plan = _plan(small_config, names)
    catalog = Catalog(small_config, schema)
    now = NOW + later + max((off for _, off, _ in events), default=0.0)
    values = [0.1] * len(catalog.actions)  # a rule's value: float64, not a float32 number
    x = plan.matrix(store.features("c", now), catalog.actions, values, "web", {})
    np.testing.assert_array_equal(plan.as_served(x), x)


def _straddling_table(rng: np.random.Generator, n: int) -> pa.Table:
    """Ages around 85.4 that float32 cannot tell apart (85.4 + k·1e-6 lie in two float32
    values), with outcomes that depend on the float64 value: a float64 fit splits there."""
    k = rng.integers(0, 12, n)
    age = np.where(rng.random(n) < 0.15, rng.choice([85.3, 85.5], n), 85.4 + k * 1e-6)
    p = np.where(age < 85.35, 0.3, np.where(age > 85.45, 0.5, np.where(k % 4 < 2, 0.1, 0.8)))
    action = rng.choice(["card", "loan"], n)
    return pa.table({"age": age, "action_id": action, "label": (rng.random(n) < p).astype(int)})


def _served(shard: Shard, table: pa.Table) -> np.ndarray:
    """Each row served: a customer with the row's age, the propensity of the row's action."""
    out = []
    for i, (age, action) in enumerate(
        zip(table["age"].to_pylist(), table["action_id"].to_pylist(), strict=True)
    ):
        cid = f"c-{i}"
        edge.apply_events(
            shard,
            [{"customer_id": cid, "type": "profile_update", "ts": NOW, "properties": {"age": age}}],
        )
        d = edge.decide(shard, {"customer_id": cid, "channel": "web", "limit": 3})
        out.append({a["action_id"]: a["propensity"] for a in d["actions"]}[action])
    return np.array(out)


def test_served_propensities_equal_booster_predict_on_the_training_table(
    small_config: Config, tmp_path: Path
) -> None:
    table = _straddling_table(np.random.default_rng(3), 1200)
    age = table["age"].to_numpy()
    assert len(np.unique(age)) > len(np.unique(age.astype(np.float32)))  # it does straddle
    result = train(
        table, small_config, rounds=30, out_dir=str(tmp_path / "m"), progress=lambda m: None
    )
    bundle = read_model_dir(result.path)
    m = bundle.manifest
    served = _served(Shard(0, small_config, [bundle], clock=Clock()), table)
    booster = lgb.Booster(model_str=bundle.model_text)
    as_given = table_matrix(table, m.features, m.categories)
    as_float32 = table_matrix(
        table.set_column(0, "age", pc.cast(table["age"], pa.float32())), m.features, m.categories
    )
    np.testing.assert_allclose(served, booster.predict(as_float32), rtol=0, atol=1e-9)
    # what a user checks: the model on the table it was trained on, as given
    np.testing.assert_allclose(served, booster.predict(as_given), rtol=0, atol=1e-9)


def _model(config: Config, features: list[str]) -> ModelBundle:
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 100, (300, len(features)))
    x[:, features.index("action_id")] = rng.integers(0, 3, 300)
    y = (x[:, 0] + rng.normal(0, 10, 300) > 50).astype(float)
    booster = lgb.train(
        {"objective": "binary", "verbose": -1, "num_threads": 1, "min_data_in_leaf": 5},
        lgb.Dataset(x, y, feature_name=features, categorical_feature=["action_id"]),
        num_boost_round=5,
    )
    text = booster.model_to_string()
    vocab = default_vocabularies(config, ProfileSchema(config))
    manifest = ModelManifest(
        name="propensity",
        version=1,
        features=features,
        sha256=sha256_text(text),
        categories={"action_id": vocab["action_id"]},
    )
    return ModelBundle.verified(manifest, text)


def test_the_logs_train_on_exactly_the_scored_vectors(small_config: Config, tmp_path: Path) -> None:
    features = ["age", "since_login", "logins_decay", "action_id", "action_value"]
    registry = Registry(small_config.server.data_dir)
    registry.register(_model(small_config, features))
    registry.set_deployed("propensity", 1)
    root = tmp_path / "logs"
    logs = DecisionLog(str(root), 0, LogsSpec(roll_s=3600))
    shard = Shard(0, small_config, registry.deployed_bundles(), clock=Clock(), logs=logs)
    rng = np.random.default_rng(5)
    ages = 18 + rng.random(200) * 60  # not float32 numbers
    for i, age in enumerate(ages):
        cid, login = f"c-{i}", NOW - rng.random() * 7200
        edge.apply_events(
            shard,
            [
                {
                    "customer_id": cid,
                    "type": "profile_update",
                    "ts": NOW,
                    "properties": {"age": age},
                },
                {"customer_id": cid, "type": "login", "ts": login, "properties": {}},
            ],
        )
        edge.decide(shard, {"customer_id": cid, "channel": "web", "limit": 1})
    logs.flush()
    got = table_from_logs(str(root), small_config, window_s=3600, progress=lambda m: None)
    decisions = ds.dataset(root / "decisions", partitioning="hive").to_table().to_pylist()
    scored = np.array(
        [r["features"] for r in decisions if r["chosen"] and r["model"] == "propensity"]
    )
    plan = _plan(small_config, features)
    vocab = {
        "action_id": default_vocabularies(small_config, ProfileSchema(small_config))["action_id"]
    }
    fitted = plan.as_served(table_matrix(got.table, features, vocab))

    def rows(x: np.ndarray) -> np.ndarray:
        return x[np.lexsort(x.T[::-1])]

    np.testing.assert_array_equal(rows(fitted), rows(scored))  # bit for bit
    age = got.table["age"].to_numpy()
    np.testing.assert_array_equal(age, age.astype(np.float32))
    assert set(age) <= set(ages.astype(np.float32).astype(np.float64))
    since = got.table["since_login"].to_numpy()  # float64 as served: not rounded
    assert (since != since.astype(np.float32)).any()


def test_the_demo_table_holds_what_the_shards_serve(example_config: Config) -> None:
    table = generate(example_config, customers=60, offers=3).training
    plan = _plan(example_config, DEMO_FEATURES)
    cats = {
        n: v
        for n, v in default_vocabularies(example_config, ProfileSchema(example_config)).items()
        if n in DEMO_FEATURES
    }
    x = table_matrix(table, DEMO_FEATURES, cats)
    np.testing.assert_array_equal(plan.as_served(x), x)
    income = table["income"].to_numpy()  # attributes with cents: float32 numbers here
    assert (np.round(income, 2) != income).any()
    since = table["since_last_login"].to_numpy()
    assert (since[~np.isnan(since)] != since[~np.isnan(since)].astype(np.float32)).any()
