"""`nextbest bench`: every nextbest figure as a ratio against a bare Serve floor.

1. floor: a no-op Serve deployment behind the same proxy and options, same run;
2. /v1/decide (20 candidate actions, 200-tree model, profile read, decision recorded)
   and /v1/events (single and batches of 100): max throughput (2xx answers/s), and
   p50/p99/p99.9 at half of the step's max and at a fixed 400/s, each next to the floor
   at the same offered rate;
3. in-actor time per decision through the request path (WAL append and group commit
   with the configured fsync policy included), by stage;
3b. elastic shards (bench/elastic.py): profiles moved per second, p99 during a move
   against without one, /v1/decide with 1, 2 and 4 shards;
4. memory per profile with 1,000,000 profiles in one shard, 40 features;
5. durability: event ack latency per fsync policy (open loop at a fixed rate, against
   the floor at that rate), and for a shard of 1,000,000 profiles the snapshot pause,
   events/s while a snapshot is written, and recovery (snapshot + 100,000 WAL records).

The parts: `http_figures` (1, 2 and the ack latency; on Ray), `in_process` (3),
`memory` (4), `durability` (the snapshot and recovery), `report` (the ratios and the
text printed). This module runs them in order and writes the raw figures as JSON.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from typing import Any

import httpx
import ray

from bench.common import BENCH_HEADERS, NOOP_PORTS, bench_config, free_port
from bench.durability import durability_figures
from bench.elastic import elastic_figures
from bench.http_figures import http_figures
from bench.in_process import in_actor, rule_figures, trigger_figures
from bench.memory import memory_per_profile
from bench.report import report
from decisioning.config import Config
from decisioning.stores.registry import Registry
from serving import server as nb_server
from training.demo import event_batches, generate
from training.train import TrainResult, train

__all__ = ["run"]


def run(
    config: Config,
    seconds: float = 5.0,
    connections: int = 32,
    profiles: int = 1_000_000,
    say: Any = print,
    rounds: int = 1,
) -> dict[str, Any]:
    """Every figure, printed as `report` renders them; the raw ones also as bench.json."""
    data_dir = tempfile.mkdtemp(prefix="nextbest-bench-")
    cfg = bench_config(config, data_dir, free_port())
    model = _bench_model(cfg, data_dir, say)
    rows, elastic = _over_http(cfg, seconds, connections, say, rounds)
    say("in-actor decision time …")
    actor: dict[str, Any] = in_actor(cfg, os.path.join(data_dir, "in-actor-wal"))
    logs_dir = os.path.join(data_dir, "bench-logs")
    logged = in_actor(cfg, os.path.join(data_dir, "in-actor-wal-logged"), logs_dir=logs_dir)
    actor["logged_total_us"] = logged["total_us"]
    actor["logged_p99_us"] = logged["p99_us"]
    say("eligibility rules of 100 actions …")
    actor["rules"] = rule_figures(cfg)
    say("events with and without a trigger …")
    actor["triggers"] = trigger_figures(cfg)
    say(f"memory per profile ({profiles:,} profiles) …")
    mem = memory_per_profile(cfg, profiles)
    say(f"snapshot and recovery of a shard of {profiles:,} profiles …")
    durability = durability_figures(
        cfg, profiles, 100_000, os.path.join(data_dir, "durability-shard")
    )
    result = {
        "http": rows,
        "elastic": elastic,
        "in_actor": actor,
        "memory": mem,
        "durability": durability,
        "model": {
            "trees": model.manifest.metrics["trees"],
            "features": len(model.manifest.features),
        },
    }
    out = os.path.join(data_dir, "bench.json")
    with open(out, "w") as f:
        json.dump(result, f, indent=2)
    say(f"raw figures: {out}")
    say(report(result))
    return result


def _bench_model(cfg: Config, data_dir: str, say: Any) -> TrainResult:
    """The demo model with 200 trees, trained into the bench's data dir and deployed."""
    say(f"training the bench model (200 trees) in {data_dir} …")
    demo = generate(cfg, customers=2000, offers=5)
    model = train(demo.training, cfg, rounds=200, progress=lambda m: None)
    Registry(data_dir).set_deployed("propensity", model.manifest.version)
    return model


def _over_http(
    cfg: Config, seconds: float, connections: int, say: Any, rounds: int
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Ray and the server started (one shard), 1,000 live customers loaded, the HTTP
    figures, then the elastic ones (bench/elastic.py) on the same server."""
    # room for the no-op floor app, a second ingress with its own port in direct mode
    os.environ.setdefault(
        "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT", str(cfg.server.port + NOOP_PORTS)
    )
    started = nb_server.start_ray(cfg, num_cpus=2)
    try:
        url = nb_server.start(cfg)
        _load_customers(cfg, url)
        rows = http_figures(cfg, seconds, connections, say, rounds)
        elastic = elastic_figures(cfg.server.port, seconds, connections, say)
        nb_server.stop(cfg)
    finally:
        if started:
            ray.shutdown()
    return rows, elastic


def _load_customers(cfg: Config, url: str) -> None:
    """1,000 demo customers' events, and a login each that links a cookie to them."""
    live = generate(cfg, customers=1000, offers=0, now=time.time())
    with httpx.Client(base_url=url, timeout=60, headers=BENCH_HEADERS) as c:
        for batch in event_batches(live.events):
            c.post("/v1/events", json=batch).raise_for_status()
        logins = [
            {"customer_id": f"c-{i}", "type": "login", "properties": {"cookie_id": f"k-c-{i}"}}
            for i in range(1000)
        ]
        for i in range(0, len(logins), 100):
            c.post("/v1/events", json=logins[i : i + 100]).raise_for_status()
