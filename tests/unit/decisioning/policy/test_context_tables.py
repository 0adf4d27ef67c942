"""External context tables: looked up by key in rules, checked against their spec,
stored by version, and swapped on a shard in one step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from actors.shard import Shard
from decisioning.config import Config
from decisioning.config.loader import config_from_dict
from decisioning.errors import ConfigError, InvalidInput
from decisioning.policy.context import ContextTable, check_table, key_of, table_version
from decisioning.stores.context import ContextStore
from tests.conftest import SMALL
from tests.unit import edge
from tests.unit.decisioning.policy.test_decide import NOW, Clock

TABLES = {
    "weather": {"key": "zip", "columns": {"temp_c": "numeric", "condition": "categorical"}},
    "stock": {"key": "sku", "columns": {"units": "numeric"}, "max_rows": 3},
}


def _config(eligibility: str = "coalesce(context.weather[profile.zip].temp_c, 99) < 10") -> Config:
    attrs = [*SMALL["profile"]["attributes"], {"name": "zip", "type": "numeric"}]
    actions = [
        {
            "id": "umbrella",
            "group": "g",
            "channels": ["web"],
            "value": 10,
            "eligibility": eligibility,
        },
        {"id": "other", "group": "g", "channels": ["web"], "value": 1},
    ]
    return config_from_dict(
        {
            **SMALL,
            "profile": {**SMALL["profile"], "attributes": attrs},
            "actions": actions,
            "context_tables": TABLES,
            "decisioning": {"default_propensity": 0.5},
        }
    )


def _weather(rows: list[tuple[Any, float | None, str | None]]) -> pa.Table:
    return pa.table(
        {
            "zip": [r[0] for r in rows],
            "temp_c": pa.array([r[1] for r in rows], pa.float64()),
            "condition": [r[2] for r in rows],
            "ignored": [0] * len(rows),
        }
    )


def _push(shard: Shard, table: pa.Table, name: str = "weather") -> str:
    checked = check_table(name, shard.config.context_tables[name], table)
    version = shard.stage_context(name, table_version(checked), checked)
    shard.commit_context(name)
    return version


def _shown(shard: Shard, cid: str = "c") -> list[str]:
    return [
        a["action_id"]
        for a in edge.decide(shard, {"customer_id": cid, "channel": "web"})["actions"]
    ]


def test_a_rule_reads_the_row_of_the_customers_key() -> None:
    shard = Shard(0, _config(), clock=Clock())
    edge.apply_events(
        shard,
        [{"customer_id": "c", "type": "profile_update", "ts": NOW, "properties": {"zip": 10115}}],
    )
    assert _shown(shard) == ["other"]  # no table yet: the lookup is null
    v1 = _push(shard, _weather([("10115", 4.0, "rain"), ("20095", 12.0, "dry")]))
    assert _shown(shard)[0] == "umbrella"  # 10115.0 in the profile, "10115" in the table
    assert _shown(shard, "nobody") == ["other"]  # no zip: null key, no row
    v2 = _push(shard, _weather([(10115, 15.0, "dry")]))  # a new version swaps the whole
    assert v2 != v1 and _shown(shard) == ["other"]
    assert shard.context_status()["weather"]["rows"] == 1
    assert shard.status()["context_tables"]["weather"]["version"] == v2


def test_lookups_in_rules_are_checked_at_load() -> None:
    for rule, message in (
        ("context.rain[profile.zip].temp_c > 1", "unknown context table column 'rain.temp_c'"),
        ("context.weather[profile.zip].wind > 1", "unknown context table column 'weather.wind'"),
        ("profile.zip[1].a > 1", "only context.<table>[key].<column> lookups"),
        ("profile.zip[1] > 1", "indexing ([...]) is not allowed"),
        ("context.weather[profile.zip] > 1", "indexing ([...]) is not allowed"),
        ("context.weather[profile.zip].condition > 1", "compare"),
    ):
        with pytest.raises(ConfigError) as e:
            _config(rule)
        assert message in str(e.value), (rule, str(e.value))


def test_tables_are_checked_against_their_spec() -> None:
    spec = _config().context_tables["weather"]
    ok = check_table("weather", spec, _weather([("1", 1.0, "dry")]))
    assert ok.column_names == ["zip", "temp_c", "condition"]  # extra columns dropped
    for table, message in (
        (pa.table({"zip": ["1"], "temp_c": [1.0]}), "missing column(s) condition"),
        (pa.table({"zip": ["1"], "temp_c": ["warm"], "condition": ["x"]}), "wrong type"),
        (_weather([(None, 1.0, "x")]), "null in some rows"),
    ):
        with pytest.raises(InvalidInput) as e:
            check_table("weather", spec, table)
        assert message in e.value.message and e.value.code == "invalid_table"
    stock = _config().context_tables["stock"]
    with pytest.raises(InvalidInput, match="at most 3"):
        check_table("stock", stock, pa.table({"sku": list("abcd"), "units": [1, 2, 3, 4]}))


def test_keys_compare_as_text() -> None:
    assert key_of(10115) == key_of(10115.0) == key_of("10115") == "10115"
    assert key_of(1.5) == "1.5" and key_of(None) is None and key_of(float("nan")) is None
    t = ContextTable.build(
        "weather", _config().context_tables["weather"], _weather([(7, None, None)]), "v"
    )
    assert t.get(7.0, "temp_c") is None and t.get("7", "condition") is None
    assert t.get("8", "temp_c") is None


def test_a_swap_is_one_step_for_the_decisions_of_a_shard() -> None:
    same = (
        "context.weather['a'].temp_c == context.weather['b'].temp_c "
        "and context.weather['a'].temp_c > 0"
    )
    shard = Shard(0, _config(same), clock=Clock())
    for v in range(1, 6):
        table = _weather([("a", float(v), "dry"), ("b", float(v), "dry")])
        checked = check_table("weather", shard.config.context_tables["weather"], table)
        shard.stage_context("weather", table_version(checked), checked)
        assert _shown(shard)[0] == ("umbrella" if v > 1 else "other")  # staged: not served
        shard.commit_context("weather")
        assert _shown(shard)[0] == "umbrella"


def test_unknown_tables_are_refused_by_the_shard() -> None:
    shard = Shard(0, _config(), clock=Clock())
    with pytest.raises(InvalidInput) as e:
        shard.stage_context("nope", "v", _weather([]))
    assert e.value.code == "unknown_table"


def test_the_store_keeps_versions_and_the_current_one(tmp_path: Path) -> None:
    store = ContextStore(str(tmp_path))
    assert store.current() == {}
    spec = _config().context_tables["weather"]
    versions = []
    for v in range(7):
        t = check_table("weather", spec, _weather([("1", float(v), "dry")]))
        versions.append(table_version(t))
        store.save("weather", t, versions[-1])
    assert store.current() == {"weather": versions[-1]}
    assert store.load("weather", versions[-1]).column("temp_c").to_pylist() == [6.0]
    kept = sorted(p.name for p in (tmp_path / "context" / "weather").glob("*.parquet"))
    assert len(kept) == ContextStore.KEEP and f"{versions[-1]}.parquet" in kept


def test_a_lookup_context_field_joins_the_table_into_the_model_features() -> None:
    import lightgbm as lgb
    import numpy as np

    from decisioning.policy.scoring import ModelBundle, ModelManifest, sha256_text

    attrs = [*SMALL["profile"]["attributes"], {"name": "zip", "type": "numeric"}]
    cfg = config_from_dict(
        {
            **SMALL,
            "profile": {**SMALL["profile"], "attributes": attrs},
            "context": [
                {
                    "name": "temp_c",
                    "type": "numeric",
                    "lookup": "context.weather[profile.zip].temp_c",
                }
            ],
            "actions": [
                {
                    "id": "ice_cream",
                    "group": "g",
                    "channels": ["web"],
                    "value": 1,
                    "model": "propensity",
                    "applicability": "coalesce(context.temp_c, 0) > 0",
                },
            ],  # fmt: skip
            "context_tables": TABLES,
        }
    )
    rng = np.random.default_rng(0)
    temp = rng.uniform(-10, 35, 600)
    y = (temp + rng.normal(0, 3, 600) > 15).astype(float)
    ds = lgb.Dataset(temp.reshape(-1, 1), y, feature_name=["context_temp_c"])
    params = {"objective": "binary", "verbose": -1, "num_threads": 1, "min_data_in_leaf": 5}
    text = lgb.train(params, ds, num_boost_round=20).model_to_string()
    manifest = ModelManifest("propensity", 1, ["context_temp_c"], sha256_text(text), {})
    shard = Shard(0, cfg, [ModelBundle.verified(manifest, text)], clock=Clock())
    edge.apply_events(
        shard,
        [
            {"customer_id": z, "type": "profile_update", "ts": NOW, "properties": {"zip": zip_}}
            for z, zip_ in (("hot", 1), ("cold", 2))
        ],
    )
    _push(shard, _weather([(1, 30.0, "dry"), (2, -5.0, "snow")]))

    def first(cid: str, **request: Any) -> dict[str, Any]:
        d = edge.decide(shard, {"customer_id": cid, "channel": "web", "explain": True, **request})
        return d["explanation"][0]

    hot, cold = first("hot"), first("cold")
    assert hot["eligible"] and hot["propensity"] > 0.8  # 30 °C from the table
    assert not cold["eligible"] and cold["values"] == {"context.temp_c": -5.0}
    # a value in the request wins over the lookup
    assert first("cold", context={"temp_c": 28.0})["propensity"] > 0.8
