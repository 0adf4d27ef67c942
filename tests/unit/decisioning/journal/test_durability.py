"""Write-ahead log, snapshots and recovery of a shard, without Ray."""

from __future__ import annotations

import os
import shutil
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from actors.shard import Shard
from actors.shard.profiles import idem_key
from decisioning.config import Config
from decisioning.delivery.outbox import QueuedDecision
from decisioning.journal.snapshot import SnapshotError
from decisioning.journal.wal import Replay, Wal, replay, segments
from tests.conftest import examples
from tests.unit import edge
from tests.unit.decisioning.policy.test_decide import NOW, Clock


def test_wal_round_trip_and_torn_tail(tmp_path: Path) -> None:
    wal = Wal(str(tmp_path), fsync="always")
    for i in range(5):
        wal.append(["e", [i, "x" * i]])
    wal.close()
    path = tmp_path / "wal-000000000001-g000000.log"
    whole = path.read_bytes()
    path.write_bytes(whole[:-3])  # the last record is torn
    report = Replay()
    files = [(path.name, len(whole))]
    assert [r[1][0] for r in replay(str(tmp_path), files, report)] == [0, 1, 2, 3]
    assert report.records == 4 and report.dropped_bytes == len(whole) - 3 - path.stat().st_size
    assert report.dropped_bytes > 0
    # a flipped byte inside a record fails its checksum: cut there, not after
    data = bytearray(path.read_bytes())
    data[-2] ^= 0xFF
    path.write_bytes(bytes(data))
    report = Replay()
    assert [r[1][0] for r in replay(str(tmp_path), files, report)] == [0, 1, 2]
    # a new Wal never appends to an old (maybe torn) segment
    assert Wal(str(tmp_path)).seq == 2


def _state(shard: Shard) -> tuple:
    blob, ends, mats = shard.store.export()
    return (
        list(shard.store.ids),
        (blob, ends.tolist()),
        {k: np.nan_to_num(v, nan=-7.0).tolist() for k, v in mats.items()},
        list(shard.decisions.items()),
        shard.recent,
        list(shard.seen),
        shard.history.answers.rows(),
    )


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("event"), st.integers(0, 3), st.integers(0, 5), st.booleans()),
        st.tuples(st.just("decide"), st.integers(0, 3)),
        st.tuples(st.just("ask"), st.integers(0, 3), st.integers(0, 1)),  # with a request id
        st.tuples(st.just("outcome"), st.integers(0, 20)),
        st.tuples(st.just("snapshot")),
        st.tuples(st.just("background_snapshot")),
        st.tuples(st.just("erase"), st.integers(0, 3)),
    ),
    max_size=40,
)


def _drive(a: Shard, clock: Clock, ops: list) -> None:
    """Run `ops` on the shard, flushing after each as the actor does before it answers."""
    decisions: list[dict] = []
    answered: dict[tuple[int, int], dict] = {}  # (customer, request id) -> its answer
    for op in ops:
        clock.t += 61
        if op[0] == "event":
            _, c, n, with_id = op
            ev = {
                "customer_id": f"c{c}",
                "type": "page_view" if n % 2 else "purchase",
                "ts": clock.t - n * 700,
                "properties": {"amount": float(n), "page": "cards"},
                # ids repeat across ops: retried events must count once
                "event_id": f"e{c}-{n}" if with_id else None,
            }
            edge.apply_events(a, [ev])
        elif op[0] == "decide":
            decisions.append(edge.decide(a, {"customer_id": f"c{op[1]}", "channel": "web"}))
        elif op[0] == "ask":  # ids repeat across ops: a retry gets the answer it was given
            body = {"customer_id": f"c{op[1]}", "channel": "web", "request_id": f"r{op[2]}"}
            got = edge.decide(a, body)
            assert answered.setdefault(op[1:], got) == got
            decisions.append(got)
        elif op[0] == "outcome" and decisions:
            d = decisions[op[1] % len(decisions)]
            if d["actions"] and d["decision_id"] in a.decisions:  # not of an erased customer
                edge.record_outcomes(
                    a,
                    [
                        {
                            "decision_id": d["decision_id"],
                            "action_id": d["actions"][0]["action_id"],
                            "outcome": "click",
                        }
                    ],
                )
        elif op[0] == "snapshot":
            a.snapshot()
        elif op[0] == "erase":
            edge.erase_profile(a, f"c{op[1]}")
            answered = {k: v for k, v in answered.items() if k[0] != op[1]}  # forgotten too
        elif op[0] == "background_snapshot" and a.durability.writing is None:
            a.durability.start_snapshot()  # written meanwhile; the next flush() finishes it
        a.flush()  # what the actor does before it answers


@examples(60, HealthCheck.function_scoped_fixture)
@given(ops=OPS, torn=st.booleans())
def test_recovery_equals_the_run_without_the_crash(
    small_config: Config, tmp_path_factory: pytest.TempPathFactory, ops: list, torn: bool
) -> None:
    """Any sequence of events (retried ones too), decisions (retried request ids too),
    outcomes and snapshots, then a crash: snapshot + WAL replay rebuild exactly the
    acknowledged state, the answers given under a request id with it."""
    log_dir = str(tmp_path_factory.mktemp("shard"))
    clock = Clock()
    a = Shard(0, small_config, clock=clock, log_dir=log_dir)
    _drive(a, clock, ops)
    if a.durability.writing is not None:  # the crash comes after the file is written, before
        a.durability.writing.done.wait()  # its WAL segments are dropped
    if torn:  # the crash tore a write that was never acknowledged
        newest = os.path.join(log_dir, segments(log_dir)[-1][2])
        with open(newest, "ab") as f:
            f.write(b"\x40\x00\x00\x00\x01\x02")
    b = Shard(0, small_config, clock=clock, log_dir=log_dir)  # no close(): a crash
    assert _state(b) == _state(a)
    assert b.recovery["dropped_bytes"] == (6 if torn else 0)
    now = clock.t
    assert list(b.store.ids) == list(a.store.ids)  # erased customers stay erased
    for cid in {f"c{i}" for i in range(4)}:
        assert np.array_equal(
            b.store.features(cid, now), a.store.features(cid, now), equal_nan=True
        )


def _old_tags(row: list) -> list:
    """A record as shards before the named records wrote it (their one-letter tags, a
    bare id as the body of an erasure, the /v1/decide answer inside a queued message)."""
    tag, body = row
    bare = {"erase_profile": "erase", "forget_identity": "X", "drop_merged": "D"}
    if tag in bare:
        return [bare[tag], body[0]]
    if tag == "timer_cleared":
        return ["T", [*body, None, None]]
    if tag == "queue":
        return ["o", [*body[:5], QueuedDecision.of_row(body[5]).to_wire()]]
    letters = {"events": "e", "decision": "d", "timer_set": "T", "link": "L", "forward": "F"}
    letters |= {"fold": "M", "ack": "k", "erase_with_identity": "x"}
    return [letters.get(tag, tag), body]  # (owe, pin, unpin, cancel, absorbed: as they were)


def _rewrite(directory: str, change: Callable[[list], list]) -> None:
    """Every WAL record of `directory` rewritten by `change`, in place."""
    for *_, f in segments(directory):
        path = os.path.join(directory, f)
        rows = list(replay(directory, [(f, os.path.getsize(path))], Replay()))
        os.remove(path)
        with open(path, "wb") as out:
            for row in rows:
                payload = msgpack.packb(change(row), use_bin_type=True)
                out.write(struct.pack("<II", len(payload), zlib.crc32(payload)) + payload)


@examples(40, HealthCheck.function_scoped_fixture)
@given(ops=OPS)
def test_a_wal_with_the_old_tags_recovers_like_the_named_one(
    small_config: Config, tmp_path_factory: pytest.TempPathFactory, ops: list
) -> None:
    """Data directories outlive the code: the same run logged under the old one-letter
    tags recovers to exactly the state its named records recover to."""
    named = str(tmp_path_factory.mktemp("named"))
    clock = Clock()
    a = Shard(0, small_config, clock=clock, log_dir=named)
    _drive(a, clock, ops)
    a.close()
    old = str(tmp_path_factory.mktemp("old"))
    shutil.copytree(named, old, dirs_exist_ok=True)
    _rewrite(old, _old_tags)
    b = Shard(0, small_config, clock=clock, log_dir=old)
    c = Shard(0, small_config, clock=clock, log_dir=named)
    assert b.recovery["wal_records"] == c.recovery["wal_records"]
    assert b.state_digest() == c.state_digest() == a.state_digest()


def test_retried_events_and_outcomes_count_once(small_config: Config, tmp_path: Path) -> None:
    shard = Shard(0, small_config, clock=Clock(), log_dir=str(tmp_path))
    ev = {"customer_id": "c", "type": "page_view", "ts": NOW, "event_id": "ev-1"}
    assert edge.apply_events(shard, [ev, ev]) == 2  # both acknowledged...
    assert edge.apply_events(shard, [ev]) == 1
    assert edge.get_profile(shard, "c")["aggregates"]["views_all"] == 1.0  # ...counted once
    assert shard.counters["duplicates"] == 2
    edge.apply_events(shard, [{**ev, "event_id": None}, {**ev, "event_id": None}])
    assert edge.get_profile(shard, "c")["aggregates"]["views_all"] == 3.0  # no id: no dedup


def test_snapshot_of_another_profile_schema_is_refused(
    small_config: Config, tmp_path: Path
) -> None:
    shard = Shard(0, small_config, clock=Clock(), log_dir=str(tmp_path))
    edge.apply_events(shard, [{"customer_id": "c", "type": "page_view", "ts": NOW}])
    shard.snapshot()
    shard.close()
    data = small_config.model_dump(mode="json")
    data["profile"]["aggregates"].pop()
    from decisioning.config.loader import config_from_dict

    other = config_from_dict(data, "other.yaml")
    with pytest.raises(SnapshotError, match="another profile schema"):
        Shard(0, other, clock=Clock(), log_dir=str(tmp_path))


def test_idempotency_keys_are_bounded(small_config: Config) -> None:
    data = small_config.model_dump(mode="json")
    data["server"]["idempotency_keys"] = 3
    from decisioning.config.loader import config_from_dict

    shard = Shard(0, config_from_dict(data, "small.yaml"), clock=Clock())
    for i in range(5):
        edge.apply_events(
            shard, [{"customer_id": "c", "type": "page_view", "ts": NOW, "event_id": f"e{i}"}]
        )
    # the oldest are forgotten first; kept as digests, never as the client's ids
    assert list(shard.seen) == [idem_key(f"e{i}") for i in (2, 3, 4)]


def test_a_failed_snapshot_loses_nothing_and_is_retried(
    small_config: Config, tmp_path: Path
) -> None:
    d = str(tmp_path)
    shard = Shard(0, small_config, clock=Clock(), log_dir=d)
    edge.apply_events(
        shard, [{"customer_id": "c", "type": "page_view", "ts": NOW, "event_id": "1"}]
    )
    assert shard.wal is not None and shard.owner is not None
    # a file where the snapshot's temporary directory goes: writing it fails
    blocker = tmp_path / f"snapshot-{shard.wal.seq + 1:012d}-g{shard.owner.generation:06d}.tmp"
    blocker.write_text("in the way")
    result = shard.snapshot()
    assert "error" in result
    assert shard.durability.retry_at > 0  # the next attempt waits instead of hammering the disk
    digest = shard.state_digest()
    assert Shard(0, small_config, clock=Clock(), log_dir=d).state_digest() == digest
    blocker.unlink()
    again = Shard(0, small_config, clock=Clock(), log_dir=d)
    assert again.snapshot()["profiles"] == 1
    assert Shard(0, small_config, clock=Clock(), log_dir=d).recovery["snapshot_profiles"] == 1
