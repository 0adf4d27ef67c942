"""The HTTP figures: a no-op Serve deployment (the floor) and nextbest's /v1/decide and
/v1/events behind the same proxy, each at max throughput (closed loop) and at half of
it (open loop), and event acknowledgement latency per fsync policy at a fixed rate.
Needs the bench's Ray and server running (`bench.run` starts them)."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import msgpack
from ray import serve

from actors.remote import ensure_supervisor, shutdown_cluster
from bench.bodies import batch_bodies, decide_bodies, event_bodies
from bench.common import BENCH_HEADERS, BENCH_KEY, NOOP_PORTS
from bench.loadgen import Result, build_requests, closed_loop, open_loop
from bench.noop import Noop
from bench.report import step
from decisioning.config import Config
from decisioning.config.loader import config_from_dict
from serving.app import serve_limits

__all__ = ["ACK_RATE", "ack_latency", "http_figures"]

ACK_RATE = 400.0
JSON = "application/json"


def http_figures(cfg: Config, seconds: float, connections: int, say: Any) -> list[dict[str, Any]]:
    """Every HTTP row, each against the floor measured first in the same run."""
    port = cfg.server.port
    serve.run(
        Noop.options(**serve_limits(cfg)).bind(),  # type: ignore[attr-defined]
        name="noop",
        route_prefix="/noop",
        blocking=False,
    )
    noop_port = _noop_port(cfg)
    customers = [f"c-{i}" for i in range(1000)]
    say(f"floor: no-op Serve deployment ({cfg.server.serving_path} ingress, port {noop_port}) …")
    floor, floor_half = _measure(noop_port, "/noop/", [b"{}"], JSON, seconds, connections)
    rows = [step("floor max", floor, floor), step("floor @ half max", floor_half, floor_half)]
    say("/v1/decide …")
    top, half = _measure(port, "/v1/decide", decide_bodies(customers), JSON, seconds, connections)
    rows += [step("decide max", top, floor), step("decide @ half max", half, floor_half)]
    # linked to the customers by a login each (see run): one more shard call to resolve
    by_cookie = decide_bodies([f"cookie_id:k-{c}" for c in customers])
    top, _ = _measure(port, "/v1/decide", by_cookie, JSON, seconds / 2, connections)
    rows.append(step("decide by identifier max", top, floor))
    mp = [msgpack.packb({"customer_id": c, "channel": "web", "limit": 3}) for c in customers]
    top, _ = _measure(port, "/v1/decide", mp[:200], "application/msgpack", seconds / 2, connections)
    rows.append(step("decide msgpack max", top, floor))
    say("/v1/events …")
    now = time.time()
    single = event_bodies(customers, now)
    top, half = _measure(port, "/v1/events", single, JSON, seconds, connections)
    rows += [
        step("events single max", top, floor),
        step("events single @ half max", half, floor_half),
    ]
    batches = batch_bodies(customers, now)
    top, _ = _measure(port, "/v1/events", batches, JSON, seconds, connections // 4)
    row = step("events batch-100 max (events/s)", top, floor, unit=100)
    row["ratio_rps"] = top.rps / floor.rps  # batches/s against requests/s of the floor
    rows.append(row)
    rows += ack_latency(cfg, port, noop_port, seconds, say)
    serve.delete("noop")
    return rows


def _measure(
    port: int, path: str, bodies: list[bytes], ctype: str, seconds: float, connections: int
) -> tuple[Result, Result]:
    """Max throughput (closed loop, after a warm-up), then latency at half of it."""
    reqs = build_requests(port, path, bodies, ctype, BENCH_KEY)
    closed_loop(port, reqs, connections, min(1.0, seconds))  # warm up
    top = closed_loop(port, reqs, connections, seconds)
    half = open_loop(port, reqs, max(1.0, top.rps / 2), seconds)
    return top, half


def _noop_port(cfg: Config) -> int:
    """The no-op app is a second ingress: in direct mode it gets a port of its own."""
    if cfg.server.serving_path == "proxy":
        return cfg.server.port
    for _ in range(100):
        for port in range(cfg.server.port + 1, cfg.server.port + NOOP_PORTS + 1):
            try:
                r = httpx.post(f"http://127.0.0.1:{port}/noop/", content=b"{}", timeout=2)
                if r.status_code == 200:
                    return port
            except httpx.HTTPError:
                pass
        time.sleep(0.2)
    raise RuntimeError("the no-op floor app did not start")


def ack_latency(
    cfg: Config, port: int, noop_port: int, seconds: float, say: Any
) -> list[dict[str, Any]]:
    """Single events at ACK_RATE/s, open loop, with the shards restarted under each fsync
    policy; the floor at the same rate is the reference."""
    floor = open_loop(
        noop_port,
        build_requests(noop_port, "/noop/", [b"{}"], JSON, BENCH_KEY),
        ACK_RATE,
        seconds,
    )
    rows = [step(f"floor @ {ACK_RATE:.0f}/s", floor, floor)]
    now = time.time()
    bodies = [
        json.dumps({"customer_id": f"c-{i}", "type": "login", "ts": now}).encode()
        for i in range(1000)
    ]
    reqs = build_requests(port, "/v1/events", bodies, JSON, BENCH_KEY)
    current = cfg
    for policy in ("always", "batch", "none"):
        say(f"event ack latency, fsync={policy} …")
        data = cfg.model_dump(mode="json")
        data["server"]["fsync"] = policy
        shutdown_cluster(current)  # snapshots, stops the shards; new ones with the policy
        current = config_from_dict(data, f"bench-fsync-{policy}")
        ensure_supervisor(current)
        _wait_for_events(port, bodies[0])
        closed_loop(port, reqs, 4, 1.0)  # warm up
        r = open_loop(port, reqs, ACK_RATE, seconds)
        rows.append(step(f"events fsync={policy} @ {ACK_RATE:.0f}/s", r, floor))
    return rows


def _wait_for_events(port: int, body: bytes) -> None:
    """Until the restarted shards take an event (a minute at most)."""
    deadline = time.monotonic() + 60
    while (
        httpx.post(
            f"http://127.0.0.1:{port}/v1/events",
            content=body,
            headers={"content-type": JSON, **BENCH_HEADERS},
        ).status_code
        != 200
    ):
        if time.monotonic() > deadline:
            raise RuntimeError("the shards did not come back")
        time.sleep(0.2)
