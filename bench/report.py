"""The bench's figures as ratios against the floor, and the text `nextbest bench` prints.

Pure functions of the measured figures: no Ray, no HTTP."""

from __future__ import annotations

from typing import Any

from bench.loadgen import Result

__all__ = ["elastic_lines", "report", "step"]


def step(label: str, r: Result, floor: Result | None, unit: float = 1.0) -> dict[str, Any]:
    """One row of the HTTP table: `r`'s figures (its rate times `unit`: events per
    request for batches) and, against `floor`, its rate and p99 as ratios."""
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


def report(r: dict[str, Any]) -> str:
    """Max-throughput rows compare req/s with the floor's max; "@ half max" rows (open
    loop at half of that step's max) compare p99 with the floor's p99 at half its max."""
    elastic = elastic_lines(r["elastic"], r["in_actor"]) if "elastic" in r else []
    return "\n".join(["", *http_table(r["http"]), "", *elastic, *in_process_lines(r)])


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
    per_shard = 1e6 / in_actor["total_us"]
    return [
        f"elastic shards, {e['profiles']:,} profiles: scale 1 -> 2 moved "
        f"{s.get('profiles_moved', 0):,} profiles in {s.get('elapsed_s', 0):.1f} s "
        f"(incl. starting the shard); a move of a quarter of the slots between two shards "
        f"moved {m.get('profiles_moved', 0):,} profiles at {m.get('profiles_per_s', 0):,.0f}/s",
        f"while slots moved back and forth ({during['moves']} moves) at {e['rate']:.0f} req/s "
        f"each: {p99('decide')}; {p99('events')}",
        "/v1/decide max by shard count: "
        + ", ".join(
            f"{k} -> {v['rps']:,.0f} req/s ({v['rps'] / one['rps']:.2f}x)"
            f"{others(v.get('statuses', {}))}"
            for k, v in by.items()
        )
        + f" (2 cores: no room to scale); one shard decides in {in_actor['total_us']:.0f} µs "
        f"in-actor, so a shard with its own core can serve ~{per_shard:,.0f} decisions/s",
        "",
    ]


def http_table(rows: list[dict[str, Any]]) -> list[str]:
    """The HTTP rows as a Markdown table."""
    lines = [
        "| step | req/s | req/s × floor | p50 ms | p99 ms | p99.9 ms | p99 × floor | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        half = "@" in row["step"]
        rps_ratio = "" if half else f"{row['ratio_rps']:.2f}"
        p99_ratio = f"{row['ratio_p99']:.2f}" if half and row.get("ratio_p99") else ""
        bad = {k: v for k, v in row["statuses"].items() if k != 200}
        errors = f"{row['errors']} {bad}" if bad else "0"
        lines.append(
            f"| {row['step']} | {row['rps']:,.0f} | {rps_ratio} | {row['p50_ms']:.2f} | "
            f"{row['p99_ms']:.2f} | {row['p999_ms']:.2f} | {p99_ratio} | {errors} |"
        )
    return lines


def in_process_lines(r: dict[str, Any]) -> list[str]:
    """In-actor time, rules, triggers, decision logging, memory, snapshot and recovery."""
    a = r["in_actor"]
    m = r["memory"]
    d = r["durability"]
    return [
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
