"""The supervisor over in-process shards: a model, a catalog or a context table one
shard refuses is served by none and stored nowhere; one all accept is stored and served
by all (the protocol of actors/fleet.py, without Ray).

Shard 1 lags as a node would whose secrets or config lag behind: no signing key in its
environment (it refuses every model) and no `weather` context table (it refuses a
catalog that reads it and every version of the table). Shard 0 accepts all three.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from actors.fleet import LocalFleet
from actors.shard import Shard
from actors.supervisor import Supervisor
from decisioning.config import Config
from decisioning.config.loader import config_from_dict
from decisioning.policy.scoring import ModelBundle, ModelManifest, sign
from decisioning.stores.catalogs import CatalogStore
from decisioning.stores.context import ContextStore
from decisioning.stores.registry import Aliases, Registry
from tests.conftest import SMALL
from tests.unit.decisioning.policy.test_decide import Clock
from tests.unit.models import tiny_model

KEY = b"0123456789abcdef0123456789abcdef"
KEY_ENV = "NB_SUPERVISOR_TEST_MODEL_KEY"
WEATHER = {"key": "zip", "columns": {"temp_c": "numeric", "condition": "categorical"}}
COLD = "coalesce(context.weather[profile.zip].temp_c, 99) < 10"


def _config(data_dir: Path, *, lagging: bool = False) -> Config:
    attrs = [*SMALL["profile"]["attributes"], {"name": "zip", "type": "numeric"}]
    return config_from_dict(
        {
            **SMALL,
            "profile": {**SMALL["profile"], "attributes": attrs},
            "context_tables": {} if lagging else {"weather": WEATHER},
            "auth": {"model_key_env": KEY_ENV + ("_NOT_ON_THIS_NODE" if lagging else "")},
            "server": {**SMALL["server"], "data_dir": str(data_dir)},
        },
        "lagging.yaml" if lagging else "small.yaml",
    )


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Config:
    monkeypatch.setenv(KEY_ENV, KEY.decode())
    return _config(tmp_path / "data")


def _signed(config: Config, rounds: int = 10) -> ModelBundle:
    bundle = tiny_model(config, rounds=rounds)
    return replace(bundle, manifest=sign(bundle.manifest, KEY))


def _registered(config: Config, *rounds: int) -> list[ModelBundle]:
    """Versions 1, 2, ... of the model in the registry (version 1 the champion)."""
    registry = Registry(config.server.data_dir)
    out = []
    for v, r in enumerate(rounds, start=1):
        b = _signed(config, r)
        m = sign(ModelManifest(**{**b.manifest.to_dict(), "version": v}), KEY)
        out.append(ModelBundle.verified(registry.register(replace(b, manifest=m)), b.model_text))
    registry.set_deployed("propensity", 1)
    return out


def _shards(config: Config, models: list[ModelBundle], lagging: bool) -> list[Shard]:
    second = _config(Path(config.server.data_dir), lagging=True) if lagging else config
    return [Shard(i, c, models, clock=Clock()) for i, c in enumerate((config, second))]


def _served(shards: list[Shard]) -> list[Any]:
    return [
        (s.model_versions(), s.challenger_versions(), s.catalog.version, s.context_status())
        for s in shards
    ]


def _weather() -> pa.Table:
    return pa.table({"zip": [10115], "temp_c": [4.0], "condition": ["rain"]})


def test_a_model_one_shard_refuses_is_served_by_none_and_not_registered(config: Config) -> None:
    shards = _shards(config, [], lagging=True)
    supervisor = Supervisor(config, LocalFleet(shards))
    bundle = _signed(config)
    answer = supervisor.deploy_model(bundle.manifest.to_dict(), bundle.model_text)
    assert type(answer).__name__ == "ModelIntegrityError", answer
    assert KEY_ENV + "_NOT_ON_THIS_NODE" in str(answer)
    assert _served(shards) == [({}, {}, s.catalog.version, {}) for s in shards]
    assert Registry(config.server.data_dir).versions("propensity") == []
    assert shards[0].commit_model("propensity") == ""  # shard 0's staged model was dropped


def test_a_model_every_shard_accepts_is_registered_then_served_by_all(config: Config) -> None:
    shards = _shards(config, [], lagging=False)
    supervisor = Supervisor(config, LocalFleet(shards))
    bundle = _signed(config)
    answer = supervisor.deploy_model(bundle.manifest.to_dict(), bundle.model_text)
    assert answer == {"deployed": "propensity@1", "shards": 2}
    assert [s.model_versions() for s in shards] == [{"propensity": "propensity@1"}] * 2
    assert Registry(config.server.data_dir).aliases("propensity") == Aliases(champion=1)


def test_a_roll_out_one_shard_refuses_switches_none_and_keeps_the_aliases(
    config: Config,
) -> None:
    v1, _ = _registered(config, 6, 7)
    shards = _shards(config, [v1], lagging=True)  # shard 1 refused v1 at start, and started
    supervisor = Supervisor(config, LocalFleet(shards))
    before = _served(shards)
    assert before[0][0] == {"propensity": "propensity@1"} and before[1][0] == {}
    for op, args in (("promote", (2,)), ("split", (2, 0.5))):
        answer = supervisor.roll_out("propensity", op, *args)
        assert type(answer).__name__ == "ModelIntegrityError", (op, answer)
        assert _served(shards) == before
        assert Registry(config.server.data_dir).aliases("propensity") == Aliases(champion=1)
    shards[0].commit_model("propensity")  # nothing staged is left to switch to
    assert _served(shards) == before


def test_roll_outs_every_shard_accepts_switch_all(config: Config) -> None:
    v1, _ = _registered(config, 6, 7)
    shards = _shards(config, [v1], lagging=False)
    supervisor = Supervisor(config, LocalFleet(shards))
    split = supervisor.roll_out("propensity", "split", 2, 0.25)
    assert (split["challenger"], split["share"], split["shards"]) == (2, 0.25, 2), split
    challenger = {"propensity": {"version": "propensity@2", "share": 0.25, "shadow": False}}
    assert [s.challenger_versions() for s in shards] == [challenger] * 2
    ended = supervisor.roll_out("propensity", "split")  # no version: the split ends
    assert ended["challenger"] is None, ended
    assert [s.challenger_versions() for s in shards] == [{}, {}]
    supervisor.roll_out("propensity", "promote", 2)
    assert [s.model_versions() for s in shards] == [{"propensity": "propensity@2"}] * 2
    supervisor.roll_out("propensity", "rollback")
    assert [s.model_versions() for s in shards] == [{"propensity": "propensity@1"}] * 2
    assert Registry(config.server.data_dir).aliases("propensity").champion == 1
    unknown = supervisor.roll_out("nothing", "promote", 1)
    assert unknown.code == "unknown_model", unknown


def _catalog_reading_weather(supervisor: Supervisor) -> dict[str, Any]:
    catalog = supervisor.catalog()
    actions = [{**a, "eligibility": COLD} if a["id"] == "tip" else a for a in catalog["actions"]]
    return {"actions": actions, "decisioning": catalog["decisioning"]}


def test_a_catalog_one_shard_refuses_is_served_by_none_and_not_stored(config: Config) -> None:
    shards = _shards(config, [], lagging=True)
    supervisor = Supervisor(config, LocalFleet(shards))
    before, served = supervisor.catalog(), _served(shards)
    answer = supervisor.apply_catalog(_catalog_reading_weather(supervisor))
    assert type(answer).__name__ == "ConfigError" and "weather" in str(answer)
    assert _served(shards) == served
    assert supervisor.catalog() == before
    assert CatalogStore(config.server.data_dir).current() is None
    assert shards[0].commit_catalog() == before["version"]  # its staged one was dropped


def test_a_catalog_every_shard_accepts_is_stored_then_served_by_all(config: Config) -> None:
    shards = _shards(config, [], lagging=False)
    supervisor = Supervisor(config, LocalFleet(shards))
    first = supervisor.catalog()["version"]
    catalog = _catalog_reading_weather(supervisor)
    applied = supervisor.apply_catalog(catalog)
    assert applied["changed"] and not applied["rolled_back"], applied
    assert [s.catalog.version for s in shards] == [applied["version"]] * 2 != [first] * 2
    assert supervisor.catalog()["version"] == applied["version"]
    again = supervisor.apply_catalog(catalog)
    assert again == {"version": applied["version"], "changed": False, "shards": 2}
    back = supervisor.apply_catalog(None)
    assert back["rolled_back"] and back["version"] == first, back
    assert [s.catalog.version for s in shards] == [first] * 2


def test_a_context_table_one_shard_refuses_is_served_by_none_and_not_stored(
    config: Config,
) -> None:
    shards = _shards(config, [], lagging=True)
    supervisor = Supervisor(config, LocalFleet(shards))
    answer = supervisor.put_context("weather", _weather())
    assert answer.code == "unknown_table", answer
    assert [s.context_status() for s in shards] == [{}, {}]
    assert supervisor.context_tables()["weather"]["shards"] == [None, None]
    assert ContextStore(config.server.data_dir).current() == {}
    assert shards[0].commit_context("weather") is None  # its staged version was dropped


def test_a_context_table_every_shard_accepts_is_stored_then_served_by_all(
    config: Config,
) -> None:
    shards = _shards(config, [], lagging=False)
    supervisor = Supervisor(config, LocalFleet(shards))
    answer = supervisor.put_context("weather", _weather())
    assert (answer["table"], answer["rows"], answer["shards"]) == ("weather", 1, 2), answer
    served = supervisor.context_tables()["weather"]["shards"]
    assert [s["version"] for s in served] == [answer["version"]] * 2
    assert ContextStore(config.server.data_dir).current() == {"weather": answer["version"]}
    unknown = supervisor.put_context("stock", _weather())
    assert unknown.code == "unknown_table", unknown


def test_the_layout_names_every_shard_and_maps_every_slot(config: Config) -> None:
    supervisor = Supervisor(config, LocalFleet(_shards(config, [], lagging=False)))
    names, slot_map, _epoch = supervisor.layout()
    assert names == ["shard-0", "shard-1"]
    assert sorted(set(slot_map)) == [0, 1]
    assert [s["shard"] for s in supervisor.status()] == [0, 1]
