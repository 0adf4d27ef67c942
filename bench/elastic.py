"""The elastic-shards figures (`nextbest bench`, after the HTTP figures, on the same
server): how fast slots move, what a move costs the requests that arrive meanwhile, and
decide throughput with 1, 2 and 4 shards.

1. 20,000 more customers get a page view each (21,000 profiles in all);
2. scale 1 -> 2 shards (half the slots move; the figure includes starting the shard);
   then, with 2 shards, p99 of /v1/decide and /v1/events in an open loop at a fixed
   rate without a move, and while a quarter of the slots move between the two shards
   back and forth; profiles/s comes from each move's own progress (GET /v1/shards);
3. /v1/decide max throughput (closed loop) with 1, 2 and 4 shards.

On one 2-core machine more shards cannot add throughput (the shards, the proxy and the
load generator share the two cores): the figure that predicts a multi-node run is the
in-actor cost of a decision, i.e. what one shard (one core) can do on its own.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx

from bench.bodies import decide_bodies, event_bodies
from bench.common import BENCH_HEADERS, BENCH_KEY
from bench.loadgen import Result, build_requests, closed_loop, open_loop

__all__ = ["MOVE_RATE", "elastic_figures"]

MOVE_RATE = 200.0  # requests/s of each kind while slots move (and without)
MOVED = 4096  # slots moved back and forth: a quarter of them
CUSTOMERS = 20_000
JSON = "application/json"


def elastic_figures(port: int, seconds: float, connections: int, say: Any) -> dict[str, Any]:
    """Every elastic figure; the server runs with one shard when it is called."""
    url = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=url, timeout=120, headers=BENCH_HEADERS) as c:
        say(f"elastic: {CUSTOMERS:,} more profiles …")
        _load(c, CUSTOMERS)
        customers = [f"c-{i}" for i in range(1000)]
        bodies = decide_bodies(customers)
        decide = build_requests(port, "/v1/decide", bodies, JSON, BENCH_KEY)
        bodies = event_bodies(customers, time.time())
        events = build_requests(port, "/v1/events", bodies, JSON, BENCH_KEY)
        say("elastic: scale 1 -> 2 shards …")
        scaled = _scale(c, 2)
        say("elastic: p99 without a move …")
        still = _mixed(port, decide, events, seconds)
        say("elastic: p99 while slots move back and forth …")
        moving, progress = _during_move(c, port, decide, events, seconds)
        out: dict[str, Any] = {
            "rate": MOVE_RATE,
            "profiles": int(sum(s["profiles"] or 0 for s in _shards(c)["shards"])),
            "scale_1_to_2": scaled,
            "move": progress,
            "without_move": still,
            "during_move": moving,
            "decide_by_shards": {},
        }
        for n in (1, 2, 4):
            _scale(c, n)
            say(f"elastic: /v1/decide with {n} shard(s) …")
            closed_loop(port, decide, connections, min(1.0, seconds))  # warm up
            r = closed_loop(port, decide, connections, seconds)
            out["decide_by_shards"][n] = {
                "rps": r.rps,
                "p99_ms": r.p99_ms,
                "errors": r.errors,
                "statuses": r.statuses,
            }
        _scale(c, 1)
    return out


def _load(c: httpx.Client, n: int) -> None:
    now = time.time()
    for lo in range(0, n, 500):
        batch = [
            {"customer_id": f"m-{i}", "type": "page_view", "ts": now, "properties": {}}
            for i in range(lo, min(n, lo + 500))
        ]
        c.post("/v1/events", content=json.dumps(batch), headers={"content-type": JSON})


def _shards(c: httpx.Client) -> dict[str, Any]:
    r = c.get("/v1/shards")
    r.raise_for_status()
    return dict(r.json())


def _wait_move(c: httpx.Client, timeout: float = 600.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        moving = _shards(c)["moving"]
        if moving is None or moving["state"] != "running":
            if moving is not None and moving["state"] == "failed":
                raise RuntimeError(f"the slot move failed: {moving['error']}")
            return dict(moving or {})
        if time.monotonic() > deadline:
            raise TimeoutError("the slot move did not end")
        time.sleep(0.2)


def _scale(c: httpx.Client, n: int) -> dict[str, Any]:
    if len(_shards(c)["shards"]) == n:
        return {}
    c.post("/v1/shards/scale", json={"shards": n}).raise_for_status()
    return _wait_move(c)


def _row(r: Result) -> dict[str, Any]:
    return {
        "rps": r.rps,
        "p50_ms": r.p50_ms,
        "p99_ms": r.p99_ms,
        "admitted_p99_ms": r.admitted_p99_ms,
        "statuses": r.statuses,
    }


def _mixed(port: int, decide: list[bytes], events: list[bytes], seconds: float) -> dict[str, Any]:
    """Decide and events, each at MOVE_RATE, one after the other (the load generator is
    one process: two open loops at once would measure its own contention)."""
    return {
        "decide": _row(open_loop(port, decide, MOVE_RATE, seconds)),
        "events": _row(open_loop(port, events, MOVE_RATE, seconds)),
    }


def _during_move(
    c: httpx.Client, port: int, decide: list[bytes], events: list[bytes], seconds: float
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Move slots [0, MOVED) from shard 0 to 1 and back, in a thread, for as long as the
    open loops run, so that every request of them meets a move (a quarter of the
    customers move each time); the first move's progress is the one reported."""
    stop = threading.Event()
    moves: list[dict[str, Any]] = []
    errors: list[BaseException] = []

    def churn() -> None:
        try:
            with httpx.Client(base_url=c.base_url, timeout=120, headers=BENCH_HEADERS) as own:
                while not stop.is_set():
                    to = 1 if len(moves) % 2 == 0 else 0
                    body = {"first": 0, "last": MOVED - 1, "to": to}
                    own.post("/v1/shards/move", json=body).raise_for_status()
                    moves.append(_wait_move(own))
        except BaseException as e:  # noqa: BLE001 - reported by the caller
            errors.append(e)

    mover = threading.Thread(target=churn, name="bench-churn")
    mover.start()
    try:
        during = _mixed(port, decide, events, seconds)
    finally:
        stop.set()
        mover.join()
    if errors:
        raise errors[0]
    if len(moves) % 2:  # put the slots back
        c.post("/v1/shards/move", json={"first": 0, "last": MOVED - 1, "to": 0})
        _wait_move(c)
    during["moves"] = len(moves)
    return during, moves[0] if moves else {}
