"""The shard's stateful parts on their own (actors/shard/): two-phase staging, profile
idempotency, the journal's dispatch, snapshots timed by an injected clock, the decision
history and the allowance of contact policies and budgets."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

import actors.shard.decisions as decisions_module
from actors.shard.allowance import USED_UP, Allowance
from actors.shard.answers import Answers
from actors.shard.decisions import DecisionHistory, Tracked
from actors.shard.durability import Durability
from actors.shard.journal import Journal
from actors.shard.profiles import Profiles
from actors.shard.served import Served
from actors.shard.staged import Staged
from decisioning.config import Config, Secrets
from decisioning.config.loader import config_from_dict
from decisioning.journal import records as rec
from decisioning.journal.snapshot import State
from decisioning.journal.wal import Wal, segments
from decisioning.policy.budgets import day_of
from decisioning.policy.contacts import Limits
from decisioning.policy.decide import Decision, ScoredAction
from decisioning.profile import Event
from tests.conftest import SMALL
from tests.unit.decisioning.policy.test_decide import NOW, Clock


def test_staged_serves_a_value_once_committed_and_nothing_after_an_abort() -> None:
    staged: Staged[int] = Staged()
    served: list[int] = []
    assert staged.commit(served.append) is False  # nothing staged: nothing changes
    staged.stage(1)
    staged.stage(2)  # a later stage replaces the first
    staged.stage(7, key="other")
    assert staged.commit(served.append) is True and served == [2]
    assert staged.commit(served.append) is False and served == [2]  # once
    staged.abort("other")
    assert "other" not in staged and staged.commit(served.append, "other") is False


def test_profiles_drop_retries_and_keep_a_bounded_set_of_keys() -> None:
    p = Profiles(config_from_dict({**SMALL, "server": {**SMALL["server"], "idempotency_keys": 2}}))
    e = [Event("c", "page_view", NOW, {}, f"e{i}") for i in range(3)]
    anonymous = Event("c", "page_view", NOW)
    assert p.fresh([e[0], e[0], anonymous, anonymous]) == [e[0], anonymous, anonymous]
    assert p.counters["duplicates"] == 1  # the repeat within the batch (no id: no dedup)
    p.remember(e)  # the newest two keys are kept
    assert p.fresh([e[0]]) == [e[0]]
    assert p.fresh([e[1], e[2]]) == [] and p.counters["duplicates"] == 3
    assert not p.folded("m1")
    p.fold("m1")
    assert p.folded("m1")  # a merge is folded once


def test_the_journal_logs_only_with_a_wal_and_redoes_by_record_type(tmp_path: Path) -> None:
    journal, seen = Journal(), []
    journal.log(rec.ProfileErased("c"))  # no WAL (no data directory): nothing, no change
    assert not journal.changed
    journal.handle({rec.ProfileErased: seen.append, rec.TimerCleared: seen.append})
    journal.redo(["erase", "c"])  # a legacy tag
    journal.redo(["erase_profile", ["c"]])
    journal.redo(["T", ["c", "t", None, None]])
    journal.redo(["from-a-newer-shard", []])  # skipped and counted, not raised
    assert seen == [rec.ProfileErased("c")] * 2 + [rec.TimerCleared("c", "t")]
    assert journal.unknown == 1
    journal.wal = Wal(str(tmp_path), "always")
    journal.log(rec.ProfileErased("c"))
    assert journal.changed and journal.wal.bytes > 0


def _durability(config: Config, directory: str, clock: Clock) -> tuple[Durability, Journal]:
    profiles, journal = Profiles(config), Journal()

    def capture(seq: int) -> State:
        blob, ends, matrices = profiles.store.export()
        return State(seq, profiles.schema.layout_key, blob, ends, matrices)

    d = Durability(0, config, journal, capture, lambda st: None, directory, monotonic=clock)
    d.recover(profiles.schema.layout_key)
    return d, journal


def test_a_snapshot_starts_when_due_on_the_injected_clock(
    small_config: Config, tmp_path: Path
) -> None:
    clock = Clock(0.0)
    d, journal = _durability(small_config, str(tmp_path), clock)
    journal.log(rec.ProfileErased("c"))
    d.flush()
    assert d.writing is None  # changed, not due
    clock.t = small_config.server.snapshot_every_s
    d.flush()
    assert d.writing is not None
    d.writing.done.wait()
    d.flush()  # finishes it: the segments it covers are gone
    assert d.writing is None and d.last_snapshot["profiles"] == 0
    assert len(segments(str(tmp_path))) == 1 and not journal.changed
    clock.t += small_config.server.snapshot_every_s
    d.flush()
    assert d.writing is None  # due, but nothing changed
    d.erase_soon("c")  # an erasure: at once, whatever the clock
    d.flush()
    assert d.writing is not None and d.writing.erased == {"c"}
    d.close()


def _history(config: Config) -> tuple[DecisionHistory, dict[str, str], Allowance]:
    profiles = Profiles(config)
    forwards: dict[str, str] = {}
    allowance = Allowance(config)
    served = Served(0, config, profiles.schema, Secrets())
    return (
        DecisionHistory(
            served,
            profiles.store,
            forwards,
            allowance,
            Journal(),
            Answers(config.server.idempotency_keys),
        ),
        forwards,
        allowance,
    )


def _decision(did: str, customer: str, versions: list[str]) -> Decision:
    action = ScoredAction("tip", "service", "web", 0.5, 1.0, 1.0, 1.0, 0.5, None)
    return Decision(did, customer, NOW, "web", None, [action], 1, 1, versions)


def test_the_decision_history_is_a_bounded_ring_with_recent_lists(
    small_config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(decisions_module, "MAX_TRACKED_DECISIONS", 3)
    h, forwards, _ = _history(small_config)
    forwards["gone"] = "c"
    for i in range(4):
        h.record(_decision(f"d{i}", "c", ["m@1"]))
    h.record(_decision("dg", "gone", ["m@1"]))
    assert list(h.ring) == ["d2", "d3", "dg"]  # the oldest evicted
    assert "gone" not in h.recent  # merged away: no recent list
    assert [r.decision_id for r in h.of("c")] == ["d2", "d3"]
    h.outcome("d2", "click")
    assert h.variant_stats == {"m@1": {"decisions": 5, "click": 1}}
    assert h.forget("c") == 2 and h.of("c") == () and list(h.ring) == ["dg"]


def test_tracked_decisions_are_nothing_the_garbage_collector_scans(small_config: Config) -> None:
    """A full collection scans every object it tracks, on the shard's one thread: the
    ring (up to 200,000 decisions) keeps plain tuples, which it stops tracking."""
    h, _, _ = _history(small_config)
    for i in range(3):
        h.record(_decision(f"d{i}", "c", ["m@1"]))
    gc.collect()  # (a tuple is let go by a collection that finds its items let go: the
    gc.collect()  # actions tuple first; long before a record reaches the old generation)
    assert [gc.is_tracked(row) for _, row in h.ring.rows()] == [False] * 3
    record = h.ring["d1"]  # read back as the named record, like every view of it
    assert isinstance(record, Tracked) and record.actions == ("tip",)
    assert record == Tracked("c", ("tip",), NOW, "web", None, "m@1")
    assert [r.customer_id for r in h.ring.values()] == ["c"] * 3
    assert dict(h.ring.items())["d2"].model_version == "m@1"


def test_a_replayed_decision_counts_as_a_contact_where_a_policy_exists() -> None:
    caps = {"decisioning": {"channel_caps": {"web": {"per_day": 1}}}}
    config = config_from_dict({**SMALL, **caps})
    h, _, allowance = _history(config)
    h.redo_record(rec.DecisionMade("d1", "c", ("tip",), NOW, "web", None, None))
    assert h.ring["d1"] == Tracked("c", ("tip",), NOW, "web", None, None)
    limits = allowance.limits("c", NOW + 60, "web")
    assert limits is not None and limits.channel  # the cap of one is used up


def test_budgets_take_from_this_shards_allotment_and_hold_when_it_is_used_up() -> None:
    actions = [
        {**a, "budget": {"per_day": 10}} if a["id"] == "tip" else a for a in SMALL["actions"]
    ]
    config = config_from_dict({**SMALL, "actions": actions})
    allowance = Allowance(config)
    assert allowance.limits("c", NOW, "web") == _exhausted(tip=USED_UP)  # not granted yet
    allowance.allotments.add("tip", day_of(NOW), 1)
    assert allowance.limits("c", NOW, "web") is None
    allowance.spend([_decision("d", "c", []).actions[0]], NOW)
    assert allowance.limits("c", NOW, "web") == _exhausted(tip=USED_UP)
    allowance.reload(config_from_dict(SMALL))  # a catalog without budgets
    assert allowance.limits("c", NOW, "web") is None


def _exhausted(**why: str) -> Limits:
    return Limits(exhausted=why)


def test_outcomes_count_as_contacts_only_while_a_policy_exists(small_config: Config) -> None:
    allowance = Allowance(small_config)
    click = Event("c", "outcome.click", NOW, {"action_id": "tip", "decision_id": "d"})
    allowance.count_outcomes([click])
    assert allowance.contacts.rows() == []
    caps = {"decisioning": {"channel_caps": {"web": {"per_day": 1}}}}
    allowance.reload(config_from_dict({**SMALL, **caps}))
    allowance.count_outcomes([click])
    assert [row[2:4] for row in allowance.contacts.rows()] == [("tip", "click")]
