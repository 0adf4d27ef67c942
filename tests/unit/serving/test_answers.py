"""What real shards answer is what the OpenAPI document says the routes answer.

Real `Shard` objects (the example config, a real LightGBM model, a WAL, decision logs,
triggers and open links) make decisions, messages, profiles and statuses in-process;
each typed result is turned into its body by the very functions the routes use
(serving/bodies.py, through tests/unit/edge.py) and checked, as JSON and as msgpack, by
schemathesis against the document of the route that returns it. So a key added to a
body and not to `serving/answers.py` (or one taken away) fails here, without Ray."""

from __future__ import annotations

import datetime
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgpack
import pyarrow as pa
import pytest
import schemathesis
from schemathesis.core.failures import Failure, FailureGroup

from actors.delivery import DeliveryLoop
from actors.fleet import LocalFleet
from actors.messages import Decide
from actors.shard import OUTCOMES, Shard
from actors.supervisor import Supervisor
from decisioning.config import OUTBOUND, Config
from decisioning.config.loader import load_config
from decisioning.policy.scoring import ModelBundle
from decisioning.stores.decision_log import DecisionLog
from decisioning.stores.registry import Registry
from serving.app import fastapi_app
from serving.bodies import opened_body
from serving.wire import encode_body
from tests.conftest import EXAMPLE
from tests.unit import edge
from tests.unit.decisioning.policy.test_decide import NOW, Clock
from training.demo import generate
from training.train import train

LINK_KEY_ENV = "NB_ANSWERS_LINK_KEY"


@schemathesis.deserializer("application/msgpack")
def _msgpack(ctx: Any, response: Any) -> Any:
    return msgpack.unpackb(response.content, raw=False)


@functools.cache
def _document() -> Any:
    return schemathesis.openapi.from_dict(fastapi_app.openapi())


ACCEPTS = ("application/json", "application/msgpack")


def conforms(path: str, method: str, body: Any, accepts: tuple[str, ...] = ACCEPTS) -> None:
    """`body`, encoded as `reply` encodes it (JSON, or msgpack on asking), is what the
    app's document says `method path` answers with 200."""
    operation = _document()[path][method]
    for accept in accepts:
        raw, media = encode_body(body, accept)
        response = httpx.Response(
            200,
            headers={"content-type": media},
            content=raw,
            request=httpx.Request(method, f"http://nextbest{path}"),
        )
        response.elapsed = datetime.timedelta(0)  # (never sent)
        operation.validate_response(response)


@dataclass
class World:
    config: Config
    bundle: ModelBundle
    clock: Clock
    shard: Shard
    data: Path

    def event(self, customer: str, kind: str, **properties: Any) -> dict[str, Any]:
        return {"customer_id": customer, "type": kind, "ts": self.clock.t, "properties": properties}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    data = tmp_path_factory.mktemp("answers")
    env = {"NEXTBEST_DATA_DIR": str(data), "NEXTBEST_DELIVERY_LINK_KEY_ENV": LINK_KEY_ENV}
    config = load_config(EXAMPLE, env)
    model = train(generate(config, customers=150, offers=4).training, config, rounds=10)
    registry = Registry(config.server.data_dir)
    registry.set_deployed("propensity", model.manifest.version)
    bundle = registry.read("propensity", model.manifest.version)
    clock = Clock(NOW)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(LINK_KEY_ENV, "unit-test-link-secret")
        logs = DecisionLog(str(data / "logs"), 0, config.logs)
        shard = Shard(0, config, [bundle], clock, str(data / "shard-0"), logs)
    w = World(config, bundle, clock, shard, data)
    try:
        for customer in ("c-1", "c-3"):
            edge.apply_events(shard, [w.event(customer, "profile_update", **AFFLUENT)])
        edge.apply_events(shard, [w.event("c-1", "consent", sms=False)])  # removed for consent
        yield w
    finally:
        shard.close()


AFFLUENT = {"age": 45, "income": 90000, "credit_score": 760, "segment": "affluent"}


def _decide(shard: Shard, customer: str, channel: str, **request: Any) -> dict[str, Any]:
    return edge.decide(shard, {"customer_id": customer, "channel": channel, **request})


def test_decisions_with_explanations_and_a_channel_choice(world: World) -> None:
    web = _decide(world.shard, "c-1", "web", explain=True, limit=2, placement="home_hero")
    kinds = {(e["eligible"], "stage" in e, e.get("do_nothing", False)) for e in web["explanation"]}
    assert kinds >= {(False, True, False), (True, False, False), (True, False, True)}
    assert any("why_not" in e for e in web["explanation"])  # more than the limit qualify
    conforms("/v1/decide", "POST", web)
    sms = _decide(world.shard, "c-1", "sms", explain=True)
    assert any(e["rule"].startswith("consent") for e in sms["explanation"] if not e["eligible"])
    conforms("/v1/decide", "POST", sms)
    out = _decide(world.shard, "c-1", OUTBOUND, explain=True, context={"device": "mobile"})
    assert out["channel_choice"]["channels"] and out["explanation"][-1]["contact_cost"] >= 0
    conforms("/v1/decide", "POST", out)
    cold = _decide(world.shard, "nobody-yet", "app", dry_run=True)
    assert "explanation" not in cold and "channel_choice" not in cold
    conforms("/v1/decide", "POST", cold)


def test_messages_triggers_queued_and_the_open_link_decision(world: World) -> None:
    shard = world.shard
    edge.apply_events(
        shard,
        [
            world.event("c-1", "address_change"),  # call_center, at once
            world.event("c-1", "geofence_enter", store="london_1"),  # outbound: its channel
            world.event("c-1", "cart_add"),  # email, 30 minutes later without a purchase
        ],
    )
    world.clock.t += 31 * 60
    assert shard.tick()["fired"] == 1
    messages = [m for ch in world.config.channels for m in edge.lease_outbound(shard, ch, 100)]
    assert {m["trigger"] for m in messages} >= {"address_changed", "cart_abandoned"}
    assert all(m["open_token"] for m in messages)
    body = {"messages": messages, "lease_s": world.config.delivery.lease_s}
    conforms("/v1/outbound", "GET", body)
    first = messages[0]
    opened = Decide(first["customer_id"], first["channel"], context={"opened": first["id"]})
    conforms("/v1/open/{token}", "GET", opened_body(shard.decide(opened), first["id"]))


def test_profiles_known_unknown_and_erased(world: World) -> None:
    shard = world.shard
    _decide(shard, "c-1", "web")
    profile = edge.get_profile(shard, "c-1")
    assert profile["known"] and profile["recent_decisions"] and profile["attributes"]["segment"]
    conforms("/v1/profiles/{customer_id}", "GET", profile)
    conforms("/v1/profiles/{customer_id}", "GET", edge.get_profile(shard, "never-seen"))
    edge.apply_events(shard, [world.event("c-2", "page_view", page="cards")])
    _decide(shard, "c-2", "web")
    erased = edge.erase_profile(shard, "c-2")
    assert erased["erased"] and erased["decisions_removed"] == 1
    conforms("/v1/profiles/{customer_id}", "DELETE", erased)


def test_status_models_and_catalog(world: World) -> None:
    shard = world.shard
    weather = pa.table(
        {"region": ["north", "south"], "temp_c": [6.5, 14.0], "condition": ["rain", "dry"]}
    )
    shard.stage_context("weather", "v1", weather)
    shard.commit_context("weather")
    d = _decide(shard, "c-1", "web")
    shown = {"decision_id": d["decision_id"], "action_id": d["actions"][0]["action_id"]}
    edge.record_outcomes(shard, [{**shown, "outcome": o, "ts": world.clock.t} for o in OUTCOMES])
    shard.snapshot()
    status = shard.status()
    assert status["last_snapshot"] and status["recovery"] and status["logs"] is not None
    assert status["context_tables"]["weather"]["rows"] == 2
    failing = DeliveryLoop("sms", lambda batch: ([], "HTTP 500"), _call(shard), 10, 5.0)
    edge.apply_events(shard, [world.event("c-3", "failed_login")] * 3)  # an sms, which fails
    failing.step()
    status["outbound"]["sinks"] = {"sms": dict(failing.stats)}  # as the shard actor adds
    assert status["outbound"]["sinks"]["sms"]["last_error"] == "HTTP 500"
    in_memory = Shard(1, world.config, [world.bundle], world.clock).status()
    assert in_memory["recovery"] == {} and in_memory["logs"] is None
    conforms("/v1/status", "GET", {"shards": [status, in_memory, {"shard": 2, "ready": False}]})
    supervisor = Supervisor(world.config, LocalFleet([shard]))
    stats = supervisor.model_stats()
    assert stats["propensity"]["versions"][0]["accept_rate"] is not None
    conforms("/v1/models/stats", "GET", {"models": stats})
    conforms("/v1/catalog", "GET", supervisor.catalog())


def _call(shard: Shard) -> Any:
    return lambda method, *args: getattr(shard, method)(*args)


@pytest.mark.parametrize(
    ("path", "method", "change"),
    [
        ("/v1/decide", "POST", lambda d: d.pop("variant")),
        ("/v1/decide", "POST", lambda d: d.update(coupon="X")),
        ("/v1/decide", "POST", lambda d: d["actions"][0].update(priority="high")),
        ("/v1/profiles/{customer_id}", "GET", lambda d: d.update(shard=None)),
    ],
)
def test_a_drifted_answer_is_caught(world: World, path: str, method: str, change: Any) -> None:
    body = (
        _decide(world.shard, "c-1", "web", limit=3)
        if path == "/v1/decide"
        else edge.get_profile(world.shard, "c-1")
    )
    conforms(path, method, body)
    change(body)
    for accept in ACCEPTS:
        with pytest.raises((Failure, FailureGroup)):
            conforms(path, method, body, (accept,))
