"""The catalog at runtime: applied on every shard at once under load, refused whole
when any rule is bad, rolled back, and shown."""

from __future__ import annotations

import copy
import os
import subprocess
from pathlib import Path

import httpx
import yaml

from tests.conftest import EXAMPLE
from tests.integration.harness import ALL_SCOPES_KEY, CLI, Server, during


def _top(client: httpx.Client, n: int = 30) -> set[str]:
    out = set()
    for i in range(n):
        d = client.post("/v1/decide", json={"customer_id": f"cat-{i}", "channel": "web"}).json()
        out |= {a["action_id"] for a in d["actions"][:1]}
    return out


def test_apply_under_load_then_roll_back(server: Server, client: httpx.Client) -> None:
    before = client.get("/v1/catalog").json()
    assert before["actions"] and "decisioning" in before
    catalog = {"actions": copy.deepcopy(before["actions"]), "decisioning": before["decisioning"]}
    student = next(a for a in catalog["actions"] if a["id"] == "student_card")
    student["lever"] = 1e6  # the business pushes one offer hard
    student["eligibility"] = None
    r, _ = during(server, lambda: client.put("/v1/catalog", json=catalog), "cat-load")
    assert r.status_code == 200, r.text  # and every decision meanwhile answered 200
    assert r.json()["changed"] and r.json()["version"] != before["version"]
    assert _top(client) == {"student_card"}
    shown = client.get("/v1/catalog").json()
    assert shown["version"] == r.json()["version"]
    assert next(a for a in shown["actions"] if a["id"] == "student_card")["lever"] == 1e6
    again = client.put("/v1/catalog", json=catalog)
    assert again.status_code == 200 and again.json()["changed"] is False

    back = client.post("/v1/catalog/rollback")
    assert back.status_code == 200, back.text
    assert back.json()["version"] == before["version"]
    assert client.get("/v1/catalog").json()["version"] == before["version"]
    assert _top(client) != {"student_card"}
    none_left = client.post("/v1/catalog/rollback")
    assert none_left.status_code == 409 and none_left.json()["error"]["code"] == "no_previous"


def test_a_bad_catalog_is_refused_whole(client: httpx.Client) -> None:
    before = client.get("/v1/catalog").json()
    bad = {"actions": copy.deepcopy(before["actions"]), "decisioning": before["decisioning"]}
    bad["actions"][0]["eligibility"] = "profile.age >= 18 and __import__('os')"
    r = client.put("/v1/catalog", json=bad)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_catalog"
    assert "actions[0].eligibility" in r.json()["error"]["message"]
    r = client.put("/v1/catalog", json={**bad, "channels": ["web"]})
    assert r.status_code == 422 and "channels" in r.json()["error"]["message"]
    r = client.put("/v1/catalog", json=[1, 2])
    assert r.status_code == 422
    assert client.get("/v1/catalog").json()["version"] == before["version"]


def test_cli_catalog_apply_takes_a_config_file(server: Server, tmp_path: Path) -> None:
    data = yaml.safe_load(EXAMPLE.read_text())
    data["decisioning"] = {**data.get("decisioning", {}), "max_per_group": 1}
    path = tmp_path / "new.yaml"
    path.write_text(yaml.safe_dump(data))
    env = {**os.environ, "NEXTBEST_API_KEY": ALL_SCOPES_KEY}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [CLI, "catalog", *args, "--config", str(EXAMPLE), "--url", server.url],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )

    applied = cli("apply", str(path))
    assert applied.returncode == 0, applied.stderr
    assert "served by 2 shards" in applied.stdout
    assert '"max_per_group": 1' in cli("show").stdout
    rolled = cli("rollback")
    assert rolled.returncode == 0 and "served again" in rolled.stdout
