"""The parts the ingress routes are made of, without Ray: the outbound poll's query and
acks (serving/outbound.py), a context table's body (serving/context.py), and events and
outcomes checked at their place in a batch (serving/events.py), over real shards."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import msgpack
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from actors.messages import Outcome
from actors.shard import decision_slot
from decisioning.profile import Event, ProfileSchema
from serving.context import table_of
from serving.events import checked_events, ingest, record_outcomes
from serving.outbound import ack, poll_of, take
from serving.wire import DEFAULT, WireError, validate
from tests.unit.actors.shard.test_triggers import _config as trigger_config
from tests.unit.decisioning.policy.test_decide import NOW
from tests.unit.decisioning.profile.test_identity import _config
from tests.unit.identity_harness import fast, identities

CHANNELS, SINKS = frozenset({"web", "email"}), frozenset({"email"})


def _refused(call: object, *args: object) -> WireError:
    with pytest.raises(WireError) as e:
        call(*args)  # type: ignore[operator]
    return e.value


@pytest.mark.parametrize(
    ("query", "status", "code", "field"),
    [
        ({"channel": "web", "page": "2"}, 422, "unknown_field", "page"),
        ({}, 422, "missing_field", "channel"),
        ({"channel": "web", "limit": "0"}, 422, "invalid_field", "limit"),
        ({"channel": "web", "limit": "x"}, 422, "invalid_field", "limit"),
        ({"channel": "web", "wait_s": "nan"}, 422, "invalid_field", "wait_s"),
        ({"channel": "sms"}, 422, "unknown_channel", "channel"),
        ({"channel": "email"}, 409, "channel_has_sink", "channel"),
    ],
)
def test_a_bad_poll_is_refused_with_its_field(
    query: dict[str, str], status: int, code: str, field: str
) -> None:
    e = _refused(poll_of, query, CHANNELS, SINKS)
    assert (e.status, e.code, e.field) == (status, code, field)


def test_a_poll_has_defaults() -> None:
    assert poll_of({"channel": "web"}, CHANNELS, SINKS) == ("web", 100, 0.0)
    assert poll_of({"channel": "web", "limit": "5", "wait_s": "2.5"}, CHANNELS, SINKS) == (
        "web",
        5,
        2.5,
    )


def test_a_table_comes_as_rows_or_parquet() -> None:
    rows = [{"branch": "b1", "rate": 1.5}, {"branch": "b2", "rate": 2.0}]
    as_json = json.dumps({"rows": rows}).encode()
    assert table_of(as_json, "application/json", 10_000, 32).to_pylist() == rows
    packed = msgpack.packb({"rows": rows})
    assert table_of(packed, "application/msgpack", 10_000, 32).to_pylist() == rows
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(rows), sink)
    parquet = sink.getvalue().to_pybytes()
    media = "application/vnd.apache.parquet; charset=binary"
    assert table_of(parquet, media, 10_000, 32).to_pylist() == rows
    for body, ctype, limit, status, code in (
        (parquet, media, 10, 413, "body_too_large"),  # (Parquet is not decoded: counted)
        (as_json, "application/json", 10, 413, "body_too_large"),
        (b'{"rows": [1, 2]}', "application/json", 10_000, 422, "invalid_table"),
        (b'{"rows": [], "x": 1}', "application/json", 10_000, 422, "invalid_table"),
        (b"not parquet", media, 10_000, 422, "invalid_table"),
    ):
        e = _refused(table_of, body, ctype, limit, 32)
        assert (e.status, e.code) == (status, code)


def test_an_event_or_outcome_is_refused_at_its_place_in_the_batch(tmp_path: Path) -> None:
    config = fast(_config())
    schema = ProfileSchema(config)
    good = {"customer_id": "a", "type": "page_view", "ts": NOW}
    bad = {"customer_id": "a", "type": "profile_update", "ts": NOW, "properties": {"shoe": 1}}
    items = [validate(DEFAULT.EventIn, e) for e in (good, bad)]
    e = _refused(checked_events, schema, items, True, NOW)
    assert (e.status, e.code, e.field) == (422, "unknown_field", "[1].properties.shoe")
    e = _refused(checked_events, schema, items[1:], False, NOW)
    assert e.field == "properties.shoe"
    assert checked_events(schema, items[:1], False, NOW)[0].customer_id == "a"

    ident, router = identities(config, 2, tmp_path)

    def shard_of(decision_id: str) -> int:
        return router.slot_map[decision_slot(decision_id)]

    async def body() -> None:
        outcome = Outcome("d-0001-00000000000000aa", "x", "click")
        malformed = outcome._replace(decision_id="nope")
        with pytest.raises(WireError) as gone:
            await record_outcomes(ident, [outcome, malformed], shard_of, True)
        assert (gone.value.status, gone.value.code, gone.value.field) == (
            404,
            "unknown_decision",
            "[1].decision_id",
        )
        with pytest.raises(WireError) as unknown:  # well formed, never made: the shard says
            await record_outcomes(ident, [outcome], shard_of, False)
        assert (unknown.value.status, unknown.value.field) == (404, "[0].decision_id")
        with pytest.raises(WireError) as invalid:
            await ack(ident.fanout, shard_of, ["d-0001-00000000000000aa", "nope"])
        assert (invalid.value.status, invalid.value.field) == (422, "ids[1]")
        assert await ack(ident.fanout, shard_of, ["d-0001-00000000000000aa"]) == 0

    try:
        asyncio.run(body())
    finally:
        router.close()


def test_a_poll_takes_the_oldest_messages_over_every_shard_and_gives_the_rest_back(
    tmp_path: Path,
) -> None:
    """GET /v1/outbound's take (serving/outbound.py) over two real shards: at most
    `limit` message bodies, oldest first; what the shards leased beyond that is
    released at once, so the next poll gets it."""
    ident, router = identities(fast(trigger_config()), 2, tmp_path)
    customers = [f"c{i}" for i in range(20)]
    on = {router.shard_of(c) for c in customers}
    assert on == {0, 1}

    def shard_of(decision_id: str) -> int:
        return router.slot_map[decision_slot(decision_id)]

    async def body() -> tuple[list[Any], list[Any], list[Any]]:
        for c in customers:  # each moves once: one message per customer, a tick apart
            router.clock.t += 1
            await ingest(ident, [Event(c, "address_change", router.clock.t)])
        poll = ("email", 5, 0.0)
        first = await take(ident.fanout, shard_of, poll)
        second = await take(ident.fanout, shard_of, poll)
        rest = await take(ident.fanout, shard_of, ("email", 100, 0.0))
        return first, second, rest

    try:
        first, second, rest = asyncio.run(body())
    finally:
        router.close()
    assert [m["customer_id"] for m in first] == customers[:5]  # the oldest, over both shards
    assert [m["customer_id"] for m in second] == customers[5:10]  # the extras came back
    assert [m["customer_id"] for m in rest] == customers[10:]
    for m in first:
        assert list(m) == ["id", "open_token", "idempotency_key", "customer_id", "channel",
                           "trigger", "queued_at", "actions", "decision"]  # fmt: skip
        assert m["trigger"] == "moved" and m["decision"]["decision_id"] == m["id"]
