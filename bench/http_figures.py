"""The HTTP figures: a no-op Serve deployment (the floor) and nextbest's /v1/decide and
/v1/events behind the same proxy, each at max throughput (closed loop), and at offered
rates (open loop) next to the floor at the SAME rate, measured just before: half of the
step's own max, and FIXED_RATE; then event acknowledgement latency per fsync policy at
FIXED_RATE. Needs the bench's Ray and server running (`bench.run` starts them)."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
from ray import serve

from actors.remote import ensure_supervisor, shutdown_cluster
from bench import report
from bench.bodies import batch_bodies, decide_bodies, decide_msgpack_bodies, event_bodies
from bench.common import BENCH_HEADERS, BENCH_KEY, NOOP_PORTS
from bench.loadgen import Result, build_requests, closed_loop, open_loop
from bench.noop import Noop
from bench.report import at_max, at_rate
from decisioning.config import Config
from decisioning.config.loader import config_from_dict
from serving.app import serve_limits

__all__ = ["FIXED_RATE", "ack_latency", "client_rows", "http_figures"]

FIXED_RATE = 400.0  # req/s: a rate every step and the floor take on this machine
JSON = "application/json"
MSGPACK = "application/msgpack"
DECIDE = "/v1/decide"


class Floor:
    """The no-op app's requests on its port: at max, and at any offered rate."""

    def __init__(self, port: int, seconds: float, connections: int) -> None:
        self.port, self.seconds, self.connections = port, seconds, connections
        self.reqs = build_requests(port, "/noop/", [b"{}"], JSON, BENCH_KEY)

    def at(self, rate: float) -> Result:
        return open_loop(self.port, self.reqs, rate, self.seconds)


def http_figures(
    cfg: Config, seconds: float, connections: int, say: Any, rounds: int = 1
) -> list[dict[str, Any]]:
    """Every HTTP row: max rows against the floor's max, rate rows against the floor at
    the same offered rate (`rounds` times, floor and step in turn)."""
    port = cfg.server.port
    serve.run(
        Noop.options(**serve_limits(cfg)).bind(),  # type: ignore[attr-defined]
        name="noop",
        route_prefix="/noop",
        blocking=False,
    )
    floor = Floor(_noop_port(cfg), seconds, connections)
    customers = [f"c-{i}" for i in range(1000)]
    say(f"floor: no-op Serve deployment ({cfg.server.serving_path} ingress, port {floor.port}) …")
    floor_max = _max(floor.port, floor.reqs, seconds, connections)
    rows = [at_max("floor: no-op Serve app, max", floor_max, floor_max)]

    say("/v1/decide …")
    decide = build_requests(port, DECIDE, decide_bodies(customers), JSON, BENCH_KEY)
    top = _max(port, decide, seconds, connections)
    rows.append(at_max("`/v1/decide` max", top, floor_max))
    half = max(1.0, top.rps / 2)
    rows.append(_paired("`/v1/decide` @ half its max", port, decide, floor, half, rounds))
    rows.append(
        _paired(f"`/v1/decide` @ {FIXED_RATE:.0f}/s", port, decide, floor, FIXED_RATE, rounds)
    )
    # linked to the customers by a login each (see run): one more shard call to resolve
    by_cookie = decide_bodies([f"cookie_id:k-{c}" for c in customers])
    by_cookie_reqs = build_requests(port, DECIDE, by_cookie, JSON, BENCH_KEY)
    top = _max(port, by_cookie_reqs, seconds, connections)
    rows.append(at_max("`/v1/decide` by identifier (`cookie_id:…`), max", top, floor_max))
    # the same customers, placement and duration as the JSON row, encoded as msgpack
    mp = build_requests(port, DECIDE, decide_msgpack_bodies(customers), MSGPACK, BENCH_KEY)
    top = _max(port, mp, seconds, connections)
    rows.append(at_max("`/v1/decide` msgpack max", top, floor_max))
    rows += client_rows(cfg, customers, floor, floor_max, [half, FIXED_RATE], say, rounds)

    say("/v1/events …")
    now = time.time()
    single = build_requests(port, "/v1/events", event_bodies(customers, now), JSON, BENCH_KEY)
    top = _max(port, single, seconds, connections)
    rows.append(at_max("`/v1/events` single max", top, floor_max))
    rate = max(1.0, top.rps / 2)
    rows.append(_paired("`/v1/events` single @ half its max", port, single, floor, rate, rounds))
    batches = build_requests(port, "/v1/events", batch_bodies(customers, now), JSON, BENCH_KEY)
    top = _max(port, batches, seconds, connections // 4)
    # events/s; the ratio compares batches/s with the floor's requests/s
    rows.append(at_max("`/v1/events` batches of 100, max (events/s)", top, floor_max, unit=100))
    rows += ack_latency(cfg, port, floor, say, rounds)
    serve.delete("noop")
    return rows


def client_rows(
    cfg: Config,
    customers: list[str],
    floor: Floor,
    floor_max: Result,
    rates: list[float],
    say: Any,
    rounds: int = 1,
) -> list[dict[str, Any]]:
    """/v1/decide through the client path: each request sent to the port of its
    customer's shard, as `nextbest_client` routes it (GET /v1/cluster/slots), answered
    in the shard's own process. The same customers and bodies as the plain-HTTP rows;
    the load comes from the bench's generator, not from the Python client, so the row
    measures the server's path and not the client's Python."""
    answer = httpx.get(
        f"http://127.0.0.1:{cfg.server.port}/v1/cluster/slots", headers=BENCH_HEADERS, timeout=10
    ).json()
    owners = {shard: (lo, last) for lo, last, shard in answer["slots"]}
    ports = {s["shard"]: s["endpoint"] for s in answer["shards"] if s["endpoint"]}
    if len(owners) != 1 or len(ports) != 1:
        say("client path: measured with one shard only (one owner port); skipped")
        return []
    port = int(next(iter(ports.values())).rsplit(":", 1)[1])
    say(f"{report.CLIENT_PATH}: /v1/decide at the owner's port {port} …")
    reqs = build_requests(port, DECIDE, decide_bodies(customers), JSON, BENCH_KEY)
    top = _max(port, reqs, floor.seconds, floor.connections)
    rows = [at_max(f"{report.CLIENT_PATH} max", top, floor_max)]
    for rate in (*rates, top.rps / 2):
        label = f"{report.CLIENT_PATH} @ {rate:.0f}/s"
        rows.append(_paired(label, port, reqs, floor, rate, rounds))
    return rows


def _max(port: int, reqs: list[bytes], seconds: float, connections: int) -> Result:
    """Max throughput: a closed loop after a warm-up."""
    closed_loop(port, reqs, connections, min(1.0, seconds))  # warm up
    return closed_loop(port, reqs, connections, seconds)


def _paired(
    label: str, port: int, reqs: list[bytes], floor: Floor, rate: float, rounds: int
) -> dict[str, Any]:
    """The step at `rate`, each round right after the floor at the same rate."""
    floors, runs = [], []
    for _ in range(rounds):
        floors.append(floor.at(rate))
        runs.append(open_loop(port, reqs, rate, floor.seconds))
    return at_rate(label, runs, floors)


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
    cfg: Config, port: int, floor: Floor, say: Any, rounds: int = 1
) -> list[dict[str, Any]]:
    """Single events at FIXED_RATE/s, open loop, with the shards restarted under each
    fsync policy, each against the floor at the same rate measured just before."""
    now = time.time()
    bodies = [
        json.dumps({"customer_id": f"c-{i}", "type": "login", "ts": now}).encode()
        for i in range(1000)
    ]
    reqs = build_requests(port, "/v1/events", bodies, JSON, BENCH_KEY)
    rows = []
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
        label = f"`/v1/events` single, `fsync: {policy}` @ {FIXED_RATE:.0f}/s"
        rows.append(_paired(label, port, reqs, floor, FIXED_RATE, rounds))
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
