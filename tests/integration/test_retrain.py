"""`nextbest retrain --once` on the running server's own logs: a version that beats the
champion is promoted on every shard; one that does not is registered and left alone."""

from __future__ import annotations

import os
import subprocess
import time

import httpx
import numpy as np
import ray

from decisioning.stores.registry import Registry
from tests.conftest import EXAMPLE
from tests.integration.harness import ALL_SCOPES_KEY, CLI, Server, wait_until


def _traffic(server: Server, client: httpx.Client) -> None:
    """Decisions for customers with profiles, and accepts that depend on their age."""
    rng = np.random.default_rng(5)
    events, decided = [], []
    for i in range(300):
        age = int(rng.integers(18, 80))
        events.append(
            {"customer_id": f"rt-{i}", "type": "profile_update", "properties": {"age": age}}
        )
    assert client.post("/v1/events", json=events).status_code == 200
    for i, ev in enumerate(events):
        d = client.post("/v1/decide", json={"customer_id": f"rt-{i}", "channel": "web"}).json()
        if d["actions"]:
            decided.append((d, ev["properties"]["age"]))
    outcomes = [
        {
            "decision_id": d["decision_id"],
            "action_id": d["actions"][0]["action_id"],
            "outcome": "accept",
            "ts": d["ts"] + 0.5,  # inside the attribution window
        }
        for d, age in decided
        if rng.random() < (0.6 if age > 50 else 0.1)
    ]
    assert client.post("/v1/outcomes", json=outcomes).status_code == 200
    ns = server.config.server.namespace
    for i in range(server.config.server.shards):  # the logs roll every minute; now, please
        ray.get(ray.get_actor(f"shard-{i}", namespace=ns).flush_logs.remote())
    last = max(d["ts"] for d, _ in decided)
    wait_until(lambda: time.time() > last + 2.1, 10, "the 2 s attribution windows to close")


def _retrain(server: Server, margin: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "NEXTBEST_DATA_DIR": str(server.data_dir),
        "NEXTBEST_API_KEY": ALL_SCOPES_KEY,
    }
    return subprocess.run(
        [
            CLI,
            "retrain",
            "--once",
            "--margin",
            margin,
            "--rounds",
            "20",
            "--lookback",
            "1d",
            "--window",
            "2s",
            "--config",
            str(EXAMPLE),
            "--url",
            server.url,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_retrain_promotes_only_a_winner(server: Server, client: httpx.Client) -> None:
    _traffic(server, client)
    registry = Registry(server.config.server.data_dir)
    before = registry.aliases("propensity").champion
    lost = _retrain(server, "1.0")  # nothing gains a whole AUC point: registered only
    assert lost.returncode == 0, lost.stdout + lost.stderr
    assert "registered, not promoted" in lost.stdout
    assert registry.aliases("propensity").champion == before
    assert max(registry.versions("propensity")) > before
    won = _retrain(server, "-1.0")  # any model wins
    assert won.returncode == 0, won.stdout + won.stderr
    newest = max(registry.versions("propensity"))
    assert f"propensity@{newest}: promoted" in won.stdout
    assert registry.aliases("propensity").champion == newest
    served = {s["models"]["propensity"] for s in client.get("/v1/models").json()["shards"]}
    assert served == {f"propensity@{newest}"}
    m = registry.read("propensity", newest).manifest
    assert m.training["source"] == "logs" and m.training["retrain"]["margin"] == -1.0
