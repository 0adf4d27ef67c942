"""`nextbest simulate`: a candidate catalog replayed against the current one on the same
events and requests; the funnel and what is shown follow the catalogs' rules."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from typer.testing import CliRunner

from decisioning.config import Config
from decisioning.stores.catalogs import catalog_of, with_catalog
from decisioning.stores.registry import Registry
from serving.cli import app
from tests.conftest import SMALL
from tests.unit.decisioning.policy.test_decide import NOW
from tests.unit.models import tiny_model
from training.simulate import simulate


def _stream(n: int = 40) -> tuple[pa.Table, pa.Table]:
    events = pa.table(
        {
            "customer_id": [f"c-{i}" for i in range(n)],
            "type": ["profile_update"] * n,
            "ts": [NOW + i for i in range(n)],
            "properties": [json.dumps({"age": 15 + i}) for i in range(n)],
        }
    )
    requests = pa.table(
        {
            "customer_id": [f"c-{i}" for i in range(n)] * 2,
            "channel": ["web"] * (2 * n),
            "ts": [NOW + 100 + i for i in range(2 * n)],
        }
    )
    return events, requests


def _candidate(config: Config) -> Config:
    cat = catalog_of(config)
    cat["actions"][0]["eligibility"] = "profile.age >= 40"  # card for fewer customers
    cat["actions"][0]["suppress"] = [{"outcome": "impression", "count": 1, "within": "1d"}]
    cat["decisioning"]["channel_caps"] = {"web": {"per_day": 1}}
    return with_catalog(config, cat)


def test_candidate_catalog_is_compared_with_the_current(small_config: Config) -> None:
    registry = Registry(small_config.server.data_dir)
    registry.register(tiny_model(small_config))
    registry.set_deployed("propensity", 1)
    events, requests = _stream()
    cur, cand = simulate(
        small_config, _candidate(small_config), events, requests, progress=lambda m: None
    )
    assert cur.decisions == cand.decisions == 80
    # ages 15..54: card needs 18 now, 40 in the candidate
    assert cur.removed["eligibility"] < cand.removed["eligibility"]
    assert cur.removed.get("contact policy", 0) == 0
    assert cand.removed["contact policy"] > 0  # the second request of each: capped
    assert cand.nothing >= 40 and cur.nothing == 0
    assert sum(cur.shown.values()) > sum(cand.shown.values())
    assert cur.value > cand.value > 0
    assert all(k.startswith("web/") for k in cur.shown)


def test_cli_simulate(small_config: Config, tmp_path: Path) -> None:
    registry = Registry(small_config.server.data_dir)
    registry.register(tiny_model(small_config))
    registry.set_deployed("propensity", 1)
    events, requests = _stream(10)
    pq.write_table(events, tmp_path / "events.parquet")
    pq.write_table(requests, tmp_path / "requests.parquet")
    cfg = tmp_path / "small.yaml"
    cfg.write_text(
        json.dumps(
            {**SMALL, "server": {**SMALL["server"], "data_dir": small_config.server.data_dir}}
        )
    )
    new = tmp_path / "new.yaml"
    new.write_text(yaml.safe_dump(catalog_of(_candidate(small_config))))
    r = CliRunner().invoke(
        app,
        [
            "simulate",
            "--catalog",
            str(new),
            "--events",
            str(tmp_path / "events.parquet"),
            "--requests",
            str(tmp_path / "requests.parquet"),
            "--config",
            str(cfg),
        ],
    )
    assert r.exit_code == 0, r.output
    assert "expected value per decision" in r.output and "contact policy" in r.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "actions: [{id: x, group: g, channels: [web], eligibility: 'profile.age >>> 1'}]"
    )
    r = CliRunner().invoke(
        app,
        [
            "simulate",
            "--catalog",
            str(bad),
            "--events",
            str(tmp_path / "events.parquet"),
            "--requests",
            str(tmp_path / "requests.parquet"),
            "--config",
            str(cfg),
        ],
    )
    assert r.exit_code == 1 and "actions[0].eligibility" in r.output
