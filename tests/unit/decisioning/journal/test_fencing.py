"""Generations: a shard presumed dead but still running can neither acknowledge nor
corrupt anything once a newer instance of it has taken its directory over."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from actors.messages import GetProfile
from actors.remote import ShardActor
from actors.shard import Shard
from decisioning.config import Config
from decisioning.journal import snapshot
from decisioning.journal.fencing import OWNER, Fenced, Owner
from decisioning.journal.wal import segments
from serving.errors import http_error
from tests.unit import edge
from tests.unit.decisioning.policy.test_decide import NOW, Clock


def _views(customer: str, *ids: str, ts: float = NOW) -> list[dict]:
    return [{"customer_id": customer, "type": "page_view", "ts": ts, "event_id": i} for i in ids]


def test_a_fenced_writer_acknowledges_nothing_and_corrupts_nothing(
    small_config: Config, tmp_path: Path
) -> None:
    d = str(tmp_path)
    old = Shard(0, small_config, clock=Clock(), log_dir=d)
    edge.apply_events(old, _views("c", "e1"))
    old.flush()  # acknowledged
    new = Shard(0, small_config, clock=Clock(), log_dir=d)  # took over: old presumed dead
    assert new.owner is not None and old.owner is not None
    assert new.owner.generation == old.owner.generation + 1
    assert edge.get_profile(new, "c")["aggregates"]["views_all"] == 1.0

    edge.apply_events(old, _views("c", "e2"))  # still running, it applies a request...
    with pytest.raises(Fenced):
        old.flush()  # ...but may not acknowledge it
    with pytest.raises(Fenced):
        old.snapshot()
    # worst case, a stale writer past its checks: more records, a new segment, a snapshot
    assert old.wal is not None
    old.wal.append(["e", [["c", "page_view", NOW, {}, "e9"]]])
    old.wal.rotate()
    old.wal.append(["e", [["c", "page_view", NOW, {}, "e10"]]])
    blob, ends, matrices = old.store.export()
    snapshot.write(
        d,
        snapshot.State(old.wal.seq + 5, old.schema.layout_key, blob, ends, matrices),
        old.owner.generation,
    )

    edge.apply_events(new, _views("c", "e3"))
    new.flush()
    digest = new.state_digest()
    assert edge.get_profile(new, "c")["aggregates"]["views_all"] == 2.0  # e1 and e3

    again = Shard(0, small_config, clock=Clock(), log_dir=d)  # new crashed; restart
    assert again.state_digest() == digest  # nothing the stale writer did counts
    assert edge.get_profile(again, "c")["aggregates"]["views_all"] == 2.0
    # its files from after the fence are gone; its first segment stays (it holds e1),
    # read only up to where it ended when the new owner fenced it
    stale = [f for _, g, f in segments(d) + snapshot.snapshots(d) if g == old.owner.generation]
    assert stale == ["wal-000000000001-g000001.log"], os.listdir(d)


def test_a_fenced_shard_actor_answers_with_a_503_error(
    small_config: Config, tmp_path: Path
) -> None:
    data = small_config.model_dump(mode="json")
    data["server"]["data_dir"] = str(tmp_path)
    data["server"]["shards"] = 1  # shard 0 owns customer "c" (it starts with the map)
    from decisioning.config.loader import config_from_dict

    cfg = config_from_dict(data, "small.yaml")
    old = ShardActor(0, cfg)
    now = time.time()  # a ShardActor runs on the real clock
    assert old.call("apply_events", edge.events(_views("c", "e1", ts=now))) == 1
    ShardActor(0, cfg)  # the same shard, restarted elsewhere
    calls = [
        ("apply_events", (edge.events(_views("c", "e2", ts=now)),)),
        ("get_profile", (GetProfile("c"),)),
    ]
    answers = old.call_many(calls)
    assert [type(a).__name__ for a in answers] == ["Fenced", "Fenced"]
    assert http_error(answers[0]).code == "shard_unavailable"
    assert old.status()["fenced"] is True


def test_two_starts_never_share_a_generation(tmp_path: Path) -> None:
    d = str(tmp_path)
    a, _ = Owner.take_over(d)
    b, _ = Owner.take_over(d)
    assert b.generation > a.generation
    with pytest.raises(Fenced):
        a.check()
    b.check()
    # a claim left by a start that crashed before writing OWNER.json is skipped too
    open(os.path.join(d, f"claim-{b.generation + 1:06d}"), "w").close()
    c, _ = Owner.take_over(d)
    assert c.generation == b.generation + 2


def test_a_start_that_crashed_while_recovering_loses_nothing(
    small_config: Config, tmp_path: Path
) -> None:
    d = str(tmp_path)
    first = Shard(0, small_config, clock=Clock(), log_dir=d)
    edge.apply_events(first, _views("c", "e1", "e2"))
    first.snapshot()
    edge.apply_events(first, _views("c", "e3"))
    first.flush()
    digest = first.state_digest()
    Owner.take_over(d)  # fenced the directory, then died before settling it
    with open(os.path.join(d, OWNER)) as f:
        assert '"settled": false' in f.read()
    after = Shard(0, small_config, clock=Clock(), log_dir=d)
    assert after.state_digest() == digest
    assert after.recovery["snapshot_profiles"] == 1 and after.recovery["wal_records"] == 1


def test_a_directory_from_before_generations_is_recovered(
    small_config: Config, tmp_path: Path
) -> None:
    d = str(tmp_path)
    first = Shard(0, small_config, clock=Clock(), log_dir=d)
    edge.apply_events(first, _views("c", "e1"))
    first.snapshot()
    edge.apply_events(first, _views("c", "e2"))
    first.flush()
    digest = first.state_digest()
    for f in os.listdir(d):  # the names and files of the version before generations
        if f == OWNER or f.startswith("claim-"):
            os.remove(os.path.join(d, f))
        elif "-g" in f:
            stem, _, rest = f.partition("-g")
            os.rename(os.path.join(d, f), os.path.join(d, stem + rest[6:]))
    assert sorted(os.listdir(d)) == ["snapshot-000000000002", "wal-000000000002.log"]
    after = Shard(0, small_config, clock=Clock(), log_dir=d)
    assert after.state_digest() == digest


def test_restarts_count_starts_after_a_crash_not_after_a_clean_stop(
    small_config: Config, tmp_path: Path
) -> None:
    d = str(tmp_path)

    def start() -> Shard:
        return Shard(0, small_config, clock=Clock(), log_dir=d)

    first = start()
    assert first.recovery["restarts"] == 0  # a first start
    edge.apply_events(first, _views("c", "e1"))
    first.flush()
    crashed_after = start()  # no stop(): the one before crashed
    assert crashed_after.recovery["restarts"] == 1
    crashed_after.stop()
    with pytest.raises(Fenced, match="stopped"):
        crashed_after.flush()  # a stopped shard acknowledges nothing
    after_stop = start()
    assert after_stop.recovery["restarts"] == 1  # a clean stop is not a restart
    assert after_stop.recovery["snapshot_profiles"] == 1  # stop() took a snapshot
    assert after_stop.recovery["wal_records"] == 0
    start()  # crash again, even while recovering (never settled)...
    Owner.take_over(d)
    assert start().recovery["restarts"] == 4
