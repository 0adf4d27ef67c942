"""Context tables on the running server: pushed as rows or Parquet (also by the CLI),
broadcast to every shard, read by rules, and swapped atomically under decisions."""

from __future__ import annotations

import copy
import io
import os
import subprocess

import httpx
import pyarrow as pa
import pyarrow.parquet as pq

from tests.conftest import EXAMPLE
from tests.integration.harness import ALL_SCOPES_KEY, CLI, Deciding, Server

ACTION = "weather_check"
SAME = (
    "context.weather['north'].temp_c == context.weather['south'].temp_c "
    "and context.weather['north'].temp_c > 0"
)


def _rows(v: float) -> dict[str, list[dict[str, object]]]:
    return {
        "rows": [{"region": r, "temp_c": v, "condition": "dry"} for r in ("north", "south", "east")]
    }


def test_push_rows_and_parquet_and_see_every_shard_serve_it(
    server: Server, client: httpx.Client
) -> None:
    r = client.put("/v1/context/weather", json=_rows(12.5))
    assert r.status_code == 200, r.text
    v1 = r.json()
    assert (v1["table"], v1["rows"], v1["shards"]) == ("weather", 3, 2)
    shards = client.get("/v1/context").json()["weather"]["shards"]
    assert [s["version"] for s in shards] == [v1["version"]] * 2
    buf = io.BytesIO()
    pq.write_table(pa.table({"region": ["north"], "temp_c": [3.0], "condition": ["rain"]}), buf)
    r = client.put(
        "/v1/context/weather",
        content=buf.getvalue(),
        headers={"content-type": "application/vnd.apache.parquet"},
    )
    assert r.status_code == 200 and r.json()["rows"] == 1 and r.json()["version"] != v1["version"]
    # the CLI, from a CSV file
    env = {**os.environ, "NEXTBEST_API_KEY": ALL_SCOPES_KEY}
    weather = os.path.join(os.path.dirname(EXAMPLE), "weather.csv")
    out = subprocess.run(
        [CLI, "context", "load", "weather", weather, "--url", server.url, "--config", EXAMPLE],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "4 rows served by 2 shards" in out.stdout


def test_bad_tables_are_refused_and_nothing_changes(client: httpx.Client) -> None:
    before = client.get("/v1/context").json()["weather"]["shards"]
    for body, status, code in (
        ({"rows": [{"region": "north", "temp_c": 1.0}]}, 422, "invalid_table"),
        ({"rows": [{"region": "north", "temp_c": "warm", "condition": "x"}]}, 422, "invalid_table"),
        ({"rows": [{"region": None, "temp_c": 1.0, "condition": "x"}]}, 422, "invalid_table"),
        ({"rows": "north"}, 422, "invalid_table"),
        ({"table": []}, 422, "invalid_table"),
    ):
        r = client.put("/v1/context/weather", json=body)
        assert (r.status_code, r.json()["error"]["code"]) == (status, code), (body, r.text)
    r = client.put("/v1/context/nope", json=_rows(1))
    assert (r.status_code, r.json()["error"]["code"]) == (404, "unknown_table")
    r = client.put(
        "/v1/context/weather",
        content=b"PAR1 nonsense",
        headers={"content-type": "application/x-parquet"},
    )
    assert (r.status_code, r.json()["error"]["code"]) == (422, "invalid_table")
    assert client.get("/v1/context").json()["weather"]["shards"] == before


def test_a_swap_is_atomic_under_concurrent_decisions(server: Server, client: httpx.Client) -> None:
    """An action that is eligible only while two rows agree: every version has them
    equal, so a decision that saw half of one version and half of another would lose it."""
    assert client.put("/v1/context/weather", json=_rows(1.0)).status_code == 200
    before = client.get("/v1/catalog").json()
    catalog = {k: copy.deepcopy(before[k]) for k in ("actions", "decisioning")}
    catalog["actions"].append(
        {"id": ACTION, "group": "service", "channels": ["web"], "value": 1e9,
         "eligibility": SAME}
    )  # fmt: skip
    assert client.put("/v1/catalog", json=catalog).status_code == 200
    try:
        body = lambda c: {"customer_id": c, "channel": "web", "limit": 1}  # noqa: E731
        with Deciding(server, "ctx", threads=3, customers=150, body=body) as load:
            load.wait_for(10)
            for v in range(2, 12):  # ten swaps, each with decisions around it
                r = client.put("/v1/context/weather", json=_rows(float(v)))
                assert r.status_code == 200, r.text
                load.wait_for(load.done + 5)
        misses = [d for d in load.answers if [a["action_id"] for a in d["actions"]] != [ACTION]]
        assert len(load.answers) >= 60
        assert misses == []
    finally:
        assert client.post("/v1/catalog/rollback").status_code == 200
