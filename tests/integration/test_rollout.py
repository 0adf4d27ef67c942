"""Promotion, rollback and challenger splits on a running server: every shard switches
at once under load, no request fails, a customer's variant is sticky."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx

from decisioning.stores.registry import Registry
from tests.integration.harness import Server, during, nextbest
from training.demo import generate
from training.train import train


def test_promote_rollback_and_split_under_load(
    server: Server, client: httpx.Client, tmp_path: Path
) -> None:
    registry = Registry(server.config.server.data_dir)
    data = generate(server.config, customers=200, offers=4, seed=11)
    new = train(
        data.training,
        server.config,
        rounds=25,
        out_dir=str(tmp_path / "m"),
        progress=lambda m: None,
    )
    deployed = nextbest("models", "deploy", str(tmp_path / "m"), "--url", server.url)
    assert deployed.returncode == 0, deployed.stderr
    old = registry.aliases("propensity").previous[-1]
    old_ref, new_ref = f"propensity@{old}", new.manifest.ref

    # rollback: every shard back to the champion before, no request lost
    rolled, versions = during(
        server, lambda: nextbest("models", "rollback", "propensity", "--url", server.url), "roll"
    )  # every decision meanwhile answered 200
    assert rolled.returncode == 0, rolled.stderr
    assert f"champion {old_ref}" in rolled.stdout
    assert set(versions) <= {old_ref, new_ref} and versions[-1] == old_ref
    assert registry.aliases("propensity").champion == old

    # promote it again, over HTTP
    promoted, versions = during(
        server,
        lambda: client.post(
            "/v1/models/propensity/promote", json={"version": new.manifest.version}
        ),
        "roll",
    )
    assert promoted.status_code == 200, promoted.text
    assert versions[-1] == new_ref

    # a challenger for half of the customers: sticky, close to the share
    split = nextbest(
        "models",
        "split",
        "propensity",
        "--version",
        str(old),
        "--share",
        "0.5",
        "--url",
        server.url,
    )
    assert split.returncode == 0, split.stderr
    assert f"challenger {old_ref} for 50% of customers" in split.stdout
    seen: dict[str, tuple[str, str]] = {}
    for round_ in range(2):
        for i in range(300):
            d = client.post("/v1/decide", json={"customer_id": f"ab-{i}", "channel": "web"}).json()
            got = (d["variant"], d["model_version"])
            assert got[1] == (old_ref if got[0] == "challenger" else new_ref)
            if round_:
                assert seen[f"ab-{i}"] == got  # sticky
            seen[f"ab-{i}"] = got
    share = sum(v == "challenger" for v, _ in seen.values()) / len(seen)
    assert 0.4 < share < 0.6, share
    d = client.post("/v1/decide", json={"customer_id": "ab-1", "channel": "web"}).json()
    if d["actions"]:
        for o in ("impression", "accept"):
            out = {"decision_id": d["decision_id"], "action_id": d["actions"][0]["action_id"]}
            assert client.post("/v1/outcomes", json={**out, "outcome": o}).status_code == 200
    stats = client.get("/v1/models/stats").json()["models"]["propensity"]
    by_version = {v["version"]: v for v in stats["versions"]}
    assert by_version[old_ref]["alias"] == "challenger"
    assert by_version[new_ref]["alias"] == "champion"
    assert by_version[old_ref]["decisions"] > 0 and by_version[new_ref]["decisions"] > 0
    if d["actions"]:
        assert by_version[seen["ab-1"][1]]["accept"] >= 1
    shown = nextbest("models", "stats", "--url", server.url)
    assert shown.returncode == 0 and old_ref in shown.stdout and "challenger" in shown.stdout
    ended = nextbest("models", "split", "propensity", "--end", "--url", server.url)
    assert ended.returncode == 0, ended.stderr
    assert all(not s["challengers"] for s in client.get("/v1/models").json()["shards"])
    assert registry.aliases("propensity").champion == new.manifest.version


def test_a_tampered_version_is_not_promoted_and_the_champion_keeps_serving(
    server: Server, client: httpx.Client
) -> None:
    registry = Registry(server.config.server.data_dir)
    champion = registry.aliases("propensity").champion
    assert champion is not None
    good = registry.read("propensity", champion)
    bad_version = registry.next_version("propensity")
    bad_dir = server.data_dir / "models" / "propensity" / str(bad_version)
    bad_dir.mkdir(parents=True)
    manifest = {**good.manifest.to_dict(), "version": bad_version}
    (bad_dir / "manifest.json").write_text(json.dumps(manifest))
    (bad_dir / "model.txt").write_text(good.model_text.replace("Tree=0", "Tree=0 ", 1))
    try:
        r = client.post("/v1/models/propensity/promote", json={"version": bad_version})
        assert r.status_code == 409 and "sha256" in r.json()["error"]["message"], r.text
        assert registry.aliases("propensity").champion == champion
        d = client.post("/v1/decide", json={"customer_id": "t-1", "channel": "web"})
        assert d.status_code == 200 and d.json()["model_version"] == good.manifest.ref
    finally:
        shutil.rmtree(bad_dir)


def test_rollout_mistakes_are_clear_errors(client: httpx.Client) -> None:
    r = client.post("/v1/models/nonexistent/promote", json={"version": 1})
    assert (r.status_code, r.json()["error"]["code"]) == (404, "unknown_model")
    r = client.post("/v1/models/propensity/promote", json={"version": 999})
    assert r.status_code == 409 and "not in the registry" in r.json()["error"]["message"]
    r = client.post("/v1/models/propensity/split", json={"version": 1, "share": 2})
    assert r.status_code == 422
    r = client.post("/v1/models/..%2Fetc/rollback")
    assert r.status_code in (404, 422)
