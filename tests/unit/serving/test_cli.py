"""The CLI as a user runs it (no server needed): demo, train, models list, bad input."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from decisioning.config import Config
from decisioning.stores.registry import Registry
from serving.cli import app
from tests.conftest import EXAMPLE
from tests.unit import edge

runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"NEXTBEST_DATA_DIR": str(tmp_path / "data"), "NEXTBEST_PORT": "1"}


def test_demo_then_train_then_list(tmp_path: Path, env: dict[str, str]) -> None:
    out = tmp_path / "demo"
    r = runner.invoke(
        app, ["demo", "--config", str(EXAMPLE), "--customers", "150", "--out", str(out)], env=env
    )
    assert r.exit_code == 0, r.output
    assert (out / "training.parquet").exists() and (out / "events.parquet").exists()
    r = runner.invoke(
        app,
        ["train", str(out / "training.parquet"), "--config", str(EXAMPLE), "--rounds", "20"],
        env=env,
    )
    assert r.exit_code == 0, r.output
    assert "round 20/20" in r.output  # progress is shown
    assert "propensity@1: AUC" in r.output
    assert "nextbest models deploy" in r.output
    assert Registry(env["NEXTBEST_DATA_DIR"]).versions("propensity") == [1]
    r = runner.invoke(app, ["models", "list", "--config", str(EXAMPLE)], env=env)
    assert r.exit_code == 0 and "propensity@1" in r.output
    assert "server not reachable" in r.output


def test_user_errors_are_messages_not_tracebacks(tmp_path: Path, env: dict[str, str]) -> None:
    r = runner.invoke(
        app, ["train", str(tmp_path / "nope.parquet"), "--config", str(EXAMPLE)], env=env
    )
    assert r.exit_code == 1 and "cannot read" in r.output
    bad = tmp_path / "bad.yaml"
    text, n = re.subn(r"shards: \d+", "shards: zero", EXAMPLE.read_text())
    assert n == 1
    bad.write_text(text)
    r = runner.invoke(app, ["models", "list", "--config", str(bad)], env=env)
    assert r.exit_code == 2
    assert "bad.yaml: server.shards" in r.output
    r = runner.invoke(app, ["models", "deploy", str(tmp_path), "--config", str(EXAMPLE)], env=env)
    assert r.exit_code == 1 and "manifest.json not found" in r.output


def test_status_table_shows_each_shard(small_config: Config, tmp_path: Path) -> None:
    from actors.shard import Shard
    from decisioning.journal.fencing import Fenced
    from serving.cli.render import status_table
    from tests.unit.decisioning.policy.test_decide import NOW, Clock

    ev = {"customer_id": "c", "type": "page_view", "ts": NOW, "event_id": "1"}
    old = Shard(0, small_config, clock=Clock(), log_dir=str(tmp_path / "s0"))
    edge.apply_events(old, [ev, ev])
    new = Shard(0, small_config, clock=Clock(), log_dir=str(tmp_path / "s0"))  # took over
    with pytest.raises(Fenced):
        old.flush()
    table = status_table([new.status(), old.status(), {"shard": 1, "ready": False}])
    lines = table.splitlines()
    assert lines[0].split() == [
        "shard", "ready", "gen", "restarts", "customers", "slots", "wal", "snapshot",
        "recovered", "scorer", "events", "decisions", "dupes",
    ]  # fmt: skip
    assert lines[1].split()[:6] == ["0", "yes", "2", "1", "1", "16,384"]  # no map: every slot
    assert "0+1 in" in lines[1]  # recovered: no snapshot, one WAL record
    assert lines[2].split()[:5] == ["0", "FENCED", "1", "0", "1"]
    assert lines[2].split()[-3:] == ["1", "0", "1"]  # events, decisions, duplicates
    assert lines[3].split()[:2] == ["1", "no"]
