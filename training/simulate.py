"""`nextbest simulate`: replay events and decision requests through the current catalog
and a candidate one, and compare what each would have done.

The stream is replayed in time order into throwaway in-memory shards (no WAL, no logs,
nothing sent anywhere) with the champion models: events build the profiles, and each
request is decided for real inside the simulation, so contact policies and budgets
accumulate as they would. For each catalog the report gives the funnel (how many
candidates each stage removed), the actions shown per channel, how often nothing was
shown, and the expected value (propensity × value of what was shown) per decision.
With `workers`, customers are split by hash over Ray tasks (customers are
independent), locally or on the cluster at RAY_ADDRESS.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from actors.messages import ApplyEvents, Decide
from actors.shard import Shard
from decisioning.config import Config
from decisioning.policy.budgets import day_of
from decisioning.profile import event_from_wire
from decisioning.profile.slots import bucket
from decisioning.stores.registry import Registry

__all__ = ["Report", "simulate"]


@dataclass
class Report:
    decisions: int = 0
    nothing: int = 0  # answers that showed nothing
    removed: Counter[str] = field(default_factory=Counter)  # stage -> candidates removed
    shown: Counter[str] = field(default_factory=Counter)  # "channel/action" -> times
    value: float = 0.0  # Σ propensity × value of what was shown

    def merge(self, other: Report) -> None:
        self.decisions += other.decisions
        self.nothing += other.nothing
        self.removed.update(other.removed)
        self.shown.update(other.shown)
        self.value += other.value

    def to_dict(self) -> dict[str, Any]:
        return {
            "decisions": self.decisions,
            "nothing_shown": self.nothing,
            "removed_by_stage": dict(self.removed),
            "shown": dict(self.shown),
            "expected_value_per_decision": self.value / self.decisions if self.decisions else 0,
        }


def _stage(entry: dict[str, Any]) -> str | None:
    if entry.get("do_nothing"):
        return None
    if not entry["eligible"]:
        if "stage" in entry:
            return str(entry["stage"])
        return "consent" if str(entry.get("rule", "")).startswith("consent") else "rules"
    if entry.get("chosen"):
        return None
    return "ranked out"


def _stream(events: pa.Table, requests: pa.Table) -> list[tuple[float, int, dict[str, Any]]]:
    out: list[tuple[float, int, dict[str, Any]]] = []
    for e in events.to_pylist():
        props = e.get("properties")
        props = json.loads(props) if isinstance(props, str) else (props or {})
        out.append(
            (
                e["ts"],
                0,
                {
                    "customer_id": e["customer_id"],
                    "type": e["type"],
                    "ts": e["ts"],
                    "properties": props,
                },
            )
        )
    for r in requests.to_pylist():
        ctx = r.get("context")
        ctx = json.loads(ctx) if isinstance(ctx, str) else (ctx or {})
        out.append(
            (
                r["ts"],
                1,
                {
                    "customer_id": r["customer_id"],
                    "channel": r["channel"],
                    "placement": r.get("placement"),
                    "context": ctx,
                },
            )
        )
    out.sort(key=lambda x: (x[0], x[1]))  # events at a decision's ts come first
    return out


def _run(config: Config, stream: list[tuple[float, int, dict[str, Any]]], share: int = 1) -> Report:
    now = [stream[0][0] if stream else 0.0]
    bundles = Registry(config.server.data_dir).deployed_bundles()
    shard = Shard(0, config, bundles, clock=lambda: now[0])
    report = Report()
    for ts, kind, body in stream:
        now[0] = ts
        if kind == 0:
            shard.apply_events(ApplyEvents((event_from_wire(body),)))
            continue
        if day_of(ts) not in {k[1] for k in shard.allotments.left}:
            for action, budget in shard.budgets.items():  # this part's share of it
                shard.allotments.add(action, day_of(ts), budget // share)
        d = shard.decide(Decide(**body, explain=True)).decision
        report.decisions += 1
        report.nothing += not d.actions
        for entry in d.explanation or ():
            stage = _stage(entry)
            if stage is not None:
                report.removed[stage] += 1
        for a in d.actions:
            report.shown[f"{a.channel}/{a.action_id}"] += 1
            report.value += a.propensity * a.value
    return report


def _part(config: Config, stream: list[tuple[float, int, dict[str, Any]]], i: int, n: int) -> Any:
    mine = [s for s in stream if int(bucket("sim", s[2]["customer_id"]) * n) == i]
    return _run(config, mine, n)


def simulate(
    current: Config,
    candidate: Config,
    events: pa.Table,
    requests: pa.Table,
    workers: int | None = None,
    progress: Callable[[str], None] = print,
) -> tuple[Report, Report]:
    """Replay the stream through both configs; (current, candidate) reports."""
    stream = _stream(events, requests)
    progress(f"replaying {events.num_rows} events and {requests.num_rows} requests")
    out = []
    for label, cfg in (("current", current), ("candidate", candidate)):
        if not workers:
            out.append(_run(cfg, stream))
        else:
            import ray

            task = ray.remote(num_cpus=0.25)(_part)
            parts = ray.get([task.remote(cfg, stream, i, workers) for i in range(workers)])
            total = Report()
            for p in parts:
                total.merge(p)
            out.append(total)
        progress(f"{label}: {out[-1].decisions} decisions")
    return out[0], out[1]


def requests_from_logs(logs: str) -> pa.Table:
    """The decision requests in the decision logs (one row per decision)."""
    from decisioning.stores.fs import filesystem
    from training.from_logs import open_dataset
    from training.train import TrainingError

    fs, root = filesystem(logs)
    decisions = open_dataset(fs, f"{root}/decisions")
    if decisions is None:
        raise TrainingError(f"no decision logs under {logs}")
    cols = ["decision_id", "ts", "customer_id", "channel", "placement", "context"]
    rows = decisions.to_table(columns=cols)
    seen: set[str] = set()
    keep = []
    for i, d in enumerate(rows["decision_id"].to_pylist()):
        if d not in seen:
            seen.add(d)
            keep.append(i)
    out = rows.take(keep)
    ts = out["ts"].cast(pa.int64()).to_numpy() / 1e6
    return out.drop_columns(["ts", "decision_id"]).append_column("ts", pa.array(ts))
