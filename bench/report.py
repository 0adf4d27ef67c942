"""The bench's figures as ratios against the floor, and the text `nextbest bench` prints.

Two kinds of HTTP row:

- at max (closed loop): 2xx answers/s, and that rate against the floor's max;
- at an offered rate (open loop): p50/p99/p99.9 next to the floor's own at the SAME
  offered rate, measured in the same run, right before (a p99 ratio against the floor
  at another rate compares two different loads: `at_rate` refuses it). With several
  rounds (floor, step, floor, step, ...), each figure is the median over the rounds.

Pure functions of the measured figures: no Ray, no HTTP."""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from typing import Any

from bench.loadgen import Result

__all__ = [
    "CLIENT_PATH",
    "at_max",
    "at_rate",
    "elastic_lines",
    "http_tables",
    "report",
]

# The future rows of the Python client (SDK; it routes each request to its shard's
# ingress by slot), next to plain HTTP through one port: see http_figures.client_rows.
CLIENT_PATH = "client path (SDK, routed by slot)"


def _statuses(results: Sequence[Result]) -> dict[int, int]:
    total: Counter[int] = Counter()
    for r in results:
        total.update(r.statuses)
    return dict(total)


def _figures(results: Sequence[Result], unit: float = 1.0) -> dict[str, Any]:
    """2xx/s over every round (times `unit`: events per request for batches), the
    latency percentiles as medians over the rounds, and the answers by status."""
    ok = sum(r.ok for r in results)
    seconds = sum(r.seconds for r in results)
    statuses = _statuses(results)
    requests = sum(statuses.values())
    return {
        "rps": ok / seconds * unit if seconds else 0.0,
        "p50_ms": statistics.median(r.p50_ms for r in results),
        "p99_ms": statistics.median(r.p99_ms for r in results),
        "p999_ms": statistics.median(r.p999_ms for r in results),
        "requests": requests,
        "errors": requests - ok,  # every answer but a 2xx, and no answer in time (0)
        "statuses": statuses,
    }


def at_max(label: str, r: Result, floor: Result, unit: float = 1.0) -> dict[str, Any]:
    """A max-throughput row: its 2xx/s (times `unit`) and, against the floor's max,
    the ratio of requests/s (a batch counts as one request, like a floor request)."""
    if r.rate is not None or floor.rate is not None:
        raise ValueError("a max row compares closed loops, not an offered rate")
    return {
        "kind": "max",
        "step": label,
        **_figures([r], unit),
        "ratio_rps": r.rps / floor.rps if floor.rps else None,
    }


def at_rate(
    label: str, runs: Result | Sequence[Result], floors: Result | Sequence[Result]
) -> dict[str, Any]:
    """A row at one offered rate: the step's figures next to the floor's at the same
    rate (one floor run per round of the step), and the p99 ratio."""
    runs = [runs] if isinstance(runs, Result) else list(runs)
    floors = [floors] if isinstance(floors, Result) else list(floors)
    if not runs or len(runs) != len(floors):
        raise ValueError("one floor run per round of the step")
    rates = {r.rate for r in runs} | {f.rate for f in floors}
    if len(rates) != 1 or None in rates:
        raise ValueError(
            f"a p99 ratio compares the same offered rate; got {sorted(map(str, rates))}"
        )
    step, floor = _figures(runs), _figures(floors)
    return {
        "kind": "rate",
        "step": label,
        "rate": runs[0].rate,
        **step,
        "floor": floor,
        "ratio_p99": step["p99_ms"] / floor["p99_ms"] if floor["p99_ms"] else None,
        "rounds": [[r.p99_ms, f.p99_ms] for r, f in zip(runs, floors, strict=True)],
    }


def report(r: dict[str, Any]) -> str:
    """The HTTP tables, the elastic figures, then the in-process ones."""
    elastic = elastic_lines(r["elastic"], r["in_actor"]) if "elastic" in r else []
    return "\n".join(["", *http_tables(r["http"]), "", *elastic, *in_process_lines(r)])


def _non_2xx(errors: int, statuses: dict[Any, int]) -> str:
    bad = {k: v for k, v in statuses.items() if not 200 <= int(k) < 300}
    return f"{errors:,} {bad}" if errors else "0"


def http_tables(rows: list[dict[str, Any]]) -> list[str]:
    """Max rows, then rows at an offered rate with the floor's figures beside them."""
    out = [
        "Max throughput (closed loop; req/s counts 2xx answers only):",
        "",
        "| step | req/s | req/s × floor | p50 ms | p99 ms | p99.9 ms | non-2xx |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        if row["kind"] == "max":
            ratio = f"{row['ratio_rps']:.2f}" if row.get("ratio_rps") is not None else ""
            out.append(
                f"| {row['step']} | {row['rps']:,.0f} | {ratio} | {row['p50_ms']:.2f} | "
                f"{row['p99_ms']:.2f} | {row['p999_ms']:.2f} | "
                f"{_non_2xx(row['errors'], row['statuses'])} |"
            )
    if not any(row["step"].startswith(CLIENT_PATH) for row in rows):
        out.append(f"| {CLIENT_PATH} | not measured yet |  |  |  |  |  |")
    rated = [row for row in rows if row["kind"] == "rate"]
    rounds = max((len(row["rounds"]) for row in rated), default=1)
    out += [
        "",
        "Latency at an offered rate (open loop, from the scheduled send), against the floor "
        "at the same rate, measured just before"
        + (f" ({rounds} rounds, floor and step in turn; medians)" if rounds > 1 else "")
        + ":",
        "",
        "| step | offered req/s | p50 ms | p99 ms | floor p99 ms | p99 × floor | p99.9 ms | "
        "floor p99.9 ms | non-2xx (floor) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rated:
        f = row["floor"]
        ratio = f"{row['ratio_p99']:.2f}" if row.get("ratio_p99") is not None else ""
        out.append(
            f"| {row['step']} | {row['rate']:,.0f} | {row['p50_ms']:.2f} | "
            f"{row['p99_ms']:.2f} | {f['p99_ms']:.2f} | {ratio} | {row['p999_ms']:.2f} | "
            f"{f['p999_ms']:.2f} | {_non_2xx(row['errors'], row['statuses'])} "
            f"({_non_2xx(f['errors'], f['statuses'])}) |"
        )
    return out


def elastic_lines(e: dict[str, Any], in_actor: dict[str, Any]) -> list[str]:
    """Slot moves: their speed, p99 while they run, decide by shard count."""
    s, m = e["scale_1_to_2"], e["move"]
    still, during = e["without_move"], e["during_move"]

    def others(statuses: dict[Any, int]) -> str:
        bad = {k: v for k, v in statuses.items() if str(k) != "200"}
        return f" (answers other than 200: {bad})" if bad else ""

    def p99(kind: str) -> str:
        a, b = still[kind], during[kind]
        return (
            f"{kind} p99 {a['p99_ms']:.1f} ms without a move{others(a['statuses'])}, "
            f"{b['p99_ms']:.1f} ms during ({b['p99_ms'] / a['p99_ms']:.2f}x)"
            f"{others(b['statuses'])}"
        )

    by = e["decide_by_shards"]
    one = by.get(1) or by.get("1")
    # a decision's own cost: the WAL commit is shared by the requests coalesced into a call
    compute_us = in_actor["total_us"] - in_actor.get("commit_us", 0.0)
    per_shard = 1e6 / compute_us
    return [
        f"elastic shards, {e['profiles']:,} profiles: scale 1 -> 2 moved "
        f"{s.get('profiles_moved', 0):,} profiles in {s.get('elapsed_s', 0):.1f} s "
        f"(incl. starting the shard); a move of a quarter of the slots between two shards "
        f"moved {m.get('profiles_moved', 0):,} profiles at {m.get('profiles_per_s', 0):,.0f}/s",
        f"while slots moved back and forth ({during['moves']} moves) at {e['rate']:.0f} req/s "
        f"each: {p99('decide')}; {p99('events')}",
        "/v1/decide max by shard count (2xx/s): "
        + ", ".join(
            f"{k} -> {v['rps']:,.0f} req/s ({v['rps'] / one['rps']:.2f}x)"
            f"{others(v.get('statuses', {}))}"
            for k, v in by.items()
        )
        + f" (2 cores: no room to scale); one shard decides in {compute_us:.0f} µs in-actor "
        f"besides the WAL commit (shared by the requests coalesced into one call), so a shard "
        f"with its own core can serve ~{per_shard:,.0f} decisions/s",
        "",
    ]


def in_process_lines(r: dict[str, Any]) -> list[str]:
    """In-actor time, rules, triggers, decision logging, memory, snapshot and recovery."""
    a = r["in_actor"]
    m = r["memory"]
    d = r["durability"]
    return [
        f"in-actor decision through the request path (run_calls: slot check, decide, WAL "
        f"append, group commit with fsync={a['fsync']}, one decision per commit; "
        f"{a['candidates']} candidates, {a['eligible_avg']:.1f} eligible on "
        f"average, {r['model']['trees']}-tree model, {r['model']['features']} features): "
        f"{a['total_us']:.0f} µs mean, {a['p99_us']:.0f} µs p99 = eligibility "
        f"{a['eligibility_us']:.0f} + features {a['features_us']:.0f} + scoring "
        f"{a['scoring_us']:.0f} + arbitration {a['arbitration_us']:.0f} + WAL commit "
        f"{a['commit_us']:.0f} + profile read, ids, record and WAL append {a['other_us']:.0f}",
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
