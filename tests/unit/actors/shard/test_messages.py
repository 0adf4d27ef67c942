"""The messages between the ingress and a shard (actors/messages.py) and the call
protocol that carries them (actors/calls.py): every request method takes one typed
message and answers a typed result, what crosses pickles to an equal value, and a
refusal comes back as the error itself, not raised and not as a dict."""

from __future__ import annotations

import dataclasses
import inspect
import pickle
from pathlib import Path
from typing import Any, get_type_hints

import pytest
from hypothesis import given
from hypothesis import strategies as st

import actors.messages as messages
from actors.calls import REQUEST_METHODS, refused, run_calls
from actors.messages import (
    ApplyEvents,
    Decide,
    Decided,
    DecideMany,
    GetProfile,
    IdentityOf,
    LeaseOutbound,
    Link,
    Outcome,
    Profile,
    Recorded,
    RecordOutcomes,
)
from actors.shard import Shard
from decisioning.config import OUTBOUND, Config
from decisioning.errors import InvalidInput, NotFound
from decisioning.profile import Event
from decisioning.stores.decision_log import DecisionLog
from serving.bodies import decision_body
from tests.conftest import examples
from tests.unit import edge
from tests.unit.actors.shard.test_triggers import _config as trigger_config
from tests.unit.decisioning.policy.test_decide import NOW, Clock
from tests.unit.decisioning.profile.test_identity import _config as identity_config

# request methods the ingress does not call: the actor's ticker, the supervisor's stages,
# the status it reads
NOT_THE_INGRESS = {"tick", "outbound_status", "stage_model", "stage_catalog", "stage_context"}


def test_every_request_the_ingress_sends_takes_one_typed_message() -> None:
    types = {
        obj
        for obj in vars(messages).values()
        if inspect.isclass(obj) and obj.__module__ == messages.__name__
    }
    for method in sorted(REQUEST_METHODS - NOT_THE_INGRESS):
        hints = get_type_hints(getattr(Shard, method))
        params = [p for p in inspect.signature(getattr(Shard, method)).parameters if p != "self"]
        assert len(params) == 1, (method, params)
        assert hints[params[0]] in types, (method, hints[params[0]])
        assert hints["return"] not in (dict, dict[str, Any]), method  # never a wire dict


def test_the_messages_are_frozen() -> None:
    decide = Decide("c", "web")
    with pytest.raises(AttributeError):
        decide.customer_id = "d"  # type: ignore[misc]
    link = Link("cookie_id:a", "c")
    with pytest.raises(dataclasses.FrozenInstanceError):
        link.alias = "x"  # type: ignore[misc]


ids = st.text(st.characters(min_codepoint=33, max_codepoint=0x2FF), min_size=1, max_size=12)
scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8)
props = st.dictionaries(st.text(min_size=1, max_size=8), scalars, max_size=4)
events = st.builds(Event, ids, st.sampled_from(["page_view", "login"]), st.floats(1, 2e9), props,
                   st.none() | ids)  # fmt: skip
decides = st.builds(
    Decide, ids, st.sampled_from(["web", "email"]), st.none() | ids, st.none() | props,
    st.none() | st.integers(1, 10), st.booleans(), st.booleans(), st.none() | events,
)  # fmt: skip


@given(decide=decides, survivor=ids)
@examples(100)
def test_a_decide_request_for_a_survivor_moves_its_event_too(decide: Decide, survivor: str) -> None:
    again = decide.for_customer(survivor)
    assert again.customer_id == survivor
    assert again._replace(customer_id=decide.customer_id, event=decide.event) == decide
    if decide.event is not None:
        assert again.event is not None and again.event.customer_id == survivor
        assert dataclasses.replace(again.event, customer_id=decide.event.customer_id) == (
            decide.event
        )


@given(decide=decides, batch=st.lists(events, max_size=5))
@examples(100)
def test_what_crosses_the_actor_boundary_pickles_to_an_equal_value(
    decide: Decide, batch: list[Event]
) -> None:
    outcome = Outcome("d-0000-00", "a", "click", None)
    for value in (decide, ApplyEvents(tuple(batch)), RecordOutcomes((outcome,)),
                  Recorded(len(batch), tuple(batch)), DecideMany((decide, decide))):  # fmt: skip
        assert pickle.loads(pickle.dumps(value)) == value


def test_a_decision_and_a_message_cross_as_rows_and_come_back_equal(tmp_path: Path) -> None:
    """Decided and Leased pickle as rows of plain values (cheaper than the dataclasses
    they hold); what comes back is equal, without the decision log's trace."""
    config = trigger_config(outbound={"channels": ["email", "web"], "costs": {"email": 0.1}})
    logs = DecisionLog(str(tmp_path), 0, config.logs)
    shard = Shard(0, config, clock=Clock(), logs=logs)
    try:
        edge.apply_events(shard, [{"customer_id": "c", "type": "address_change", "ts": NOW}])
        for request in (Decide("c", "email", explain=True), Decide("c", OUTBOUND, limit=1)):
            decided = shard.decide(request)
            assert decided.decision.trace is not None  # (logged here)
            back = pickle.loads(pickle.dumps(decided))
            assert back.decision.trace is None
            assert back == decided._replace(
                decision=dataclasses.replace(decided.decision, trace=None)
            )
            assert decision_body(back) == decision_body(decided)
        [leased] = shard.lease_outbound(LeaseOutbound("email", 5))
        for m in (leased, leased._replace(open_token="its-token")):
            assert pickle.loads(pickle.dumps(m)) == m
    finally:
        logs.close()


def _shard(config: Config) -> Shard:
    shard = Shard(0, config, clock=Clock())
    edge.apply_events(shard, [{"customer_id": "c", "type": "page_view", "ts": NOW}])
    return shard


def test_a_batch_of_calls_answers_typed_results_and_refusals_as_the_errors_themselves() -> None:
    shard = _shard(identity_config())
    answers = run_calls(
        shard,
        [
            ("decide", (Decide("c", "web"),)),
            ("decide", (Decide("c", "fax"),)),  # refused: the batch goes on
            ("get_profile", (GetProfile("c"),)),
            ("record_outcomes", (RecordOutcomes((Outcome("d-0000-ff", "a", "click"),)),)),
            ("identity_of", (IdentityOf("c"),)),
            ("lease_outbound", (LeaseOutbound("email", 5),)),
        ],
    )
    decided, fax, profile, unknown, info, leased = answers
    assert isinstance(decided, Decided) and decided.decision.customer_id == "c"
    assert isinstance(fax, InvalidInput) and fax.code == "unknown_channel" and refused(fax)
    assert fax.__traceback__ is None  # (it would keep the shard's frames alive)
    assert isinstance(profile, Profile) and profile.known and not refused(profile)
    assert isinstance(unknown, NotFound) and unknown.field == "[0].decision_id"
    assert info.aliases == () and leased == []
    back = pickle.loads(pickle.dumps(answers))
    assert type(back[1]) is InvalidInput and back[1].__dict__ == fax.__dict__
    assert back[2] == profile and back[0].decision.actions == decided.decision.actions
    with pytest.raises(ValueError, match="not a request method"):
        run_calls(shard, [("close", ())])
