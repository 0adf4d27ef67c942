"""Delivery of queued messages by the real sinks: a webhook receiver on 127.0.0.1 that
fails intermittently, and Parquet files; nothing lost, duplicates only by retry and
always with the same idempotency key."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pytest

from actors.delivery import DeliveryLoop, ParquetSink, WebhookSink
from actors.shard import Shard
from decisioning.config import ParquetSinkSpec, WebhookSinkSpec
from tests.receiver import Receiver
from tests.unit import edge
from tests.unit.actors.shard.test_triggers import _config, ev
from tests.unit.decisioning.policy.test_decide import NOW, Clock


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(flaky=True)
    yield r
    r.close()


def _shard_with_messages(n: int) -> Shard:
    shard = Shard(0, _config(), clock=Clock())
    edge.apply_events(shard, [ev("address_change", NOW, cid=f"c{i}") for i in range(n)])
    assert len(shard.outbox) == n
    return shard


def _loop(shard: Shard, sink: Any) -> DeliveryLoop:
    def call(method: str, *args: Any) -> Any:
        return getattr(shard, method)(*args)

    return DeliveryLoop("email", sink, call, batch=7, retry_max_s=0.01)


def test_webhook_retries_and_never_loses_or_duplicates(receiver: Receiver) -> None:
    shard = _shard_with_messages(40)
    queued = {m.id for m in shard.outbox.messages()}
    loop = _loop(shard, WebhookSink(WebhookSinkSpec(url=receiver.url, timeout_s=5)))
    for _ in range(200):
        if not len(shard.outbox):
            break
        loop.step()
    assert len(shard.outbox) == 0
    keys = [k for k, _ in receiver.stored]
    assert set(keys) == queued  # nothing lost
    assert len(keys) > len(queued)  # the receiver's silent failures made duplicates ...
    for key, body in receiver.stored:  # ... each under the key of its one decision
        assert body["id"] == key == body["decision"]["decision_id"]
        assert body["actions"][0]["action_id"] == "cart_reminder"
    assert loop.stats["failed_attempts"] > 0 and loop.stats["delivered"] == 40
    assert "HTTP 50" in loop.stats["last_error"]
    assert shard.counters["messages_acked"] == 40


def test_webhook_down_keeps_everything_queued() -> None:
    shard = _shard_with_messages(5)
    dead = WebhookSink(WebhookSinkSpec(url="http://127.0.0.1:9/none", timeout_s=1))
    loop = _loop(shard, dead)
    for _ in range(3):
        assert loop.step() > 0  # backs off
    assert len(shard.outbox) == 5 and shard.outbound_status()["leased"] == 0
    assert "ConnectError" in loop.stats["last_error"]


def test_webhook_token_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = WebhookSinkSpec(url="http://127.0.0.1:9/x", token_env="NB_TEST_HOOK_TOKEN")
    monkeypatch.delenv("NB_TEST_HOOK_TOKEN", raising=False)
    with pytest.raises(ValueError, match="NB_TEST_HOOK_TOKEN is not set"):
        WebhookSink(spec)
    monkeypatch.setenv("NB_TEST_HOOK_TOKEN", "s3cret")
    assert WebhookSink(spec).client.headers["authorization"] == "Bearer s3cret"


def test_parquet_sink_writes_whole_files_and_retries_after_a_failure(tmp_path: Path) -> None:
    shard = _shard_with_messages(10)
    queued = {m.id for m in shard.outbox.messages()}
    blocked = tmp_path / "out"
    blocked.write_text("a file where the directory should be")
    loop = _loop(shard, ParquetSink(ParquetSinkSpec(path=str(blocked)), 0))
    assert loop.step() > 0 and len(shard.outbox) == 10  # cannot write: kept
    blocked.unlink()
    while len(shard.outbox):
        loop.step()
    table = ds.dataset(str(blocked), format="parquet", partitioning="hive").to_table()
    assert set(table.column("id").to_pylist()) == queued and table.num_rows == 10
    assert set(table.column("channel").to_pylist()) == {"email"}
    assert not [p for p in blocked.rglob(".*")]  # no half-written files left
    decision = json.loads(table.column("decision")[0].as_py())
    assert decision["decision_id"] in queued
