"""Idempotent decide on a real shard (actors/shard/answers.py): a retried request id gets
the answer it was given (the same body: decision id, actions, scores, variant), and
nothing is recorded, counted or spent twice; another channel or placement under the same
id is refused; a dry run neither remembers nor looks up; the answer survives a restart
from the WAL alone and from a snapshot, an erasure forgets it, and it is kept as long as
event ids are."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from actors.calls import run_calls
from actors.shard import Shard
from decisioning.config.loader import config_from_dict
from decisioning.errors import RequestIdReused
from decisioning.journal import records as rec
from decisioning.journal.wal import Replay, replay, segments
from tests.unit import edge
from tests.unit.actors.shard.test_shard_journal import CONFIG
from tests.unit.decisioning.policy.test_decide import NOW, Clock
from tests.unit.models import tiny_model

MODEL = tiny_model(CONFIG)


def shard(log_dir: Path | None, clock: Clock, config: Any = CONFIG) -> Shard:
    d = None if log_dir is None else str(log_dir)
    return Shard(0, config, models=[MODEL], clock=clock, log_dir=d)


def ask(**kw: Any) -> dict[str, Any]:
    """A decide for c1 on web with a request id, explained (the biggest answer)."""
    return {"customer_id": "c1", "channel": "web", "request_id": "r-1", "explain": True, **kw}


def what_it_did(s: Shard) -> dict[str, Any]:
    """What a decision changes on a shard besides its answer."""
    return {
        "decisions": dict(s.decisions),
        "contacts": sorted(s.contacts.rows(), key=repr),
        "recent": edge.get_profile(s, "c1")["recent_decisions"],
        "views": edge.get_profile(s, "c1")["aggregates"]["views_all"],
        "variant_stats": {k: dict(v) for k, v in s.variant_stats.items()},
        "counted": s.counters["decisions"],
        "events": s.counters["events"],
    }


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _seeded(s: Shard) -> Shard:
    edge.apply_events(
        s,
        [
            {"customer_id": "c1", "type": "profile_update", "ts": NOW, "properties": {"age": 41}},
            {"customer_id": "c1", "type": "page_view", "ts": NOW, "properties": {"page": "x"}},
        ],
    )
    return s


def test_a_retry_gets_the_same_answer_and_nothing_is_recorded_twice(
    tmp_path: Path, clock: Clock
) -> None:
    s = _seeded(shard(tmp_path, clock))
    event = {"type": "page_view", "ts": NOW, "properties": {"page": "cards"}}  # no event id
    first = edge.decide(s, ask(event=event))
    assert first["actions"] and first["model_version"] == MODEL.manifest.ref  # scored
    done = what_it_did(s)
    assert len(done["decisions"]) == 1 and done["views"] == 2.0
    clock.t += 60
    for _ in range(2):  # later, and again: the same body
        assert edge.decide(s, ask(event=event)) == first
    assert what_it_did(s) == done  # its event not applied again, no contact, no count
    assert s.counters["decisions_repeated"] == 2
    # the rest of a retry is not compared: the answer given is the answer
    assert edge.decide(s, ask(limit=1, explain=False, context={"page": "y"})) == first
    # another request id, or another customer's same id, is another decision
    other = edge.decide(s, ask(request_id="r-2"))
    assert other["decision_id"] != first["decision_id"]
    theirs = edge.decide(s, ask(customer_id="c2"))
    assert theirs["decision_id"] != first["decision_id"]
    assert len(s.decisions) == 3 and s.counters["decisions"] == 3


def test_an_outbound_retry_gets_its_channel_choice_again(tmp_path: Path, clock: Clock) -> None:
    s = _seeded(shard(tmp_path, clock))
    first = edge.decide(s, ask(channel="outbound"))
    assert first["channel_choice"]["channel"] == first["channel"]
    assert edge.decide(s, ask(channel="outbound")) == first
    with pytest.raises(RequestIdReused):  # the chosen channel is not what was asked
        edge.decide(s, ask(channel=first["channel"]))


def test_the_same_request_id_for_another_channel_or_placement_is_refused(
    tmp_path: Path, clock: Clock
) -> None:
    s = _seeded(shard(tmp_path, clock))
    first = edge.decide(s, ask(placement="hero"))
    done, digest = what_it_did(s), s.state_digest()
    for changed in ({"channel": "email"}, {"placement": "footer"}, {"placement": None}):
        answer = run_calls(s, [("decide", (edge.decide_message(ask(**changed)),))])[0]
        assert isinstance(answer, RequestIdReused), changed
        assert answer.code == "request_id_reused" and answer.field == "request_id"
        assert "'r-1'" in answer.message and "'hero'" in answer.message
    assert (what_it_did(s), s.state_digest()) == (done, digest)  # nothing applied
    assert s.counters["decisions_repeated"] == 0
    assert edge.decide(s, ask(placement="hero")) == first  # the right retry still works


def test_a_dry_run_neither_remembers_nor_looks_up_a_request_id(
    tmp_path: Path, clock: Clock
) -> None:
    s = _seeded(shard(tmp_path, clock))
    dry = edge.decide(s, ask(dry_run=True))
    assert len(s.answers) == 0 and len(s.decisions) == 0
    real = edge.decide(s, ask())
    assert real["decision_id"] != dry["decision_id"]
    again = edge.decide(s, ask(dry_run=True))
    assert again["decision_id"] != real["decision_id"]  # decided anew, recording nothing
    assert len(s.decisions) == 1 and edge.decide(s, ask()) == real


def _tags(log_dir: Path) -> list[str]:
    d = str(log_dir)
    return [r[0] for r in replay(d, [(f, (log_dir / f).stat().st_size) for *_, f in
            segments(d)], Replay())]  # fmt: skip


@pytest.mark.parametrize("snapshot", [False, True], ids=["from the WAL", "from a snapshot"])
def test_the_answer_survives_a_restart(tmp_path: Path, clock: Clock, snapshot: bool) -> None:
    s = _seeded(shard(tmp_path, clock))
    web = edge.decide(s, ask())
    outbound = edge.decide(s, ask(channel="outbound", request_id="r-out"))
    plain = edge.decide(s, {"customer_id": "c1", "channel": "web"})  # no request id
    s.flush()
    done = what_it_did(s)
    if snapshot:
        s.snapshot()
    # no close(): a crash
    back = shard(tmp_path, clock)
    assert back.recovery["wal_records"] == (0 if snapshot else 4)
    assert back.state_digest() == s.state_digest()
    assert edge.decide(back, ask()) == web
    assert edge.decide(back, ask(channel="outbound", request_id="r-out")) == outbound
    lost = {"counted": 0, "events": 0, "variant_stats": {}}  # (not logged: as ever)
    assert what_it_did(back) | lost == done | lost
    assert len(back.decisions) == 3 and plain["decision_id"] in back.decisions
    if not snapshot:  # one record per decision: the retries wrote nothing
        assert _tags(tmp_path).count("decision") == 3


def test_a_wal_record_names_the_request_by_its_key_only(tmp_path: Path, clock: Clock) -> None:
    s = _seeded(shard(tmp_path, clock))
    edge.decide(s, ask(request_id="client-secret-id"))
    s.flush()
    raw = b"".join((tmp_path / f).read_bytes() for *_, f in segments(str(tmp_path)))
    assert b"client-secret-id" not in raw
    made = [rec.decode(r) for r in replay(str(tmp_path), [(f, (tmp_path / f).stat().st_size)
            for *_, f in segments(str(tmp_path))], Replay()) if r[0] == "decision"]  # fmt: skip
    assert [len(m.request) for m in made if isinstance(m, rec.DecisionMade) and m.request] == [16]


def test_an_erasure_forgets_the_answer_and_a_restart_does_not_bring_it_back(
    tmp_path: Path, clock: Clock
) -> None:
    s = _seeded(shard(tmp_path, clock))
    first = edge.decide(s, ask())
    assert edge.erase_profile(s, "c1")["erased"]
    assert len(s.answers) == 0
    s.flush()
    back = shard(tmp_path, clock)
    assert len(back.answers) == 0
    assert edge.decide(back, ask())["decision_id"] != first["decision_id"]


def test_answers_are_kept_as_long_as_event_ids(tmp_path: Path, clock: Clock) -> None:
    data = CONFIG.model_dump(mode="json")
    data["server"]["idempotency_keys"] = 2
    s = _seeded(shard(tmp_path, clock, config_from_dict(data, "small.yaml")))
    first = [edge.decide(s, ask(request_id=f"r-{i}")) for i in range(3)]
    assert len(s.answers) == 2  # the oldest went first
    assert edge.decide(s, ask(request_id="r-2")) == first[2]
    assert edge.decide(s, ask(request_id="r-0"))["decision_id"] != first[0]["decision_id"]
