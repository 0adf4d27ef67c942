"""Decision and outcome logs: what was scored is what is logged, byte for byte; files
roll by size and time, are readable with pyarrow.dataset, and forget erased customers;
a failing disk loses no row and writes none twice."""

from __future__ import annotations

import errno
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pytest

from actors.shard import Shard
from decisioning.config import Config, LogsSpec
from decisioning.policy.decide import LoadedModel
from decisioning.policy.scoring import LightGBMScorer
from decisioning.stores.decision_log import DecisionLog
from tests.unit import edge
from tests.unit.decisioning.policy.test_decide import NOW, Clock
from tests.unit.models import tiny_model


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
    edge.apply_events(shard, events)


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
            edge.decide(shard, {"customer_id": f"c-{i}", "channel": "web", "context": {"k": i}})
        )
    edge.decide(shard, {"customer_id": "c-0", "channel": "web", "dry_run": True})  # not logged
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
    d = edge.decide(shard, {"customer_id": "c-1", "channel": "web"})
    first = d["actions"][0]["action_id"]
    outcome = {"decision_id": d["decision_id"], "action_id": first, "outcome": "accept"}
    edge.record_outcomes(shard, [outcome])
    edge.record_outcomes(shard, [outcome])  # a retry
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
        edge.decide(shard, {"customer_id": f"c-{i}", "channel": "web"})
    shard.logs.flush()
    files = list((root / "decisions").rglob("*.parquet"))
    assert len(files) >= 10  # 3 candidates a decision, 5 rows a file
    assert len({r["decision_id"] for r in _read(root, "decisions")}) == 30
    assert not list(root.rglob(".*"))  # no half-written file left behind
    timed = DecisionLog(str(tmp_path / "timed"), 0, LogsSpec(roll_s=0.05))
    idle = Shard(0, small_config, [tiny_model(small_config)], clock=Clock(), logs=timed)
    _profile(idle, "c-1", 30)
    edge.decide(idle, {"customer_id": "c-1", "channel": "web"})
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
        d = edge.decide(shard, {"customer_id": cid, "channel": "web"})
        edge.record_outcomes(
            shard,
            [
                {
                    "decision_id": d["decision_id"],
                    "action_id": d["actions"][0]["action_id"],
                    "outcome": "click",
                }
            ],
        )
    shard.logs.flush()  # in files now
    _profile(shard, "erase-me-please", 34.0)
    edge.decide(shard, {"customer_id": "erase-me-please", "channel": "web"})  # and one buffered
    assert _holds(root, b"keep-me")  # the scan can see ids in the files
    edge.erase_profile(shard, "erase-me-please")
    shard.flush()  # starts the snapshot; its thread rewrites the logs first
    shard.durability.writing.done.wait()
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
    edge.decide(shard, {"customer_id": "erase-me-please", "channel": "web"})
    shard.logs.flush()
    edge.erase_profile(shard, "erase-me-please")
    shard.wal.commit()  # the tombstone is durable; then the process dies (no snapshot)
    assert _holds(root, b"erase-me-please")
    again = _shard(small_config, root, log_dir=wal)  # replays the tombstone
    again.flush()
    again.durability.writing.done.wait()
    again.flush()
    assert _holds(tmp_path, b"erase-me-please") == []
    again.close()


@pytest.mark.parametrize("durable", [False, True])
def test_no_eligible_action_is_logged_as_a_do_nothing_row(
    small_config: Config, tmp_path: Path, durable: bool
) -> None:
    root = tmp_path / "logs"
    shard = _shard(small_config, root, log_dir=tmp_path / "wal" if durable else None)
    d = edge.decide(shard, {"customer_id": "nobody", "channel": "email"})  # card needs age >= 18
    assert d["actions"] == []
    shard.logs.flush()
    (row,) = _read(root, "decisions")
    assert row["action_id"] is None and row["chosen"] is False and row["features"] == []
    shard.close()


class FlakyDisk(pafs.FileSystemHandler):
    """A real local filesystem that refuses new files (ENOSPC) while told to fail: after
    `fail(after=n)`, n more files are written, then none until `recover()`."""

    def __init__(self) -> None:
        self.fs = pafs.LocalFileSystem()
        self.allowed: int | None = None  # None: healthy

    def fail(self, after: int = 0) -> None:
        self.allowed = after

    def recover(self) -> None:
        self.allowed = None

    def open_output_stream(self, path: str, metadata: Any) -> Any:
        if self.allowed is not None:
            if self.allowed <= 0:
                raise OSError(errno.ENOSPC, "No space left on device (injected)", path)
            self.allowed -= 1
        return self.fs.open_output_stream(path, metadata=metadata)

    def get_type_name(self) -> str:
        return "flaky-local"

    def normalize_path(self, path: str) -> str:
        return self.fs.normalize_path(path)

    def get_file_info(self, paths: list[str]) -> list[pafs.FileInfo]:
        return self.fs.get_file_info(paths)

    def get_file_info_selector(self, selector: pafs.FileSelector) -> list[pafs.FileInfo]:
        return self.fs.get_file_info(selector)

    def create_dir(self, path: str, recursive: bool) -> None:
        self.fs.create_dir(path, recursive=recursive)

    def delete_dir(self, path: str) -> None:
        self.fs.delete_dir(path)

    def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
        self.fs.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self) -> None:
        raise OSError("not in a test")

    def delete_file(self, path: str) -> None:
        self.fs.delete_file(path)

    def move(self, src: str, dest: str) -> None:
        self.fs.move(src, dest)

    def copy_file(self, src: str, dest: str) -> None:
        self.fs.copy_file(src, dest)

    def open_input_stream(self, path: str) -> Any:
        return self.fs.open_input_stream(path)

    def open_input_file(self, path: str) -> Any:
        return self.fs.open_input_file(path)

    def open_append_stream(self, path: str, metadata: Any) -> Any:
        return self.fs.open_append_stream(path, metadata=metadata)


class Gate:
    """The writer's wait between retries, held shut by the test (which never sleeps):
    records each delay asked for and lets `allow(n)` more retries through."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self._cv = threading.Condition()
        self._permits = 0

    def __call__(self, seconds: float) -> None:
        with self._cv:
            self.delays.append(seconds)
            self._cv.notify_all()
            self._cv.wait_for(lambda: self._permits > 0, timeout=60)
            self._permits -= 1

    def allow(self, n: int) -> None:
        with self._cv:
            self._permits += n
            self._cv.notify_all()

    def until(self, done: Callable[[], bool]) -> None:
        with self._cv:
            assert self._cv.wait_for(done, timeout=30), "the writer never got there"


def _candidate_rows(root: Path) -> list[tuple[Any, ...]]:
    keys = ("customer_id", "ts", "action_id", "chosen", "position", "propensity", "date")
    return sorted(tuple(r[k] for k in keys) for r in _read(root, "decisions"))


def _outcome_rows(root: Path) -> list[tuple[Any, ...]]:
    return sorted((r["customer_id"], r["action_id"], r["outcome"]) for r in _read(root, "outcomes"))


def _traffic(shard: Shard, clock: Clock, customers: range, days: int = 2) -> None:
    """Decisions over `days` UTC days, and an outcome for each (a batch of many files)."""
    for day in range(days):
        clock.t = NOW + day * 86400.0
        for i in customers:
            cid = f"c-{i}" if i != 3 else "erase-me-please"
            _profile(shard, cid, 20 + i, views=i % 3)
            d = edge.decide(shard, {"customer_id": cid, "channel": "web"})
            if d["actions"]:
                _outcome = {"decision_id": d["decision_id"], "outcome": "click"}
                edge.record_outcomes(
                    shard, [{**_outcome, "action_id": d["actions"][0]["action_id"]}]
                )


def _logging_shard(config: Config, root: Path, **kw: Any) -> tuple[Shard, Clock]:
    """A durable shard (erasure rewrites its log files at the next snapshot)."""
    clock = Clock()
    logs = DecisionLog(str(root / "logs"), 0, LogsSpec(roll_s=3600, compression="none"), **kw)
    shard = Shard(
        0, config, [tiny_model(config)], clock=clock, log_dir=str(root / "wal"), logs=logs
    )
    return shard, clock


def test_a_failing_disk_loses_no_row_and_writes_none_twice(
    small_config: Config, tmp_path: Path
) -> None:
    healthy, hclock = _logging_shard(small_config, tmp_path / "healthy")
    disk, gate = FlakyDisk(), Gate()
    flaky, fclock = _logging_shard(
        small_config, tmp_path / "flaky", fs=pafs.PyFileSystem(disk), sleep=gate
    )
    for shard, clock in ((healthy, hclock), (flaky, fclock)):
        _traffic(shard, clock, range(0, 6))
    disk.fail(after=1)  # the batch's first file is written, then the disk is full
    assert flaky.logs.flush(timeout=0) is False  # rolled; not written (and no hang)
    gate.allow(3)
    gate.until(lambda: len(gate.delays) == 4)
    assert gate.delays == [0.5, 1.0, 2.0, 4.0]  # backing off, each retry refused
    error = flaky.logs.status()["write_error"]
    assert "No space left on device" in error["message"] and error["retries"] == 3
    assert error["rows_waiting"] > 0 and error["since"]
    for shard, clock in ((healthy, hclock), (flaky, fclock)):
        _traffic(shard, clock, range(3, 9), days=1)  # more rows wait behind the first batch
        edge.erase_profile(shard, "erase-me-please")  # out of the files and of the retry queue
    assert flaky.logs.flush(timeout=0) is False
    holding = _holds(tmp_path / "flaky" / "logs", b"erase-me-please")  # written before
    disk.recover()
    gate.allow(1_000)
    for shard in (healthy, flaky):
        assert shard.logs.flush() is True
    # what waited for a retry was written without the erased customer's rows
    assert _holds(tmp_path / "flaky" / "logs", b"erase-me-please") == holding
    for shard in (healthy, flaky):
        shard.flush()  # the snapshot: its thread rewrites the files that hold erased rows
        assert shard.durability.writing is not None
        shard.durability.writing.done.wait()
        shard.flush()
    status = flaky.logs.status()
    assert status["write_error"] is None and status["buffered"] == 0
    assert status["write_failures"] == 4 and status["unwritable_rows"] == 0
    rows = _candidate_rows(tmp_path / "flaky" / "logs")
    assert rows == _candidate_rows(tmp_path / "healthy" / "logs")  # none lost, none twice
    assert {r[-1] for r in rows} == {"2023-11-14", "2023-11-15"}
    assert _outcome_rows(tmp_path / "flaky" / "logs") == _outcome_rows(
        tmp_path / "healthy" / "logs"
    )
    assert "erase-me-please" not in {r[0] for r in rows}
    assert _holds(tmp_path, b"erase-me-please") == []
    for shard in (healthy, flaky):
        shard.close()


def test_close_on_a_broken_disk_gives_up_and_says_how_many_rows_it_lost(
    small_config: Config, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    disk, gate = FlakyDisk(), Gate()
    shard, clock = _logging_shard(small_config, tmp_path, fs=pafs.PyFileSystem(disk), sleep=gate)
    disk.fail()
    _traffic(shard, clock, range(0, 4))
    assert shard.logs.flush(timeout=0.05) is False  # a bounded wait, not forever
    gate.until(lambda: len(gate.delays) >= 1)
    waiting = shard.logs.status()["write_error"]["rows_waiting"]
    lost: list[int] = []
    with caplog.at_level(logging.ERROR, logger="nextbest.logs"):
        closing = threading.Thread(
            target=lambda: lost.append(shard.logs.close(timeout=0.05)), daemon=True
        )
        closing.start()
        closing.join(timeout=60)  # (a close that waited for the disk forever fails here)
    assert lost == [waiting] and waiting > 0
    assert any(
        f"{waiting} decision and outcome log rows not written" in r.message for r in caplog.records
    )
    gate.allow(1)  # the abandoned writer wakes up and stops
