"""The bench's in-actor decision runs the request path: each decision goes through
`run_calls` on a shard with a write-ahead log, so the figure includes the WAL append
and the group commit with the configured fsync policy."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.common import bench_config
from bench.in_process import in_actor
from decisioning.config.loader import load_config
from decisioning.journal.records import DecisionMade, decode
from decisioning.journal.wal import Replay, replay, segments
from decisioning.stores.registry import Registry
from training.demo import generate
from training.train import train

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("fsync", ["batch", "always"])
def test_the_in_actor_decision_is_logged_and_committed_like_a_request(
    tmp_path: Path, fsync: str
) -> None:
    env = {"NEXTBEST_FSYNC": fsync}
    cfg = bench_config(load_config(ROOT / "examples" / "nextbest.yaml", env), str(tmp_path), 1)
    model = train(generate(cfg, customers=300, offers=5).training, cfg, rounds=3)
    Registry(str(tmp_path)).set_deployed("propensity", model.manifest.version)
    wal_dir = str(tmp_path / "wal")
    figures = in_actor(cfg, wal_dir, n=40)
    assert figures["fsync"] == fsync and figures["commit_us"] > 0
    assert figures["total_us"] > figures["commit_us"] + figures["scoring_us"]
    rows = replay(
        wal_dir,
        [(f, os.path.getsize(os.path.join(wal_dir, f))) for _, _, f in segments(wal_dir)],
        Replay(),
    )
    made = [r for r in map(decode, rows) if isinstance(r, DecisionMade)]
    assert len(made) == 200 + 40  # the warm-up and the measured decisions, each in the WAL
