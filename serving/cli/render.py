"""How the CLI shows what the server or a job answered: tables and lines of text, built
apart from the calls that fetch them (so they can be tested without a server)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

__all__ = [
    "evaluation",
    "move_line",
    "registry_line",
    "rollout",
    "shards_table",
    "simulation",
    "stats_lines",
    "status_table",
]


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def status_table(shards: list[dict[str, Any]]) -> str:
    """One line per shard: ready, generation, customers, slots, WAL, last snapshot,
    counters."""
    head = ("shard", "ready", "gen", "restarts", "customers", "slots", "wal", "snapshot",
            "recovered", "scorer", "events", "decisions", "dupes")  # fmt: skip
    rows: list[tuple[str, ...]] = [head]
    for s in shards:
        if s.get("ready") is False:  # not answering: restarting, recovering or gone
            rows.append((str(s["shard"]), "no", *("-" for _ in head[2:])))
            continue
        rec = s.get("recovery") or {}
        ready = "FENCED" if s.get("fenced") else "yes"
        snap = f"{s['last_snapshot_s_ago']:.0f}s ago" if s.get("last_snapshot") else "none yet"
        snap += " (writing)" if s.get("snapshotting") else ""
        rows.append(
            (
                str(s["shard"]),
                ready,
                str(rec.get("generation", "-")),
                str(rec.get("restarts", "-")),
                f"{s['customers']:,}",
                f"{s.get('slots', 0):,}" + (" (moving)" if s.get("frozen") else ""),
                _mb(s["wal_bytes"]) if s.get("durable") else "off",
                snap if s.get("durable") else "-",
                f"{rec['snapshot_profiles']:,}+{rec['wal_records']:,} in {rec['seconds']}s"
                if rec
                else "-",
                ",".join(sorted(set(s.get("scorers", {}).values()))) or "-",
                f"{s.get('events', 0):,}",
                f"{s.get('decisions', 0):,}",
                f"{s.get('duplicates', 0):,}",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def rollout(result: dict[str, Any]) -> str:
    """A model's aliases after a promote, rollback or split."""
    name = result["model"]
    line = f"{name}: champion {name}@{result['champion']}"
    if result["challenger"] is not None:
        how = "in shadow" if result["shadow"] else f"for {result['share']:.0%} of customers"
        line += f", challenger {name}@{result['challenger']} {how}"
    return line + f" (on {result['shards']} shards)"


def registry_line(ref: str, alias: str, auc: Any, created_at: str) -> str:
    """A model version in the registry, for `models list`."""
    return f"{ref:<20} {alias:<16} auc={auc}  {created_at}"


def stats_lines(models: dict[str, Any]) -> Iterator[str]:
    """`models stats`: a header, then one line per model version."""
    head = f"{'version':<20} {'alias':<11} {'decisions':>10} {'impressions':>12} "
    yield head + f"{'accepts':>8} {'accept rate':>12}"
    for model in models.values():
        for v in model["versions"]:
            rate = "-" if v["accept_rate"] is None else f"{v['accept_rate']:.2%}"
            yield (
                f"{v['version']:<20} {v['alias'] or '-':<11} {v['decisions']:>10} "
                f"{v['impression']:>12} {v['accept']:>8} {rate:>12}"
            )


def simulation(a: dict[str, Any], b: dict[str, Any]) -> Iterator[str]:
    """`simulate`: the current catalog's figures beside the candidate's."""
    yield f"{'':<34} {'current':>12} {'candidate':>12}"
    yield f"{'decisions':<34} {a['decisions']:>12} {b['decisions']:>12}"
    yield f"{'nothing shown':<34} {a['nothing_shown']:>12} {b['nothing_shown']:>12}"
    ev_a, ev_b = a["expected_value_per_decision"], b["expected_value_per_decision"]
    yield f"{'expected value per decision':<34} {ev_a:>12.2f} {ev_b:>12.2f}"
    yield "candidates removed, by stage:"
    for stage in sorted(set(a["removed_by_stage"]) | set(b["removed_by_stage"])):
        x, y = a["removed_by_stage"].get(stage, 0), b["removed_by_stage"].get(stage, 0)
        yield f"  {stage:<32} {x:>12} {y:>12}"
    yield "shown, by channel/action:"
    for key in sorted(set(a["shown"]) | set(b["shown"])):
        yield f"  {key:<32} {a['shown'].get(key, 0):>12} {b['shown'].get(key, 0):>12}"


def evaluation(model: str, e: Any) -> Iterator[str]:
    """`evaluate`: what ran, the model's support, and each estimate with its interval."""
    yield f"{e.n} decisions; what ran earned {e.logged:.4f} per decision"
    yield f"{model} agrees with what ran on {e.support:.1%} of them"
    for label, (v, lo, hi) in (("IPS", e.ips), ("SNIPS", e.snips), ("DR", e.dr)):
        yield f"  {label:<6} {v:.4f}   95% interval {lo:.4f} … {hi:.4f}"
    if e.support < 0.05:
        yield (
            "  few decisions support this model: turn on exploration "
            "(decisioning.exploration) to evaluate models that differ from what runs"
        )


def _ranges(ranges: list[list[int]]) -> str:
    return ", ".join(f"{lo}-{last}" for lo, last in ranges) or "-"


def shards_table(answer: dict[str, Any]) -> str:
    """One line per shard: the slot ranges it owns, slots, profiles, node; the epoch."""
    head = ("shard", "slots", "ranges", "profiles", "node", "ready")
    rows: list[tuple[str, ...]] = [head]
    for s in answer["shards"]:
        profiles = "-" if s.get("profiles") is None else f"{s['profiles']:,}"
        node = (s.get("node") or "-")[:12]
        ready = "yes" if s.get("ready") else "no"
        rows.append(
            (str(s["shard"]), f"{s['slots']:,}", _ranges(s["ranges"]), profiles, node, ready)
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.append(f"slot map epoch {answer['epoch']}")
    if answer.get("moving"):
        lines.append(move_line(answer["moving"]))
    return "\n".join(lines)


def move_line(p: dict[str, Any]) -> str:
    """A slot move's progress on one line: a bar, slots, profiles/s, ETA or the result."""
    total = max(p["slots_total"], 1)
    done = p["slots_moved"] / total
    bar = "#" * int(done * 30)
    line = (
        f"{p['operation']} ({p['target']}): [{bar:<30}] {p['slots_moved']:,}/"
        f"{p['slots_total']:,} slots, {p['profiles_moved']:,} profiles "
        f"({p['profiles_per_s']:,.0f}/s)"
    )
    if p["state"] == "running":
        eta = p.get("eta_s")
        return line + (f", ETA {eta:.0f}s" if eta is not None else "")
    if p["state"] == "failed":
        return line + f", FAILED after {p['elapsed_s']:.1f}s: {p['error']}"
    return line + f", done in {p['elapsed_s']:.1f}s"
