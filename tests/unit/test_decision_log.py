"""Decision and outcome logs: what was scored is what is logged, byte for byte; files
roll by size and time, are readable with pyarrow.dataset, and forget erased customers."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pytest

from actors.shard import Shard
from decisioning.arbitration import LoadedModel
from decisioning.config import Config, LogsSpec
from decisioning.decision_log import DecisionLog
from decisioning.model import LightGBMScorer
from tests.unit.models import tiny_model
from tests.unit.test_decide import NOW, Clock


class Recording:
    """Wraps a model's scorer to keep every matrix it was asked to score."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.seen: list[np.ndarray] = []

    def predict(self, x: np.ndarray) -> np.ndarray:
        self.seen.append(x.copy())
        return self.inner.predict(x)  # type: ignore[attr-defined]


def _shard(config: Config, root: Path, log_dir: Path | None = None, **spec: object) -> Shard:
    # uncompressed: the erasure tests scan the bytes of the files
    logs = DecisionLog(str(root), 0, LogsSpec(**{"roll_s": 3600, "compression": "none", **spec}))
    return Shard(
        0, config, [tiny_model(config)], clock=Clock(), log_dir=log_dir and str(log_dir), logs=logs
    )


def _profile(shard: Shard, cid: str, age: float, views: int = 0) -> None:
    events = [{"customer_id": cid, "type": "profile_update", "ts": NOW, "properties": {"age": age}}]
    events += [{"customer_id": cid, "type": "page_view", "ts": NOW, "properties": {}}] * views
    shard.apply_events(events)


def _read(root: Path, kind: str) -> list[dict]:
    if not (root / kind).exists():
        return []
    return ds.dataset(root / kind, partitioning="hive").to_table().to_pylist()


def test_logged_features_are_the_ones_scored_byte_for_byte(
    small_config: Config, tmp_path: Path
) -> None:
    root = tmp_path / "logs"
    shard = _shard(small_config, root)
    model = shard.models["propensity"]
    recording = Recording(model.scorer)
    shard.models["propensity"] = LoadedModel(model.manifest, recording, model.plan)  # type: ignore[arg-type]
    answers = []
    for i in range(20):
        _profile(shard, f"c-{i}", 20 + i, views=i % 4)
        answers.append(
            shard.decide({"customer_id": f"c-{i}", "channel": "web", "context": {"k": i}})
        )
    shard.decide({"customer_id": "c-0", "channel": "web", "dry_run": True})  # not logged
    shard.logs.flush()
    rows = _read(root, "decisions")
    assert {r["decision_id"] for r in rows} == {a["decision_id"] for a in answers}
    assert {r["date"] for r in rows} == {"2023-11-14"}  # the partition, from the decision ts
    scored = [r for r in rows if r["model_version"] is not None]
    seen = np.vstack(recording.seen[:-1])  # the last was the dry run's
    logged = np.array([r["features"] for r in scored])
    assert logged.shape == seen.shape == (40, 4)  # card and loan, for 20 decisions
    # the same rows, with the same float64 bits
    assert sorted(r.tobytes() for r in logged) == sorted(r.tobytes() for r in seen)
    # and they give the logged propensity back when scored again with LightGBM
    reference = LightGBMScorer(tiny_model(small_config).model_text)
    np.testing.assert_array_equal(
        reference.predict(logged), np.array([r["propensity"] for r in scored])
    )
    by_decision = {a["decision_id"]: a for a in answers}
    for r in rows:
        answer = by_decision[r["decision_id"]]
        chosen = [a["action_id"] for a in answer["actions"]]
        assert r["chosen"] == (r["action_id"] in chosen)
        assert r["probability"] == (1.0 if chosen and r["action_id"] == chosen[0] else 0.0)
        assert r["variant"] == "champion"
        if r["chosen"]:
            logged_priority = r["priority"]
            answered = next(a for a in answer["actions"] if a["action_id"] == r["action_id"])
            assert logged_priority == answered["priority"]  # same bits as the answer
            assert r["rank"] == chosen.index(r["action_id"])
    assert rows[0]["context"].startswith('{"k":')


def test_outcomes_are_logged_once(small_config: Config, tmp_path: Path) -> None:
    root = tmp_path / "logs"
    shard = _shard(small_config, root)
    _profile(shard, "c-1", 40)
    d = shard.decide({"customer_id": "c-1", "channel": "web"})
    first = d["actions"][0]["action_id"]
    outcome = {"decision_id": d["decision_id"], "action_id": first, "outcome": "accept"}
    shard.record_outcomes([outcome])
    shard.record_outcomes([outcome])  # a retry
    shard.logs.flush()
    rows = _read(root, "outcomes")
    assert [(r["decision_id"], r["action_id"], r["customer_id"], r["outcome"]) for r in rows] == [
        (d["decision_id"], first, "c-1", "accept")
    ]


def test_files_roll_by_size_and_by_time_and_the_writer_bounds_memory(
    small_config: Config, tmp_path: Path
) -> None:
    root = tmp_path / "logs"
    shard = _shard(small_config, root, roll_rows=5, max_pending=1)
    for i in range(30):
        _profile(shard, f"c-{i}", 30)
        shard.decide({"customer_id": f"c-{i}", "channel": "web"})
    shard.logs.flush()
    files = list((root / "decisions").rglob("*.parquet"))
    assert len(files) >= 10  # 3 candidates a decision, 5 rows a file
    assert len({r["decision_id"] for r in _read(root, "decisions")}) == 30
    assert not list(root.rglob(".*"))  # no half-written file left behind
    timed = DecisionLog(str(tmp_path / "timed"), 0, LogsSpec(roll_s=0.05))
    idle = Shard(0, small_config, [tiny_model(small_config)], clock=Clock(), logs=timed)
    _profile(idle, "c-1", 30)
    idle.decide({"customer_id": "c-1", "channel": "web"})
    deadline = time.monotonic() + 30
    while not list((tmp_path / "timed").rglob("*.parquet")):  # nobody calls the shard again
        assert time.monotonic() < deadline, "an idle shard's log was never written"
        time.sleep(0.01)
    idle.close()


def _holds(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_erasure_rewrites_the_log_files_before_the_wal_tombstone_goes(
    small_config: Config, tmp_path: Path
) -> None:
    root, wal = tmp_path / "logs", tmp_path / "wal"
    shard = _shard(small_config, root, log_dir=wal)
    for cid in ("erase-me-please", "keep-me"):
        _profile(shard, cid, 33.0)
        d = shard.decide({"customer_id": cid, "channel": "web"})
        shard.record_outcomes(
            [
                {
                    "decision_id": d["decision_id"],
                    "action_id": d["actions"][0]["action_id"],
                    "outcome": "click",
                }
            ]
        )
    shard.logs.flush()  # in files now
    _profile(shard, "erase-me-please", 34.0)
    shard.decide({"customer_id": "erase-me-please", "channel": "web"})  # and one buffered
    assert _holds(root, b"keep-me")  # the scan can see ids in the files
    shard.erase_profile("erase-me-please")
    shard.flush()  # starts the snapshot; its thread rewrites the logs first
    shard._writing.done.wait()
    shard.flush()
    shard.logs.flush()
    assert _holds(tmp_path, b"erase-me-please") == []
    assert {r["customer_id"] for r in _read(root, "decisions")} == {"keep-me"}
    assert {r["customer_id"] for r in _read(root, "outcomes")} == {"keep-me"}
    shard.close()


def test_a_crash_before_the_log_rewrite_redoes_it(small_config: Config, tmp_path: Path) -> None:
    root, wal = tmp_path / "logs", tmp_path / "wal"
    shard = _shard(small_config, root, log_dir=wal)
    _profile(shard, "erase-me-please", 33.0)
    shard.decide({"customer_id": "erase-me-please", "channel": "web"})
    shard.logs.flush()
    shard.erase_profile("erase-me-please")
    shard.wal.commit()  # the tombstone is durable; then the process dies (no snapshot)
    assert _holds(root, b"erase-me-please")
    again = _shard(small_config, root, log_dir=wal)  # replays the tombstone
    again.flush()
    again._writing.done.wait()
    again.flush()
    assert _holds(tmp_path, b"erase-me-please") == []
    again.close()


@pytest.mark.parametrize("durable", [False, True])
def test_no_eligible_action_is_logged_as_a_do_nothing_row(
    small_config: Config, tmp_path: Path, durable: bool
) -> None:
    root = tmp_path / "logs"
    shard = _shard(small_config, root, log_dir=tmp_path / "wal" if durable else None)
    d = shard.decide({"customer_id": "nobody", "channel": "email"})  # card needs age >= 18
    assert d["actions"] == []
    shard.logs.flush()
    (row,) = _read(root, "decisions")
    assert row["action_id"] is None and row["chosen"] is False and row["features"] == []
    shard.close()
