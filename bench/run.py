"""`nextbest bench`: every nextbest figure as a ratio against a bare Serve floor.

1. floor: a no-op Serve deployment behind the same proxy and options, same run;
2. /v1/decide (20 candidate actions, 200-tree model, profile read, decision recorded)
   and /v1/events (single and batches of 100): max throughput, and p50/p99/p99.9 at
   half of max;
3. in-actor time per decision, by stage;
4. memory per profile with 1,000,000 profiles in one shard, 40 features;
5. durability: event ack latency per fsync policy (open loop at a fixed rate, against
   the floor at that rate), and for a shard of 1,000,000 profiles the snapshot pause,
   events/s while a snapshot is written, and recovery (snapshot + 100,000 WAL records).
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import tempfile
import time
import tracemalloc
from typing import Any

import httpx
import msgpack
import numpy as np
import ray
from ray import serve

from actors.messages import ApplyEvents, Decide
from actors.remote import ensure_supervisor, shutdown_cluster
from actors.shard import Shard
from bench.loadgen import Result, build_requests, closed_loop, open_loop
from bench.noop import Noop
from decisioning.config import SCOPES, Config
from decisioning.config.loader import config_from_dict
from decisioning.policy.catalog import Catalog
from decisioning.policy.decide import Stages
from decisioning.policy.rules import Env
from decisioning.policy.scoring import native_tag
from decisioning.profile import Event, ProfileSchema, ProfileStore, event_from_wire
from decisioning.stores.decision_log import DecisionLog
from decisioning.stores.registry import Registry
from serving import server as nb_server
from serving.app import serve_limits
from serving.auth import new_key, sha256_hex
from training.demo import event_batches, generate
from training.train import train

__all__ = ["run"]

NOOP_PORTS = 10
BENCH_KEY = new_key()
BENCH_HEADERS = {"authorization": f"Bearer {BENCH_KEY}"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bench_config(config: Config, data_dir: str, port: int) -> Config:
    """The demo catalog with every action on the web channel: 20 candidates per decision."""
    data = config.model_dump(mode="json")
    for a in data["actions"]:
        if "web" not in a["channels"]:
            a["channels"].append("web")
    data["server"].update(data_dir=data_dir, port=port, namespace="nextbest-bench")
    # auth on, as in production: the bench pays for checking a key on every request
    data["auth"] = {
        "enabled": True,
        "keys": [{"name": "bench", "sha256": sha256_hex(BENCH_KEY), "scopes": list(SCOPES)}],
    }
    return config_from_dict(data, "bench")


def _step(label: str, r: Result, floor: Result | None, unit: float = 1.0) -> dict[str, Any]:
    row = {
        "step": label,
        "rps": r.rps * unit,
        "p50_ms": r.p50_ms,
        "p99_ms": r.p99_ms,
        "p999_ms": r.p999_ms,
        "errors": r.errors,
        "requests": r.requests,
        "statuses": r.statuses,
    }
    if floor is not None:
        row["ratio_rps"] = r.rps / floor.rps
        row["ratio_p99"] = r.p99_ms / floor.p99_ms if floor.p99_ms else None
    return row


def _measure(
    port: int, path: str, bodies: list[bytes], ctype: str, seconds: float, connections: int
) -> tuple[Result, Result]:
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


def http_figures(cfg: Config, seconds: float, connections: int, say: Any) -> list[dict[str, Any]]:
    port = cfg.server.port
    serve.run(
        Noop.options(**serve_limits(cfg)).bind(),
        name="noop",
        route_prefix="/noop",
        blocking=False,
    )
    noop_port = _noop_port(cfg)
    customers = [f"c-{i}" for i in range(1000)]
    rows = []
    say(f"floor: no-op Serve deployment ({cfg.server.serving_path} ingress, port {noop_port}) …")
    floor, floor_half = _measure(
        noop_port, "/noop/", [b"{}"], "application/json", seconds, connections
    )
    rows += [_step("floor max", floor, floor), _step("floor @ half max", floor_half, floor_half)]
    say("/v1/decide …")
    bodies = [
        json.dumps(
            {"customer_id": c, "channel": "web", "placement": "home_hero", "limit": 3}
        ).encode()
        for c in customers
    ]
    top, half = _measure(port, "/v1/decide", bodies, "application/json", seconds, connections)
    rows += [_step("decide max", top, floor), _step("decide @ half max", half, floor_half)]
    by_cookie = [
        json.dumps(
            {
                "customer_id": f"cookie_id:k-{c}",
                "channel": "web",
                "placement": "home_hero",
                "limit": 3,
            }
        ).encode()
        for c in customers
    ]  # linked to the customers by a login each (see run): one more shard call to resolve
    top, _ = _measure(port, "/v1/decide", by_cookie, "application/json", seconds / 2, connections)
    rows.append(_step("decide by identifier max", top, floor))
    mp = [msgpack.packb({"customer_id": c, "channel": "web", "limit": 3}) for c in customers]
    top, _ = _measure(port, "/v1/decide", mp[:200], "application/msgpack", seconds / 2, connections)
    rows.append(_step("decide msgpack max", top, floor))
    say("/v1/events …")
    now = time.time()
    single = [
        json.dumps(
            {"customer_id": c, "type": "page_view", "ts": now, "properties": {"page": "cards"}}
        ).encode()
        for c in customers
    ]
    top, half = _measure(port, "/v1/events", single, "application/json", seconds, connections)
    rows += [
        _step("events single max", top, floor),
        _step("events single @ half max", half, floor_half),
    ]
    batches = [
        json.dumps(
            [
                {
                    "customer_id": customers[(i * 100 + j) % 1000],
                    "type": "page_view",
                    "ts": now,
                    "properties": {"page": "loans"},
                }
                for j in range(100)
            ]
        ).encode()
        for i in range(20)
    ]
    top, _ = _measure(port, "/v1/events", batches, "application/json", seconds, connections // 4)
    row = _step("events batch-100 max (events/s)", top, floor, unit=100)
    row["ratio_rps"] = top.rps / floor.rps  # batches/s against requests/s of the floor
    rows.append(row)
    rows += ack_latency(cfg, port, noop_port, seconds, say)
    serve.delete("noop")
    return rows


ACK_RATE = 400.0


def ack_latency(
    cfg: Config, port: int, noop_port: int, seconds: float, say: Any
) -> list[dict[str, Any]]:
    """Single events at ACK_RATE/s, open loop, with the shards restarted under each fsync
    policy; the floor at the same rate is the reference."""
    floor = open_loop(
        noop_port,
        build_requests(noop_port, "/noop/", [b"{}"], "application/json", BENCH_KEY),
        ACK_RATE,
        seconds,
    )
    rows = [_step(f"floor @ {ACK_RATE:.0f}/s", floor, floor)]
    now = time.time()
    bodies = [
        json.dumps({"customer_id": f"c-{i}", "type": "login", "ts": now}).encode()
        for i in range(1000)
    ]
    reqs = build_requests(port, "/v1/events", bodies, "application/json", BENCH_KEY)
    current = cfg
    for policy in ("always", "batch", "none"):
        say(f"event ack latency, fsync={policy} …")
        data = cfg.model_dump(mode="json")
        data["server"]["fsync"] = policy
        shutdown_cluster(current)  # snapshots, stops the shards; new ones with the policy
        current = config_from_dict(data, f"bench-fsync-{policy}")
        ensure_supervisor(current)
        deadline = time.monotonic() + 60
        while (
            httpx.post(
                f"http://127.0.0.1:{port}/v1/events",
                content=bodies[0],
                headers={"content-type": "application/json", **BENCH_HEADERS},
            ).status_code
            != 200
        ):
            if time.monotonic() > deadline:
                raise RuntimeError("the shards did not come back")
            time.sleep(0.2)
        closed_loop(port, reqs, 4, 1.0)  # warm up
        r = open_loop(port, reqs, ACK_RATE, seconds)
        rows.append(_step(f"events fsync={policy} @ {ACK_RATE:.0f}/s", r, floor))
    return rows


def in_actor(cfg: Config, n: int = 3000, logs_dir: str | None = None) -> dict[str, float]:
    """Mean and p99 of Shard.decide, by stage; with `logs_dir`, with decision logging."""
    registry = Registry(cfg.server.data_dir)
    bundle = registry.read("propensity", registry.deployed("propensity") or 1, native_tag())
    now = time.time()
    logs = DecisionLog(logs_dir, 0, cfg.logs) if logs_dir else None
    shard = Shard(0, cfg, [bundle], clock=lambda: now, logs=logs)
    data = generate(cfg, customers=1000, offers=0, now=now)
    shard.store.apply_many(data.events)
    customers = [f"c-{i}" for i in range(1000)]
    for c in customers[:200]:  # warm up
        shard.decide(Decide(c, "web", "home_hero", limit=3))
    shard.stages = Stages()
    totals = []
    eligible = []
    for i in range(n):
        t0 = time.perf_counter_ns()
        d = shard.decide(Decide(customers[i % 1000], "web", "home_hero", limit=3, explain=False))
        totals.append(time.perf_counter_ns() - t0)
        eligible.append(len(d.decision.actions))
    if logs is not None:
        logs.close()
    s = shard.stages
    per = {
        k: getattr(s, k) / s.count / 1000
        for k in ("eligibility", "features", "scoring", "arbitration")
    }
    total = statistics.mean(totals) / 1000
    cands = len(shard.catalog.live("web", now))
    probe = [
        shard.decide(Decide(c, "web", limit=20, explain=True, dry_run=True)).decision
        for c in customers[:200]
    ]
    scored = statistics.mean(
        sum(1 for e in d.explanation or () if e["eligible"] and e["action_id"]) for d in probe
    )
    return {
        "total_us": total,
        **{f"{k}_us": v for k, v in per.items()},
        "other_us": total - sum(per.values()),
        "candidates": cands,
        "eligible_avg": scored,
        "p99_us": float(np.percentile(totals, 99)) / 1000,
        "scorer": shard.scorers()["propensity"],
    }


def _config40(cfg: Config) -> Config:
    """The demo schema padded with numeric attributes to 40 profile features."""
    data = cfg.model_dump(mode="json")
    data["profile"]["attributes"] += [
        {"name": f"extra_{i}", "type": "numeric"}
        for i in range(40 - len(ProfileSchema(cfg).feature_names))
    ]
    return config_from_dict(data, "bench-40")


def durability_figures(cfg: Config, n: int, records: int, directory: str) -> dict[str, float]:
    """A shard of `n` profiles (40 features) and `records` WAL records after its snapshot:
    snapshot pause and write time, event throughput while a snapshot is written, and
    recovery (snapshot load + WAL replay) time."""
    cfg40 = _config40(cfg)
    now = time.time()
    shard = Shard(0, cfg40, clock=lambda: now, log_dir=directory)
    store = shard.store
    for e in (
        Event("customer-00000000", "page_view", now, {"page": "cards"}),
        Event("customer-00000000", "purchase", now, {"amount": 42.0}),
        Event("customer-00000000", "profile_update", now, {"age": 40, "segment": "affluent"}),
    ):
        store.apply(e)
    for i in range(1, n):  # rows straight into the store: the snapshot, not the WAL, has them
        store.row(f"customer-{i:08d}")
    for name in ("f32", "f64", "i32", "u16"):
        getattr(store, name)[1:n] = getattr(store, name)[0]
    shard.journal.changed = True

    def events_per_s(seconds: float) -> float:
        batch = [
            {"customer_id": f"customer-{i * 7919 % n:08d}", "type": "page_view", "ts": now}
            for i in range(100)
        ]
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            shard.apply_events(ApplyEvents(tuple(event_from_wire(e) for e in batch)))
            shard.wal.commit() if shard.wal else None  # an actor call: one group commit
            done += len(batch)
        return done / (time.perf_counter() - started)

    idle = events_per_s(2.0)
    pauses, rates = [], []
    for _ in range(2):  # the first copy also pays for faulting its memory in
        t0 = time.perf_counter()
        shard.durability.start_snapshot()
        pauses.append(time.perf_counter() - t0)
        writer = shard.durability.writing
        assert writer is not None
        while not writer.done.is_set():
            rates.append(events_per_s(0.1))
        write_s = writer.seconds
        snap = shard.durability.finish_snapshot()
    size = sum(os.path.getsize(os.path.join(snap["path"], f)) for f in os.listdir(snap["path"]))
    for i in range(records):  # one WAL record per call, a group commit per 100 calls
        shard.apply_events(ApplyEvents((Event(f"customer-{i % n:08d}", "login", now),)))
        if i % 100 == 99 and shard.wal:
            shard.wal.commit()
    digest = shard.state_digest()
    shard.wal.commit() if shard.wal else None  # a SIGKILL now: no close(), no snapshot
    t0 = time.perf_counter()
    back = Shard(0, cfg40, clock=lambda: now, log_dir=directory)
    recovery = time.perf_counter() - t0
    assert back.state_digest() == digest, "recovery did not give back the same state"
    back.close()
    return {
        "profiles": n,
        "wal_records": back.recovery["wal_records"],
        "snapshot_pause_first_s": pauses[0],
        "snapshot_pause_s": pauses[1],
        "snapshot_write_s": write_s,
        "snapshot_mb": size / 1e6,
        "events_per_s_idle": idle,
        "events_per_s_during_snapshot": statistics.mean(rates) if rates else 0.0,
        "recovery_s": recovery,
        "recovery_snapshot_s": back.recovery["snapshot_s"],
        "recovery_replay_s": back.recovery["replay_s"],
    }


def memory_per_profile(cfg: Config, n: int) -> dict[str, float]:
    cfg40 = _config40(cfg)
    schema = ProfileSchema(cfg40)
    tracemalloc.start()
    store = ProfileStore(schema, capacity=n)
    base = tracemalloc.get_traced_memory()[0]
    for i in range(n):
        store.row(f"customer-{i:08d}")
    index = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    store.apply(Event("customer-00000001", "page_view", time.time(), {"page": "cards"}))
    columns = store.nbytes()
    return {
        "features": len(schema.feature_names),
        "profiles": n,
        "columns_bytes": columns / n,
        "index_bytes": index / n,
        "total_bytes": (columns + index) / n,
        "f32_cols": schema.n32,
        "f64_cols": schema.n64,
        "i32_cols": schema.ni,
        "u16_cols": schema.n16,
    }


def run(
    config: Config,
    seconds: float = 5.0,
    connections: int = 32,
    profiles: int = 1_000_000,
    say: Any = print,
) -> dict[str, Any]:
    data_dir = tempfile.mkdtemp(prefix="nextbest-bench-")
    cfg = bench_config(config, data_dir, _free_port())
    say(f"training the bench model (200 trees) in {data_dir} …")
    demo = generate(cfg, customers=2000, offers=5)
    model = train(demo.training, cfg, rounds=200, progress=lambda m: None)
    Registry(data_dir).set_deployed("propensity", model.manifest.version)
    # room for the no-op floor app, a second ingress with its own port in direct mode
    os.environ.setdefault(
        "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT", str(cfg.server.port + NOOP_PORTS)
    )
    started = nb_server.start_ray(cfg, num_cpus=2)
    try:
        url = nb_server.start(cfg)
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
        rows = http_figures(cfg, seconds, connections, say)
        nb_server.stop(cfg)
    finally:
        if started:
            ray.shutdown()
    say("in-actor decision time …")
    actor = in_actor(cfg)
    logged = in_actor(cfg, logs_dir=os.path.join(data_dir, "bench-logs"))
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


def report(r: dict[str, Any]) -> str:
    """Max-throughput rows compare req/s with the floor's max; "@ half max" rows (open
    loop at half of that step's max) compare p99 with the floor's p99 at half its max."""
    lines = [
        "",
        "| step | req/s | req/s × floor | p50 ms | p99 ms | p99.9 ms | p99 × floor | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in r["http"]:
        half = "@" in row["step"]
        rps_ratio = "" if half else f"{row['ratio_rps']:.2f}"
        p99_ratio = f"{row['ratio_p99']:.2f}" if half and row.get("ratio_p99") else ""
        bad = {k: v for k, v in row["statuses"].items() if k != 200}
        errors = f"{row['errors']} {bad}" if bad else "0"
        lines.append(
            f"| {row['step']} | {row['rps']:,.0f} | {rps_ratio} | {row['p50_ms']:.2f} | "
            f"{row['p99_ms']:.2f} | {row['p999_ms']:.2f} | {p99_ratio} | {errors} |"
        )
    a = r["in_actor"]
    m = r["memory"]
    d = r["durability"]
    lines += [
        "",
        f"in-actor decision ({a['candidates']} candidates, {a['eligible_avg']:.1f} eligible on "
        f"average, {r['model']['trees']}-tree model, {r['model']['features']} features): "
        f"{a['total_us']:.0f} µs mean, {a['p99_us']:.0f} µs p99 = eligibility "
        f"{a['eligibility_us']:.0f} + features {a['features_us']:.0f} + scoring "
        f"{a['scoring_us']:.0f} + arbitration {a['arbitration_us']:.0f} + profile read, ids "
        f"and record {a['other_us']:.0f}",
        f"eligibility rules of {a['rules']['actions']} actions for one customer: "
        f"{a['rules']['rules_us']:.0f} µs (compiled once at load in "
        f"{a['rules']['compile_ms']:.0f} ms)",
        f"an event that a crossing trigger watches: {a['triggers']['watched_us']:.1f} µs to "
        f"apply, against {a['triggers']['plain_us']:.1f} µs for one no trigger watches",
        f"with decision logging on: {a['logged_total_us']:.0f} µs mean, "
        f"{a['logged_p99_us']:.0f} µs p99 (the Parquet files are written by a thread)",
        f"memory: {m['total_bytes']:.0f} bytes/profile at {m['profiles']:,} profiles, "
        f"{m['features']} features (columns {m['columns_bytes']:.0f} + id index "
        f"{m['index_bytes']:.0f}; {m['f32_cols']} float32, {m['f64_cols']} float64, "
        f"{m['u16_cols']} uint16, {m['i32_cols']} int32 columns)",
        f"snapshot of {d['profiles']:,} profiles ({d['snapshot_mb']:.0f} MB): requests wait "
        f"{d['snapshot_pause_s'] * 1000:.0f} ms for the copy (first one "
        f"{d['snapshot_pause_first_s'] * 1000:.0f} ms), a thread writes it in "
        f"{d['snapshot_write_s']:.2f} s; meanwhile the shard applies "
        f"{d['events_per_s_during_snapshot']:,.0f} events/s (idle: "
        f"{d['events_per_s_idle']:,.0f}, "
        f"{d['events_per_s_during_snapshot'] / d['events_per_s_idle']:.2f}x)",
        f"recovery of {d['profiles']:,} profiles + {d['wal_records']:,} WAL records: "
        f"{d['recovery_s']:.2f} s (snapshot {d['recovery_snapshot_s']:.2f} s + replay "
        f"{d['recovery_replay_s']:.2f} s), state identical (sha256)",
    ]
    return "\n".join(lines)


def trigger_figures(cfg: Config, n: int = 5000) -> dict[str, float]:
    """Applying an event that a crossing trigger watches (its condition read before and
    after, not crossing: no decision) against one that no trigger watches, on a shard
    in this process (mean µs per event)."""
    shard = Shard(0, cfg)
    now = time.time()

    def per_event(kind: str) -> float:
        events = [{"customer_id": f"t-{i % 100}", "type": kind, "ts": now} for i in range(n)]
        t0 = time.perf_counter_ns()
        for e in events:
            shard.apply_events(ApplyEvents((event_from_wire(e),)))
        return (time.perf_counter_ns() - t0) / n / 1000

    per_event("page_view")  # warm up, and profiles exist
    return {"plain_us": per_event("page_view"), "watched_us": per_event("failed_login")}


def rule_figures(cfg: Config, actions: int = 100, n: int = 2000) -> dict[str, float]:
    """Eligibility rules of `actions` actions for one customer, as decide() runs them:
    compiled once at load, then evaluated per decision (mean µs for all of them)."""
    rules = [
        "profile.age >= 21 and profile.credit_score >= 620 and profile.complaints_30d == 0",
        "profile.segment in ['affluent', 'private'] or coalesce(profile.income, 0) > 80000",
        "not consent.email or profile.card_views_7d > 3",
        "context.placement == 'home_hero' and profile.tenure_months >= 12",
    ]
    data = cfg.model_dump(mode="json")
    data["actions"] = [
        {
            "id": f"offer_{i}",
            "group": f"g{i % 7}",
            "channels": ["web"],
            "value": 100 + i,
            "eligibility": rules[i % len(rules)],
        }
        for i in range(actions)
    ]
    many = config_from_dict(data, "bench-rules")  # the example config's fields
    schema = ProfileSchema(many)
    started = time.perf_counter()
    catalog = Catalog(many, schema)
    compile_ms = (time.perf_counter() - started) * 1000
    store = ProfileStore(schema)
    now = time.time()
    store.apply(Event("c", "profile_update", now, {"age": 35}))
    env = Env(store.features("c", now).tolist(), {"placement": "home_hero", "channel": "web"})
    live = catalog.live("web", now)
    t0 = time.perf_counter_ns()
    for _ in range(n):
        for a in live:
            env.action = a
            env.value = a.value(env)
            for _, rule in a.rules:
                if not rule.holds(env):
                    break
    per = (time.perf_counter_ns() - t0) / n / 1000
    return {"actions": len(live), "rules_us": per, "compile_ms": compile_ms}
