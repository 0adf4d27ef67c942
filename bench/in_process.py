"""Figures measured on a shard in this process (no Ray, no HTTP): the time of one
decision by stage, eligibility rules of many actions, and events a trigger watches."""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np

from actors.calls import refused, run_calls
from actors.messages import ApplyEvents, Decide
from actors.shard import Shard
from decisioning.config import Config
from decisioning.config.loader import config_from_dict
from decisioning.policy.catalog import Catalog
from decisioning.policy.decide import Stages
from decisioning.policy.rules import Env
from decisioning.policy.scoring import native_tag
from decisioning.profile import Event, ProfileSchema, ProfileStore
from decisioning.stores.decision_log import DecisionLog
from decisioning.stores.registry import Registry
from training.demo import generate

__all__ = ["in_actor", "rule_figures", "trigger_figures"]


class _TimedShard(Shard):
    """A shard that times its commit: the WAL's group commit (with the configured fsync
    policy), the fencing check and the snapshot check, as `run_calls` runs them."""

    commit_ns = 0

    def flush(self) -> None:
        t0 = time.perf_counter_ns()
        super().flush()
        self.commit_ns += time.perf_counter_ns() - t0


def in_actor(
    cfg: Config, wal_dir: str, n: int = 3000, logs_dir: str | None = None
) -> dict[str, Any]:
    """Mean and p99 of one decision as a request runs it in the shard actor, by stage:
    `run_calls` (the slot check, Shard.decide with its WAL append, then the group
    commit with `cfg.server.fsync`), one decision per call (what a request pays when
    nothing is coalesced with it); with `logs_dir`, with decision logging. The shard's
    WAL is in `wal_dir` (a fresh directory: the disk the bench's data dir is on)."""
    registry = Registry(cfg.server.data_dir)
    bundle = registry.read("propensity", registry.deployed("propensity") or 1, native_tag())
    now = time.time()
    logs = DecisionLog(logs_dir, 0, cfg.logs) if logs_dir else None
    shard = _TimedShard(0, cfg, [bundle], clock=lambda: now, log_dir=wal_dir, logs=logs)
    data = generate(cfg, customers=1000, offers=0, now=now)
    shard.store.apply_many(data.events)
    customers = [f"c-{i}" for i in range(1000)]

    def decide(c: str) -> Any:
        answer = run_calls(shard, [("decide", (Decide(c, "web", "home_hero", limit=3),))])[0]
        if refused(answer):
            raise answer
        return answer

    for c in customers[:200]:  # warm up
        decide(c)
    shard.stages = Stages()
    shard.commit_ns = 0
    totals = []
    for i in range(n):
        t0 = time.perf_counter_ns()
        decide(customers[i % 1000])
        totals.append(time.perf_counter_ns() - t0)
    commit_us = shard.commit_ns / n / 1000
    eligible_avg = _eligible_avg(shard, customers[:200])
    shard.close()  # the decision log written, the WAL closed (and kept)
    s = shard.stages
    per = {
        k: getattr(s, k) / s.count / 1000
        for k in ("eligibility", "features", "scoring", "arbitration")
    }
    total = statistics.mean(totals) / 1000
    return {
        "total_us": total,
        **{f"{k}_us": v for k, v in per.items()},
        "commit_us": commit_us,
        "other_us": total - sum(per.values()) - commit_us,
        "fsync": cfg.server.fsync,
        "candidates": len(shard.catalog.live("web", now)),
        "eligible_avg": eligible_avg,
        "p99_us": float(np.percentile(totals, 99)) / 1000,
        "scorer": shard.scorers()["propensity"],
    }


def _eligible_avg(shard: Shard, customers: list[str]) -> float:
    """The mean number of actions scored per decision (eligible, with an action id)."""
    probe = [
        shard.decide(Decide(c, "web", limit=20, explain=True, dry_run=True)).decision
        for c in customers
    ]
    return statistics.mean(
        sum(1 for e in d.explanation or () if e["eligible"] and e["action_id"]) for d in probe
    )


def trigger_figures(cfg: Config, n: int = 5000) -> dict[str, float]:
    """Applying an event that a crossing trigger watches (its condition read before and
    after, not crossing: no decision) against one that no trigger watches, on a shard
    in this process (mean µs per event)."""
    shard = Shard(0, cfg)
    now = time.time()

    def per_event(kind: str) -> float:
        events = [ApplyEvents((Event(f"t-{i % 100}", kind, now),)) for i in range(n)]
        t0 = time.perf_counter_ns()
        for e in events:
            shard.apply_events(e)
        return (time.perf_counter_ns() - t0) / n / 1000

    per_event("page_view")  # warm up, and profiles exist
    return {"plain_us": per_event("page_view"), "watched_us": per_event("failed_login")}


RULES = [
    "profile.age >= 21 and profile.credit_score >= 620 and profile.complaints_30d == 0",
    "profile.segment in ['affluent', 'private'] or coalesce(profile.income, 0) > 80000",
    "not consent.email or profile.card_views_7d > 3",
    "context.placement == 'home_hero' and profile.tenure_months >= 12",
]


def rule_figures(cfg: Config, actions: int = 100, n: int = 2000) -> dict[str, float]:
    """Eligibility rules of `actions` actions for one customer, as decide() runs them:
    compiled once at load, then evaluated per decision (mean µs for all of them)."""
    data = cfg.model_dump(mode="json")
    data["actions"] = [
        {
            "id": f"offer_{i}",
            "group": f"g{i % 7}",
            "channels": ["web"],
            "value": 100 + i,
            "eligibility": RULES[i % len(RULES)],
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
