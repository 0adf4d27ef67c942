"""If any shard refuses, none switches: models, catalogs and context tables.

Shard 1 runs with a config of its own, as a node would whose secrets or config lag
behind: no signing key in its environment (it refuses every model) and no `weather`
context table (it refuses a catalog that reads it and every version of the table).
Shard 0 accepts all three. Each change must leave both shards, and what is stored, as
they were.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import ray

from actors.remote import ShardActor
from decisioning.config import Config
from decisioning.config.loader import config_from_dict
from decisioning.policy.scoring import read_model_dir
from decisioning.stores.registry import Registry
from tests.integration.harness import Server, Session, running_server
from training.demo import generate
from training.train import train


def _lagging(config: Config) -> Config:
    """The server's config as shard 1 has it: no weather table, signed models only."""
    data = config.model_dump(mode="json", exclude_none=True)
    data["context_tables"] = {}
    weights = data["decisioning"]["context_weights"]
    data["decisioning"]["context_weights"] = [w for w in weights if "weather" not in w["when"]]
    data["auth"]["model_key_env"] = "NB_TEST_MODEL_KEY_NOT_ON_THIS_NODE"
    return config_from_dict(data, "shard-1.yaml")


@pytest.fixture(scope="module")
def server(session: Session, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    def start_shard_1(config: Config) -> None:  # the supervisor adopts it by its name
        s = config.server
        actor = (
            ray.remote(ShardActor)
            .options(
                name="shard-1",
                namespace=s.namespace,
                lifetime="detached",
                max_restarts=-1,
                max_task_retries=0,
                num_cpus=0,
                resources=s.shard_resources or None,
            )
            .remote(1, _lagging(config))
        )
        ray.get(actor.ready.remote(), timeout=120)

    data_dir = tmp_path_factory.mktemp("data-refusal")
    with running_server(session, data_dir, "refusal", before_start=start_shard_1) as s:
        yield s


def _shards(client: httpx.Client) -> list[dict[str, Any]]:
    r = client.get("/v1/status")
    assert r.status_code == 200, r.text
    return list(r.json()["shards"])


def test_a_model_one_shard_refuses_is_served_by_none(
    server: Server, client: httpx.Client, tmp_path: Path
) -> None:
    before = [s["models"] for s in _shards(client)]
    assert before[0] == {"propensity": server.model.manifest.ref}
    assert before[1] == {}  # it refused the deployed model at start, and started anyway
    data = generate(server.config, customers=150, offers=4, seed=5)
    new = train(data.training, server.config, rounds=20, out_dir=str(tmp_path / "m"),
                progress=lambda m: None)  # fmt: skip
    bundle = read_model_dir(new.path)
    body = {"manifest": bundle.manifest.to_dict(), "model_text": bundle.model_text}
    r = client.post("/v1/models/deploy", json=body)
    assert r.status_code == 422 and r.json()["error"]["code"] == "model_refused", r.text
    assert "NB_TEST_MODEL_KEY_NOT_ON_THIS_NODE" in r.json()["error"]["message"]
    assert [s["models"] for s in _shards(client)] == before  # shard 0 did not switch
    versions = Registry(server.config.server.data_dir).versions("propensity")
    assert versions == [server.model.manifest.version]  # nothing registered


def test_a_catalog_one_shard_refuses_is_served_by_none(client: httpx.Client) -> None:
    before = client.get("/v1/catalog").json()
    versions = [s["catalog_version"] for s in _shards(client)]
    catalog = {k: copy.deepcopy(before[k]) for k in ("actions", "decisioning")}
    catalog["actions"][0]["lever"] = 3.0  # a change; its weights read the weather table
    r = client.put("/v1/catalog", json=catalog)
    assert r.status_code == 422, r.text
    assert "weather" in r.json()["error"]["message"]
    assert [s["catalog_version"] for s in _shards(client)] == versions
    assert client.get("/v1/catalog").json() == before  # nothing stored


def test_a_context_table_one_shard_refuses_is_served_by_none(client: httpx.Client) -> None:
    rows = {"rows": [{"region": "north", "temp_c": 3.0, "condition": "rain"}]}
    r = client.put("/v1/context/weather", json=rows)
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_table", r.text
    assert [s["context_tables"] for s in _shards(client)] == [{}, {}]
    assert client.get("/v1/context").json()["weather"]["shards"] == [None, None]
