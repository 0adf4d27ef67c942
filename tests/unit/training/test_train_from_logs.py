"""Training from the logs: the examples are the shown candidates with their logged
features, labelled by outcomes inside the window; the model version says so."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest
from typer.testing import CliRunner

from actors.shard import Shard
from decisioning.config import Config, LogsSpec
from decisioning.stores.decision_log import DecisionLog
from decisioning.stores.registry import Registry
from serving.cli import app
from tests.unit import edge
from tests.unit.decisioning.policy.test_decide import NOW, Clock
from tests.unit.models import tiny_model
from training.from_logs import parse_window, table_from_logs
from training.train import TrainingError, train


def _logged(config: Config, tmp_path: Path, customers: int = 400) -> tuple[Path, Clock, Shard]:
    registry = Registry(config.server.data_dir)
    registry.register(tiny_model(config))
    registry.set_deployed("propensity", 1)
    root = tmp_path / "logs"
    clock = Clock()
    shard = Shard(
        0,
        config,
        registry.deployed_bundles(),
        clock=clock,
        logs=DecisionLog(str(root), 0, LogsSpec(roll_s=3600)),
    )
    rng = np.random.default_rng(1)
    for i in range(customers):
        cid, age = f"c-{i}", float(rng.integers(18, 80))
        views = int(rng.integers(0, 6))
        edge.apply_events(
            shard,
            [{"customer_id": cid, "type": "profile_update", "ts": NOW, "properties": {"age": age}}]
            + [{"customer_id": cid, "type": "page_view", "ts": NOW, "properties": {}}] * views,
        )
        d = edge.decide(shard, {"customer_id": cid, "channel": "web", "limit": 1})
        if d["actions"] and rng.random() < 0.1 + 0.15 * views:  # views drive accepts
            edge.record_outcomes(
                shard,
                [
                    {
                        "decision_id": d["decision_id"],
                        "action_id": d["actions"][0]["action_id"],
                        "outcome": "accept",
                        "ts": NOW + 60,
                    }
                ],
            )
    return root, clock, shard


def test_the_training_table_is_what_was_shown_as_it_was_scored(
    small_config: Config, tmp_path: Path
) -> None:
    root, clock, shard = _logged(small_config, tmp_path)
    shard.logs.flush()
    got = table_from_logs(str(root), small_config, window_s=3600, progress=lambda m: None)
    logged = ds.dataset(root / "decisions", partitioning="hive").to_table().to_pylist()
    shown = [r for r in logged if r["chosen"] and r["model"] == "propensity"]
    assert (
        got.table.num_rows == len(shown)
        and got.features == tiny_model(small_config).manifest.features
    )
    accepted = {
        (r["decision_id"], r["action_id"])
        for r in ds.dataset(root / "outcomes", partitioning="hive").to_table().to_pylist()
    }
    labels = got.table["label"].to_pylist()
    assert sum(labels) == len(accepted) > 20
    # numeric features exactly as logged; categorical ones back to their strings
    ages = got.table["age"].to_pylist()
    assert sorted(ages) == sorted(r["features"][0] for r in shown)
    assert set(got.table["action_id"].to_pylist()) <= {"card", "loan"}
    assert got.info["rows"] == len(shown) and got.info["logged_versions"] == ["propensity@1"]
    result = train(
        got.table,
        small_config,
        features=got.features,
        rounds=20,
        training_info=got.info,
        progress=lambda m: None,
    )
    m = result.manifest
    assert m.version == 2 and m.training["source"] == "logs"
    assert m.training["data_from"] <= m.training["data_to"]
    assert len(m.metrics["calibration"]) == 10
    assert set(m.metrics["auc_by_action"]) <= {"card", "loan"}
    assert m.metrics["champion"]["version"] == "propensity@1"  # compared on the same rows
    page = (Path(result.path) / "report.html").read_text()
    assert page.count("<svg") == 3 and "propensity@1 (champion)" in page


def test_window_and_positives_decide_the_label(small_config: Config, tmp_path: Path) -> None:
    root, clock, shard = _logged(small_config, tmp_path, customers=50)
    clock.t = NOW + 4 * 3600
    d = edge.decide(shard, {"customer_id": "c-1", "channel": "web", "limit": 1})
    out = {"decision_id": d["decision_id"], "action_id": d["actions"][0]["action_id"]}
    clock.t = NOW + 6 * 3600  # two hours after the decision
    edge.record_outcomes(shard, [{**out, "outcome": "convert"}])
    edge.record_outcomes(shard, [{**out, "outcome": "reject"}])
    shard.logs.flush()

    def label(**kw: object) -> float:
        t = table_from_logs(str(root), small_config, progress=lambda m: None, **kw).table
        ts = t["ts"].to_pylist()
        return t["label"].to_pylist()[ts.index(NOW + 4 * 3600)]

    assert label(window_s=3 * 3600) == 1.0
    assert label(window_s=3600) == 0.0  # too late
    assert label(window_s=3 * 3600, positives=("accept",)) == 0.0  # convert is not asked
    assert parse_window("30m") == 1800 and parse_window("7d") == 7 * 86400
    with pytest.raises(TrainingError):
        parse_window("soon")
    with pytest.raises(TrainingError, match="no decision logs"):
        table_from_logs(str(tmp_path / "nothing"), small_config, progress=lambda m: None)


def test_cli_trains_from_logs_with_progress(small_config: Config, tmp_path: Path) -> None:
    root, _, shard = _logged(small_config, tmp_path, customers=300)
    shard.logs.flush()
    cfg = tmp_path / "small.yaml"
    from tests.conftest import SMALL

    cfg.write_text(
        json.dumps(
            {**SMALL, "server": {**SMALL["server"], "data_dir": small_config.server.data_dir}}
        )
    )
    r = CliRunner().invoke(
        app,
        [
            "train",
            "--from-logs",
            "--logs",
            str(root),
            "--config",
            str(cfg),
            "--rounds",
            "20",
            "--window",
            "1h",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "shown candidates" in r.output and "round 20/20" in r.output
    assert "report:" in r.output and "propensity@2" in r.output
    r = CliRunner().invoke(app, ["train", "--config", str(cfg)])
    assert r.exit_code == 1 and "--from-logs" in r.output
    r = CliRunner().invoke(
        app, ["train", "--from-logs", "--positive", "like", "--config", str(cfg)]
    )
    assert r.exit_code == 1 and "not outcomes: like" in r.output


def test_log_files_of_an_older_schema_still_read(small_config: Config, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    root, _, shard = _logged(small_config, tmp_path, customers=120)
    shard.logs.flush()
    current = next((root / "decisions").rglob("*.parquet"))
    old = pq.read_table(current).drop_columns(["position", "shadow_version", "shadow_propensity"])
    pq.write_table(old, current.parent / "shard-9-older.parquet")
    got = table_from_logs(str(root), small_config, progress=lambda m: None)
    shown = pq.read_table(current).filter(pc.field("chosen")).num_rows
    assert got.table.num_rows == 2 * shown  # both files, the old one with nulls


def test_retrain_promotes_only_over_a_comparable_champion() -> None:
    from training.retrain import decide_promotion

    assert decide_promotion({"auc": 0.6}, 0.01, has_champion=False)[0]
    assert not decide_promotion({"auc": 0.9}, 0.01, has_champion=True)[0]  # no comparison
    champion = {"version": "p@1", "auc": 0.70}
    assert decide_promotion({"auc": 0.72, "champion": champion}, 0.01)[0]
    assert not decide_promotion({"auc": 0.705, "champion": champion}, 0.01)[0]


def test_open_windows_are_left_out(small_config: Config, tmp_path: Path) -> None:
    root, _, shard = _logged(small_config, tmp_path, customers=50)
    shard.logs.flush()
    with pytest.raises(TrainingError, match="window has closed"):
        table_from_logs(
            str(root), small_config, window_s=3600, now=NOW + 1800, progress=lambda m: None
        )
    got = table_from_logs(
        str(root),
        small_config,
        window_s=3600,
        now=NOW + 1800,
        include_open=True,
        progress=lambda m: None,
    )
    assert got.table.num_rows > 0 and got.info["open_windows_included"]
