"""Deploying models into running shards: under load, refused, tampered."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from decisioning.policy.scoring import ModelManifest, read_model_dir
from decisioning.stores.registry import Registry
from tests.integration.harness import Deciding, Server, nextbest
from training.demo import generate
from training.train import train


def served(client: httpx.Client) -> set[str]:
    return {s["models"]["propensity"] for s in client.get("/v1/models").json()["shards"]}


def test_deploy_while_requests_flow_loses_none(
    server: Server, client: httpx.Client, tmp_path: Path
) -> None:
    data = generate(server.config, customers=200, offers=4, seed=3)
    v2 = train(
        data.training,
        server.config,
        rounds=30,
        out_dir=str(tmp_path / "v2"),
        progress=lambda m: None,
    )
    with Deciding(server, "load") as load:
        load.wait_for(20)  # the old model answers first
        result = nextbest("models", "deploy", str(tmp_path / "v2"), "--url", server.url)
        load.wait_for(load.done + 20)  # and the new one after
    assert result.returncode == 0, result.stderr
    assert f"deployed {v2.manifest.ref} to 2 shards" in result.stdout
    versions = load.versions()  # every answer was a 200 (Deciding fails on any other)
    assert len(versions) >= 40
    assert versions[0] == server.model.manifest.ref
    assert versions[-1] == v2.manifest.ref
    assert served(client) == {v2.manifest.ref}
    # compiled once by the supervisor, checked and loaded by every shard
    shards = client.get("/v1/status").json()["shards"]
    assert [s["scorers"] for s in shards] == [{"propensity": "native"}] * len(shards)
    listing = nextbest("models", "list", "--url", server.url)
    assert v2.manifest.ref in listing.stdout


def test_incompatible_model_is_refused_and_the_old_one_keeps_serving(
    server: Server, client: httpx.Client, tmp_path: Path
) -> None:
    before = served(client)
    bundle = read_model_dir(server.model.path)
    m = bundle.manifest.to_dict()
    bad = {**m, "version": 99, "features": ["age", "shoe_size", *m["features"][2:]]}
    r = client.post("/v1/models/deploy", json={"manifest": bad, "model_text": bundle.model_text})
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "model_refused"
    assert "shoe_size" in r.json()["error"]["message"]
    assert served(client) == before
    assert 99 not in Registry(server.config.server.data_dir).versions("propensity")
    d = client.post("/v1/decide", json={"customer_id": "x", "channel": "web"}).json()
    assert d["model_version"] in before


def test_tampered_model_is_refused(server: Server, client: httpx.Client, tmp_path: Path) -> None:
    before = served(client)
    bundle = read_model_dir(server.model.path)
    tampered = bundle.model_text.replace("Tree=1\n", "Tree=1\n\n", 1)
    m = {**bundle.manifest.to_dict(), "version": 98}
    r = client.post("/v1/models/deploy", json={"manifest": m, "model_text": tampered})
    assert r.status_code == 422 and "sha256" in r.json()["error"]["message"]
    # the CLI refuses a tampered directory before sending anything
    d = tmp_path / "tampered"
    d.mkdir()
    (d / "model.txt").write_text(tampered)
    (d / "manifest.json").write_text(json.dumps(ModelManifest.from_dict(m).to_dict()))
    result = nextbest("models", "deploy", str(d), "--url", server.url)
    assert result.returncode == 1 and "sha256" in result.stderr
    assert served(client) == before
