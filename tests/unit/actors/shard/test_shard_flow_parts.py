"""The shard's parts that move things along (actors/shard/), each through its own
methods: triggers and the outbox, the intake of events, identity, erasure, outcomes,
what is served (two-phase) and the decide path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from actors.messages import Absorb, Decide, Decided, Freeze, Leased
from actors.shard import Shard
from actors.shard.allowance import Allowance
from actors.shard.intake import Intake
from actors.shard.journal import Journal
from actors.shard.profiles import Profiles
from actors.shard.served import Served
from actors.shard.triggers import Triggers
from decisioning.config import Config, Secrets
from decisioning.config.loader import config_from_dict
from decisioning.errors import Backlogged, InvalidInput, Moved, NextbestError, NotFound
from decisioning.journal import records as rec
from decisioning.journal.wal import Replay, Wal, replay, segments
from decisioning.policy.decide import Decision, ScoredAction
from decisioning.profile import Event
from serving.bodies import message_body
from tests.conftest import SMALL
from tests.unit import edge
from tests.unit.actors.shard.test_triggers import _config as trigger_config
from tests.unit.decisioning.policy.test_context_tables import _config as context_config
from tests.unit.decisioning.policy.test_context_tables import _weather
from tests.unit.decisioning.policy.test_decide import NOW, Clock
from tests.unit.models import tiny_model


def _triggers(
    config: Config, decide: Any, clock: Clock, wal_dir: Path | None = None
) -> tuple[Triggers, Journal, Profiles]:
    profiles, journal = Profiles(config), Journal()
    if wal_dir is not None:
        journal.wal = Wal(str(wal_dir), "always")
    served = Served(0, config, profiles.schema, Secrets())
    return Triggers(0, config, None, served, profiles, journal, decide, clock), journal, profiles


def _chosen(request: Decide, actions: int = 1) -> Decided:
    a = ScoredAction("cart_reminder", "cart", "email", 0.5, 10.0, 1.0, 1.0, 5.0, None)
    d = Decision("d-0001-01", request.customer_id, NOW, "email", None, [a] * actions, 1, 1, [])
    return Decided(d, "champion", None)


def _rows(directory: Path) -> list[str]:
    d = str(directory)
    files = [(f, (directory / f).stat().st_size) for *_, f in segments(d)]
    return [row[0] for row in replay(d, files, Replay())]


def test_a_fired_trigger_queues_the_typed_decision_and_logs_each_step(tmp_path: Path) -> None:
    clock = Clock()
    t, journal, profiles = _triggers(trigger_config(), _chosen, clock, tmp_path)
    cart = Event("c", "cart_add", NOW, {"amount": 50})
    t.on_event(cart, t.conditions(cart, crossing_only=True))
    assert t.status()["timers"] == 1 and t.status()["next_due_s"] == 1800.0
    clock.t = NOW + 1800
    assert t.tick()["fired"] == 1
    [m] = t.outbox.messages()
    assert m.decision.decision_id == "d-0001-01" and m.trigger == "cart_abandoned"
    assert t.lease("email", 5) == [Leased(m, None)]  # (open links off)
    assert message_body(Leased(m, None))["decision"] == m.decision.to_wire()
    assert t.ack([m.id, m.id]) == 1 and profiles.counters["messages_acked"] == 1
    assert _rows(tmp_path) == ["timer_set", "timer_cleared", "queue", "ack"]


def test_a_failing_or_empty_decision_queues_nothing() -> None:
    def failing(request: Decide) -> Decided:
        raise NotFound("no such channel")

    for decide, counter in ((failing, "trigger_errors"), (lambda r: _chosen(r, 0), None)):
        t, _, profiles = _triggers(trigger_config(), decide, Clock())
        moved = Event("c", "address_change", NOW)
        t.on_event(moved, {})
        assert len(t.outbox) == 0
        if counter is not None:
            assert profiles.counters[counter] == 1 and profiles.counters["triggers_fired"] == 0
        else:
            assert profiles.counters["triggers_fired"] == 1


def _intake(config: Config, forwards: dict[str, str]) -> tuple[Intake, Triggers, Journal]:
    t, journal, profiles = _triggers(config, _chosen, Clock())
    allowance = Allowance(config)
    return Intake(profiles, t.served, t, allowance, forwards, journal), t, journal


def test_the_intake_refuses_a_batch_whole_and_replays_without_firing() -> None:
    intake, triggers, _ = _intake(trigger_config(), {"old": "new", "gone": "c"})
    batch = [Event(c, "page_view", NOW) for c in ("c", "old", "gone")]
    with pytest.raises(Moved) as e:
        intake.apply(batch, NOW)
    assert e.value.moved == {"old": "new", "gone": "c"}  # every one: the batch is resent once
    assert "c" not in intake.profiles.store.ids
    intake.redo(rec.EventsApplied([Event("c", "address_change", NOW, {}, "e1")]))
    assert "c" in intake.profiles.store.ids and len(triggers.outbox) == 0  # in the log already
    assert intake.apply([Event("c", "address_change", NOW, {}, "e1")], NOW) == []  # a retry


def test_the_intake_holds_events_that_would_fire_while_the_outbox_is_full() -> None:
    data = {**SMALL, "actions": trigger_config().model_dump(mode="json")["actions"]}
    data["triggers"] = [{"id": "moved", "event": "address_change", "channel": "email"}]
    intake, triggers, _ = _intake(config_from_dict({**data, "delivery": {"max_backlog": 1}}), {})
    intake.apply([Event("a", "address_change", NOW)], NOW)
    assert len(triggers.outbox) == 1
    with pytest.raises(Backlogged):
        intake.apply([Event("b", "page_view", NOW), Event("b", "address_change", NOW)], NOW)
    assert intake.apply([Event("b", "page_view", NOW)], NOW)  # fires nothing: applied


def test_identity_follows_merges_and_folds_a_merge_once() -> None:
    shard = Shard(0, config_from_dict(SMALL), clock=Clock())
    identity = shard.identity
    for merged, survivor in (("a", "b"), ("b", "c")):
        frozen = identity.freeze(merged, survivor, None, "merge")
        assert frozen.merge_id is not None
        fold = (survivor, frozen.merge_id, frozen.state, frozen.contacts)
        assert identity.absorb(*fold) is True
        assert identity.absorb(*fold) is False  # once
    assert identity.survivor("a") == "c" and identity.survivor("c") == "c"
    with pytest.raises(Moved):
        identity.here("b")
    assert identity.drop_merged("c", alias=False) is False  # live: never dropped


def test_erasure_forgets_everything_but_a_merged_row_keeps_its_decisions() -> None:
    shard = Shard(0, trigger_config(), clock=Clock())
    edge.apply_events(shard, [{"customer_id": c, "type": "cart_add", "ts": NOW} for c in "ab"])
    edge.apply_events(shard, [{"customer_id": "a", "type": "address_change", "ts": NOW}])
    da = edge.decide(shard, {"customer_id": "a", "channel": "email"})
    db = edge.decide(shard, {"customer_id": "b", "channel": "email"})
    assert shard.erasure.forget_profile("a") == (True, 2)  # its own and its trigger's
    assert len(shard.outbox) == 0 and "a" not in shard.store.ids and da["decision_id"]
    assert shard.erasure.drop_row("b") is True
    assert db["decision_id"] in shard.decisions and "b" not in shard.recent  # late outcomes
    assert shard.outbound_status()["timers"] == 0


def test_outcomes_name_the_failing_item_and_forward_a_merged_customers() -> None:
    shard = Shard(0, config_from_dict(SMALL), clock=Clock())
    d = edge.decide(shard, {"customer_id": "a", "channel": "web", "limit": 1})
    good = {"decision_id": d["decision_id"], "action_id": d["actions"][0]["action_id"]}
    for bad, field in (
        ({**good, "decision_id": "d-0000-00", "outcome": "click"}, "[1].decision_id"),
        ({**good, "action_id": "nope", "outcome": "click"}, "[1].action_id"),
        ({**good, "outcome": "liked"}, "[1].outcome"),
    ):
        with pytest.raises(NextbestError) as e:
            shard.outcomes.events(edge.outcomes([{**good, "outcome": "click"}, bad]))
        assert e.value.field == field
    frozen = shard.freeze(Freeze("a", "b"))
    assert frozen.merge_id is not None
    shard.absorb(Absorb("b", frozen.merge_id, frozen.state, frozen.contacts))
    out = shard.outcomes.record(edge.outcomes([{**good, "outcome": "click"}]))
    assert out.forward[0].customer_id == "b"


def test_served_swaps_models_and_tables_only_at_commit(small_config: Config) -> None:
    served = Served(0, small_config, Profiles(small_config).schema, Secrets())
    assert served.commit_model("propensity") == ""  # nothing staged, nothing served
    m = tiny_model(small_config).manifest
    text = tiny_model(small_config).model_text
    served.stage_model(m.to_dict(), text, role="challenger", share=1.0)
    assert served.variant("c")[1] == "champion"  # staged: not served
    served.commit_model("propensity")
    assert served.variant("c")[1] == "challenger"
    served.stage_no_challenger("propensity")
    served.commit_model("propensity")
    assert served.challengers == {} and served.commit_catalog() is False
    tables = Served(0, context_config(), Profiles(context_config()).schema, Secrets())
    with pytest.raises(NotFound):
        tables.stage_context("rain", "v1", _weather([]))
    tables.stage_context("weather", "v1", _weather([("10001", 20.0, "sun")]))
    tables.abort_context("weather")
    assert tables.commit_context("weather") is None and tables.tables == {}
    tables.stage_context("weather", "v2", _weather([("10001", 20.0, "sun")]))
    assert tables.commit_context("weather") == "v2"


def test_the_decider_checks_the_request_and_a_dry_run_changes_nothing() -> None:
    shard = Shard(0, config_from_dict(SMALL), clock=Clock())
    decider = shard.decider
    for request, field in (
        ({"channel": "fax"}, "channel"),
        ({"channel": "web", "limit": 99}, "limit"),
        ({"channel": "outbound"}, "channel"),  # no outbound channels configured
        ({"channel": "web", "event": {"type": "page_view", "ts": NOW + 86_400}}, "event.ts"),
    ):
        with pytest.raises(InvalidInput) as e:
            decider.decide(edge.decide_message({"customer_id": "c", **request}))
        assert e.value.field == field
    event = {"type": "page_view", "ts": NOW}
    d, variant, choice = decider.decide(
        edge.decide_message({"customer_id": "c", "channel": "web", "dry_run": True, "event": event})
    )
    assert d.actions and variant == "champion" and choice is None
    assert shard.decisions == {} and "c" not in shard.store.ids  # nothing recorded, applied
