"""POST /v1/decide/batch over real in-process shards: the route (serving/api.py) on a
FastAPI app, its router (actors/router.py) over links that run each call on a real
`Shard` as the actor does (`run_calls`) and count them. The links stand in for the Ray
transport only. Each request of a batch is answered on its own, in order; a shard gets
one call carrying all its requests; a slot that moved is decided by its new owner only;
a merged customer by its survivor; a shard that is down fails only its requests."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from actors.calls import Call, run_calls
from actors.messages import (
    AbsorbSlots,
    DecideMany,
    DropSlots,
    FreezeSlots,
    SetSlotMap,
)
from actors.router import Router, Unreachable
from actors.shard import Shard
from decisioning.config import Config
from decisioning.config.loader import config_from_dict
from decisioning.profile.slots import SLOTS, SlotMap, contiguous_map, slot_of
from serving.api import Api, api_router
from serving.auth import new_key, sha256_hex
from serving.owner import STRICT, OwnerApi
from serving.responses import install_error_handlers
from tests.conftest import SMALL
from tests.unit import edge
from tests.unit.decisioning.policy.test_decide import NOW, Clock
from tests.unit.serving.test_answers import conforms

DECIDE, EVENTS = new_key(), new_key()  # a key for the route, one without its scope


def _config(tmp: Path, **server: Any) -> Config:
    keys = [
        {"name": "app", "sha256": sha256_hex(DECIDE), "scopes": ["decide", "identities:write"]},
        {"name": "feed", "sha256": sha256_hex(EVENTS), "scopes": ["events:write"]},
    ]
    return config_from_dict(
        {
            **SMALL,
            "identity": {"kinds": ["cookie_id"]},
            "auth": {"keys": keys},
            "server": {**SMALL["server"], "data_dir": str(tmp / "data"), **server},
        },
        "small.yaml",
    )


class Link:
    """One in-process shard behind a transport a test can take down; it keeps every
    call that reached the shard: (method, the customers its message names)."""

    def __init__(self, shard: Shard) -> None:
        self.shard = shard
        self.down = False
        self.calls: list[tuple[str, list[str]]] = []

    async def call_many(self, calls: list[Call]) -> list[Any]:
        await asyncio.sleep(0)  # (a remote call yields: others run meanwhile)
        if self.down:
            raise Unreachable("ActorDiedError")
        self.calls += [(method, _named(args[0])) for method, args in calls]
        return run_calls(self.shard, calls)

    async def ready(self) -> None:
        await asyncio.sleep(0)
        if self.down:
            raise Unreachable("ActorUnavailableError")

    def decided(self) -> list[list[str]]:
        """The customers of each `decide_many` call this shard got."""
        return [named for method, named in self.calls if method == "decide_many"]


def _named(message: Any) -> list[str]:
    if isinstance(message, DecideMany):
        return [d.customer_id for d in message.requests]
    return [str(getattr(message, "customer_id", getattr(message, "survivor", "")))]


class Supervisor:
    """The supervisor as the router and the merge protocol see it."""

    def __init__(self, owners: list[int], epoch: int) -> None:
        self.owners, self.epoch = owners, epoch
        self.audit: list[Any] = []

    async def call(self, method: str, *args: Any) -> Any:
        if method == "layout":
            return ["shard-0", "shard-1"], list(self.owners), self.epoch
        assert method == "audit_identity", method
        self.audit.append(args)
        return None


class World:
    """Two shards behind a router and the routes; `port`: the routes as shard `port`'s
    own port serves them (serving/owner.py), else as the ingress does."""

    def __init__(
        self, config: Config, slot_map: SlotMap | None = None, port: int | None = None
    ) -> None:
        owners = list(contiguous_map(2) if slot_map is None else slot_map.owners)
        epoch = 0 if slot_map is None else slot_map.epoch
        self.config = config
        self.shards = [Shard(i, config, clock=Clock(), slot_map=slot_map) for i in range(2)]
        self.links = [Link(s) for s in self.shards]
        self.supervisor = Supervisor(owners, epoch)
        self.router = Router(config, self.supervisor, owners, self.links, epoch)
        api = Api(config, self.router)
        if port is not None:
            api = OwnerApi(config, self.router, lambda slot: (owners[slot], epoch))
            api.shard_id = port
        app = FastAPI()
        install_error_handlers(app)
        app.include_router(api_router(lambda: api))
        self.app = app

    def on(self, shard: int, n: int = 1, prefix: str = "c") -> list[str]:
        """`n` customer ids the router sends to `shard`."""
        ids = (f"{prefix}{i}" for i in range(10_000))
        out = []
        while len(out) < n:
            c = next(ids)
            if self.router.shard_of(c) == shard:
                out.append(c)
        return out

    def decisions(self, shard: int, customer: str) -> int:
        """How many decisions `shard` recorded for `customer`."""
        return len(edge.get_profile(self.shards[shard], customer)["recent_decisions"])


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(_config(tmp_path))


@pytest.fixture
def client(world: World) -> Iterator[TestClient]:
    with TestClient(world.app, headers={"x-api-key": DECIDE}) as c:  # one event loop
        yield c


def _batch(client: TestClient, requests: Any, **kw: Any) -> Any:
    r = client.post("/v1/decide/batch", json={"requests": requests}, **kw)
    assert r.status_code == 200, r.text
    return r.json()["results"]


def test_each_request_is_answered_in_order_with_one_call_per_shard(
    world: World, client: TestClient
) -> None:
    a, a2 = world.on(0, 2)
    [b] = world.on(1)
    view = {"type": "page_view", "ts": NOW, "event_id": "v1"}
    requests = [
        {"customer_id": a, "channel": "web", "limit": 2},
        {"customer_id": b, "channel": "web", "limit": "three"},  # invalid field
        {"customer_id": b, "channel": "fax"},  # unknown channel
        {"customer_id": b, "channel": "email", "event": view},
        {"customer_id": a, "channel": "web", "limit": 50},  # refused by the shard
        42,  # not a request at all
        {"customer_id": a2, "channel": "web", "dry_run": True},
        {"customer_id": a, "channel": "email", "placement": "footer"},
    ]
    results = _batch(client, requests)
    conforms("/v1/decide/batch", "POST", {"results": results})
    decided = [i for i, r in enumerate(results) if "error" not in r]
    assert decided == [0, 3, 6, 7]
    assert [results[i]["customer_id"] for i in decided] == [a, b, a2, a]
    assert [results[i]["channel"] for i in decided] == ["web", "email", "web", "email"]
    assert results[7]["placement"] == "footer"
    errors = {
        i: (r["status"], r["error"]["code"], r["error"].get("field"))
        for i, r in enumerate(results)
        if "error" in r
    }
    assert errors == {
        1: (422, "invalid_field", "requests[1].limit"),
        2: (422, "unknown_channel", "requests[2].channel"),
        4: (422, "invalid_field", "requests[4].limit"),
        5: (422, "invalid_field", "requests[5]"),
    }
    # one call per shard, carrying all of its requests in their order
    assert world.links[0].decided() == [[a, a, a2, a]]
    assert world.links[1].decided() == [[b]]
    assert [len(link.calls) for link in world.links] == [1, 1]
    # recorded as /v1/decide records (not the dry run), the triggering event applied
    assert (world.decisions(0, a), world.decisions(0, a2), world.decisions(1, b)) == (2, 0, 1)
    assert edge.get_profile(world.shards[1], b)["aggregates"]["views_all"] == 1.0


def test_a_request_answers_what_decide_answers(world: World, client: TestClient) -> None:
    [a] = world.on(0)
    one = {"customer_id": a, "channel": "web", "explain": True, "dry_run": True}
    single = client.post("/v1/decide", json=one).json()
    [batched] = _batch(client, [one])
    assert batched.keys() == single.keys()
    assert {k: v for k, v in batched.items() if k not in ("decision_id", "ts")} == {
        k: v for k, v in single.items() if k not in ("decision_id", "ts")
    }
    unknown, refused = {"customer_id": a, "channel": "fax"}, {**one, "limit": 50}
    for bad in (unknown, refused):  # at the ingress; by the shard
        alone = client.post("/v1/decide", json=bad)
        [item] = _batch(client, [bad])
        assert item["status"] == alone.status_code == 422
        error = alone.json()["error"]
        assert item["error"] == {**error, "field": f"requests[0].{error['field']}"}


def test_each_request_has_its_own_request_id(world: World, client: TestClient) -> None:
    """A retried batch gets the recorded decision again for each request that carries a
    request_id (of its customer), and a new one for each that carries none; a batch
    takes no Idempotency-Key header (one id for several requests)."""
    [a] = world.on(0)
    [b] = world.on(1)
    requests = [
        {"customer_id": a, "channel": "web", "request_id": "r1"},
        {"customer_id": b, "channel": "web", "request_id": "r1"},  # another customer's
        {"customer_id": a, "channel": "web"},
    ]
    first, again = _batch(client, requests), _batch(client, requests)
    assert again[:2] == first[:2] and first[0]["decision_id"] != first[1]["decision_id"]
    assert again[2]["decision_id"] != first[2]["decision_id"]
    assert (world.decisions(0, a), world.decisions(1, b)) == (3, 1)
    reused = {"customer_id": a, "channel": "email", "request_id": "r1"}
    [item] = _batch(client, [reused])
    assert (item["status"], item["error"]["code"]) == (409, "request_id_reused")
    keyed = client.post(
        "/v1/decide/batch", json={"requests": requests}, headers={"Idempotency-Key": "k1"}
    )
    error = keyed.json()["error"]
    assert (keyed.status_code, error["code"], error["field"]) == (
        422,
        "invalid_field",
        "Idempotency-Key",
    )
    assert world.decisions(0, a) == 3


def test_at_a_shards_port_a_strict_request_for_another_shard_fails_only_itself(
    tmp_path: Path,
) -> None:
    """At shard 0's own port, with X-Nextbest-Route: strict, a request for shard 1's
    customer is answered 421 slot_moved in its place, as /v1/decide answers it there,
    and nothing of it is applied; the rest are decided."""
    world = World(_config(tmp_path), port=0)
    [a] = world.on(0)
    [b] = world.on(1)
    requests = [{"customer_id": c, "channel": "web"} for c in (a, b, a)]
    with TestClient(world.app, headers={"x-api-key": DECIDE, STRICT: "strict"}) as client:
        results = _batch(client, requests)
        alone = client.post("/v1/decide", json=requests[1])
    assert [r.get("customer_id") for r in results] == [a, None, a]
    assert results[1] == {"error": alone.json()["error"], "status": alone.status_code}
    assert (alone.status_code, alone.json()["error"]["code"]) == (421, "slot_moved")
    assert world.links[0].decided() == [[a, a]] and world.links[1].calls == []


def test_a_shard_that_is_down_fails_only_its_requests(world: World, client: TestClient) -> None:
    [a] = world.on(0)
    b, b2 = world.on(1, 2)
    world.links[1].down = True
    requests = [{"customer_id": c, "channel": "web"} for c in (b, a, b2)]
    results = _batch(client, requests)
    assert results[1]["customer_id"] == a and world.decisions(0, a) == 1
    for r in (results[0], results[2]):
        assert (r["status"], r["error"]["code"]) == (503, "shard_unavailable")
    assert world.links[1].calls == []


def test_a_request_whose_slot_moved_is_decided_by_the_new_owner_only(tmp_path: Path) -> None:
    """The router's map is older than the shards': shard 0 refuses the whole call (one
    slot in it is shard 1's now) and applies nothing of it; the batch is regrouped by the
    refreshed map and each request goes to its owner, once."""
    config = _config(tmp_path)
    old = SlotMap(1, (0,) * SLOTS, 2)
    world = World(config, old)
    stay, moved = world.on(0, 2)  # by the router's (old) map, both on shard 0
    lo = slot_of(moved)
    assert slot_of(stay) != lo
    src, dst = world.shards
    dst.absorb_slots(AbsorbSlots(src.freeze_slots(FreezeSlots("m1", lo, lo + 1))))
    new = SlotMap(2, tuple(1 if s == lo else 0 for s in range(SLOTS)), 2)
    for s in world.shards:
        s.set_slot_map(SetSlotMap(new))
    src.drop_slots(DropSlots("m1", lo, lo + 1))
    world.supervisor.owners, world.supervisor.epoch = list(new.owners), 2

    with TestClient(world.app, headers={"x-api-key": DECIDE}) as client:
        requests = [{"customer_id": c, "channel": "web"} for c in (moved, stay, moved)]
        results = _batch(client, requests)
    assert [r["customer_id"] for r in results] == [moved, stay, moved]
    assert world.links[0].decided() == [[moved, stay, moved], [stay]]  # refused, then its part
    assert world.links[1].decided() == [[moved, moved]]
    assert world.router.epoch == 2
    assert (world.decisions(0, stay), world.decisions(1, moved)) == (1, 2)
    assert world.decisions(0, moved) == 0  # never decided by a shard that does not own it


def test_a_merged_customer_is_decided_for_its_survivor(world: World, client: TestClient) -> None:
    [survivor] = world.on(0, prefix="s")
    [merged] = world.on(1, prefix="m")
    event = {"customer_id": merged, "type": "page_view", "ts": NOW}
    world.shards[1].apply_events(edge.events([event]))
    merge = client.post("/v1/identities/merge", json={"survivor": survivor, "merged": merged})
    assert merge.status_code == 200 and merge.json()["changed"] is True
    requests = [{"customer_id": c, "channel": "web"} for c in (merged, survivor)]
    results = _batch(client, requests)
    assert [r["customer_id"] for r in results] == [survivor, survivor]
    assert world.links[1].decided() == [[merged]]  # answered moved, nothing applied
    assert world.links[0].decided() == [[survivor], [survivor]]
    assert world.decisions(0, survivor) == 2


def test_the_envelope_is_refused_whole(world: World, client: TestClient) -> None:
    [a] = world.on(0)
    one = {"customer_id": a, "channel": "web"}
    limit = world.config.server.max_batch

    def refused(body: Any, **kw: Any) -> tuple[int, str, str | None]:
        r = client.post("/v1/decide/batch", **({"json": body} | kw))
        err = r.json()["error"]
        return r.status_code, err["code"], err.get("field")

    assert refused([one]) == (422, "invalid_field", None)  # a list, not {"requests": [...]}
    assert refused({"requests": []}) == (422, "empty_batch", "requests")
    assert refused({"requests": one}) == (422, "invalid_field", "requests")
    assert refused({}) == (422, "missing_field", "requests")
    assert refused({"requests": [one], "more": 1}) == (422, "unknown_field", "more")
    assert refused({"requests": [one] * (limit + 1)}) == (413, "batch_too_large", None)
    big = {"requests": [{**one, "placement": "x" * 100}] * 20_000}
    assert refused(big)[:2] == (413, "body_too_large")
    assert refused({"requests": [one]}, headers={"x-api-key": "nope"})[:2] == (
        401,
        "unauthenticated",
    )
    assert refused({"requests": [one]}, headers={"x-api-key": EVENTS})[:2] == (403, "forbidden")
    assert [link.calls for link in world.links] == [[], []]  # nothing was sent
    assert len(_batch(client, [one] * limit)) == limit  # exactly max_batch


def test_msgpack_both_ways(world: World, client: TestClient) -> None:
    [a] = world.on(0)
    [b] = world.on(1)
    body = {"requests": [{"customer_id": c, "channel": "web"} for c in (a, b)]}
    r = client.post(
        "/v1/decide/batch",
        content=msgpack.packb(body),
        headers={"content-type": "application/msgpack", "accept": "application/msgpack"},
    )
    assert r.status_code == 200 and r.headers["content-type"] == "application/msgpack"
    results = msgpack.unpackb(r.content)["results"]
    assert [d["customer_id"] for d in results] == [a, b]


def test_an_overloaded_replica_sheds_the_batch_whole_before_any_call(tmp_path: Path) -> None:
    world = World(_config(tmp_path, max_ongoing_requests=1))
    [a] = world.on(0)
    [b] = world.on(1)
    with TestClient(world.app, headers={"x-api-key": DECIDE}) as client:
        both = client.post(
            "/v1/decide/batch",
            json={"requests": [{"customer_id": c, "channel": "web"} for c in (a, b)]},
        )
        alone = _batch(client, [{"customer_id": a, "channel": "web"}] * 3)  # one call
    assert both.status_code == 503 and both.headers["retry-after"] == "1"
    assert both.json()["error"]["code"] == "overloaded"
    assert [r["customer_id"] for r in alone] == [a, a, a]
    assert world.links[0].decided() == [[a, a, a]] and world.links[1].calls == []
