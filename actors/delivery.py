"""Sinks that deliver a shard's outbound messages, and the loop that drives them.

The loop runs in a thread of the shard actor and talks to the shard only through the
actor's own handle (lease, ack, release: the shard stays single-writer). A sink is an
edge: it gets each leased message's wire body, built here as the loop hands the batch
over (the same body GET /v1/outbound answers). A message is acked only after its sink
took it, so delivery is at least once; the decision id rides along as the idempotency
key, so a receiver can drop the rare duplicate.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq

from actors.messages import AckOutbound, LeaseOutbound, ReleaseOutbound
from decisioning.config import ParquetSinkSpec, SinkSpec, WebhookSinkSpec
from decisioning.stores.fs import filesystem

__all__ = ["DeliveryLoop", "ParquetSink", "WebhookSink", "make_sink"]

log = logging.getLogger("nextbest.delivery")

Deliver = Callable[[list[dict[str, Any]]], tuple[list[str], str | None]]


class WebhookSink:
    """POST each message as JSON with `Idempotency-Key: <decision id>`; a 2xx answer is
    delivery. Stops at the first failure (the rest are tried again later, in order)."""

    def __init__(self, spec: WebhookSinkSpec) -> None:
        self.url = spec.url
        headers = {"user-agent": "nextbest-outbound"}
        if spec.token_env:
            token = os.environ.get(spec.token_env)
            if not token:
                raise ValueError(f"delivery webhook: ${spec.token_env} is not set")
            headers["authorization"] = f"Bearer {token}"
        self.client = httpx.Client(timeout=spec.timeout_s, headers=headers)

    def __call__(self, messages: list[dict[str, Any]]) -> tuple[list[str], str | None]:
        done: list[str] = []
        for m in messages:
            try:
                r = self.client.post(self.url, json=m, headers={"idempotency-key": m["id"]})
            except httpx.HTTPError as e:
                return done, f"{type(e).__name__}: {e}"
            if not 200 <= r.status_code < 300:
                return done, f"HTTP {r.status_code} from {self.url}"
            done.append(m["id"])
        return done, None


class ParquetSink:
    """Write each batch as one Parquet file under
    `<path>/channel=<channel>/date=<UTC day>/`, written under a hidden name and then
    renamed, so readers see whole files only."""

    def __init__(self, spec: ParquetSinkSpec, shard_id: int) -> None:
        self.fs, self.root = filesystem(spec.path)
        self.shard_id = shard_id

    def __call__(self, messages: list[dict[str, Any]]) -> tuple[list[str], str | None]:
        if not messages:
            return [], None
        now = time.time()
        day = dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y-%m-%d")
        channel = messages[0]["channel"]
        folder = f"{self.root}/channel={channel}/date={day}"
        name = f"{int(now * 1000)}-s{self.shard_id}-{uuid.uuid4().hex[:8]}.parquet"
        table = pa.table(
            {
                "id": [m["id"] for m in messages],
                "customer_id": [m["customer_id"] for m in messages],
                "trigger": [m["trigger"] for m in messages],
                "queued_at": pa.array([m["queued_at"] for m in messages], pa.float64()),
                "action_ids": [[a["action_id"] for a in m["actions"]] for m in messages],
                "decision": [_json(m["decision"]) for m in messages],
            }
        )
        try:
            self.fs.create_dir(folder, recursive=True)
            tmp = f"{folder}/.{name}"
            pq.write_table(table, tmp, filesystem=self.fs)
            self.fs.move(tmp, f"{folder}/{name}")
        except (OSError, pa.ArrowException) as e:
            return [], f"{type(e).__name__}: {e}"
        return [m["id"] for m in messages], None


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def make_sink(spec: SinkSpec, shard_id: int) -> Deliver:
    if spec.webhook is not None:
        return WebhookSink(spec.webhook)
    assert spec.parquet is not None
    return ParquetSink(spec.parquet, shard_id)


class DeliveryLoop:
    """Lease a batch of a channel's messages, hand it to the sink, ack what it took and
    release the rest; back off (doubling up to `retry_max_s`) while the sink fails."""

    def __init__(
        self,
        channel: str,
        sink: Deliver,
        call: Callable[..., Any],
        batch: int,
        retry_max_s: float,
        idle_s: float = 0.1,
    ) -> None:
        self.channel = channel
        self.sink = sink
        self.call = call  # call(method, *args) -> the shard's result (runs on the actor)
        self.batch = batch
        self.retry_max_s = retry_max_s
        self.idle_s = idle_s
        self.stats: dict[str, Any] = {
            "delivered": 0,
            "failed_attempts": 0,
            "last_error": None,
            "retry_in_s": 0.0,
        }

    def step(self) -> float:
        """One attempt; returns how long to wait before the next."""
        leased = self.call("lease_outbound", LeaseOutbound(self.channel, self.batch))
        if not isinstance(leased, list):  # the shard answered an error (fenced, restarting)
            return 1.0
        if not leased:
            return self.idle_s
        batch = [m.message.to_wire(m.open_token) for m in leased]
        try:
            done, error = self.sink(batch)
        except Exception as e:  # noqa: BLE001 - a sink bug must not stop delivery
            done, error = [], f"{type(e).__name__}: {e}"
        if done:
            self.call("ack_outbound", AckOutbound(tuple(done)))
            self.stats["delivered"] += len(done)
        if error is None:
            self.stats["retry_in_s"] = 0.0
            return 0.0
        rest = [m["id"] for m in batch if m["id"] not in set(done)]
        self.call("release_outbound", ReleaseOutbound(tuple(rest)))
        self.stats["failed_attempts"] += 1
        self.stats["last_error"] = error
        wait = min(max(self.stats["retry_in_s"] * 2, 0.5), self.retry_max_s)
        self.stats["retry_in_s"] = wait
        log.warning(
            "outbound %s: delivery failed (%s); retrying in %.1fs", self.channel, error, wait
        )
        return wait

    def run(self) -> None:
        while True:
            try:
                wait = self.step()
            except Exception as e:  # noqa: BLE001 - e.g. the actor call timed out
                log.warning("outbound %s: %s", self.channel, e)
                wait = 1.0
            if wait:
                time.sleep(wait)
