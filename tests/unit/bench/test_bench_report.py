"""What `nextbest bench` prints: each figure as a ratio against the floor of the same
run (2xx/s against the floor's max for max rows; p99 against the floor at the same
offered rate for rate rows), and the bodies its requests carry."""

from __future__ import annotations

import json

import msgpack
import pytest

from bench.bodies import batch_bodies, decide_bodies, decide_msgpack_bodies, event_bodies
from bench.loadgen import Result
from bench.report import CLIENT_PATH, at_max, at_rate, elastic_lines, http_tables, report

FLOOR = Result(2.0, 1.0, 4.0, 5.0, {200: 3000})  # 1,500 req/s, p99 4 ms
RUN = Result(2.0, 1.5, 9.0, 12.0, {200: 997, 503: 3})  # 498.5 req/s of 2xx, p99 9 ms


def _open(p99: float, rate: float, statuses: dict[int, int] | None = None) -> Result:
    return Result(1.0, p99 / 4, p99, p99 * 2, statuses or {200: int(rate)}, rate=rate)


def test_req_per_s_counts_2xx_answers_only_and_the_rest_apart() -> None:
    r = Result(2.0, 1.0, 2.0, 3.0, {200: 90, 201: 10, 503: 40, 429: 5, 0: 5})
    assert r.requests == 150 and r.ok == 100 and r.errors == 50
    assert r.rps == 50.0  # not 75: refusals and timeouts are no throughput
    row = at_max("decide max", r, FLOOR)
    assert row["rps"] == 50.0 and row["ratio_rps"] == pytest.approx(50 / 1500)
    assert row["errors"] == 50 and row["requests"] == 150
    assert "| 50 | 0.03 |" in http_tables([row])[4]
    assert http_tables([row])[4].endswith("| 50 {503: 40, 429: 5, 0: 5} |")


def test_a_max_step_is_its_figures_and_its_rate_against_the_floors_max() -> None:
    row = at_max("decide max", RUN, FLOOR)
    assert row == {
        "kind": "max",
        "step": "decide max",
        "rps": 498.5,
        "p50_ms": 1.5,
        "p99_ms": 9.0,
        "p999_ms": 12.0,
        "errors": 3,
        "requests": 1000,
        "statuses": {200: 997, 503: 3},
        "ratio_rps": pytest.approx(498.5 / 1500),
    }
    batches = at_max("events batch-100 max (events/s)", RUN, FLOOR, unit=100)
    assert batches["rps"] == 49_850 and batches["ratio_rps"] == pytest.approx(498.5 / 1500)
    with pytest.raises(ValueError, match="closed loops"):
        at_max("decide max", RUN, _open(4.0, 750.0))  # not a floor's max


def test_a_p99_ratio_is_against_the_floor_at_the_same_offered_rate() -> None:
    row = at_rate("decide @ half its max", _open(30.0, 640.0), _open(6.0, 640.0))
    assert row["rate"] == 640.0 and row["p99_ms"] == 30.0 and row["floor"]["p99_ms"] == 6.0
    assert row["ratio_p99"] == 5.0 and row["rounds"] == [[30.0, 6.0]]
    # the floor at its own half max (another load) is no reference for this step
    with pytest.raises(ValueError, match="same offered rate"):
        at_rate("decide @ half its max", _open(30.0, 640.0), _open(6.0, 1550.0))
    with pytest.raises(ValueError, match="same offered rate"):
        at_rate("decide @ half its max", _open(30.0, 640.0), FLOOR)  # a closed loop
    with pytest.raises(ValueError, match="one floor run per round"):
        at_rate("x", [_open(30.0, 400.0)] * 2, [_open(6.0, 400.0)])
    assert at_rate("x", _open(3.0, 400.0), _open(0.0, 400.0))["ratio_p99"] is None


def test_rounds_give_medians_and_their_statuses_add_up() -> None:
    runs = [_open(p, 400.0) for p in (10.0, 300.0, 20.0)]
    floors = [_open(p, 400.0) for p in (4.0, 5.0, 250.0)]
    row = at_rate("decide @ 400/s", runs, floors)
    assert row["p99_ms"] == 20.0 and row["floor"]["p99_ms"] == 5.0 and row["ratio_p99"] == 4.0
    assert row["rounds"] == [[10.0, 4.0], [300.0, 5.0], [20.0, 250.0]]
    assert row["statuses"] == {200: 1200} and row["rps"] == 400.0


def test_the_tables_put_max_rows_and_same_rate_rows_apart() -> None:
    rows = [at_max("floor max", FLOOR, FLOOR), at_max("decide max", RUN, FLOOR)]
    refused = {200: 390, 503: 10}
    rows += [at_rate("decide @ 400/s", _open(9.0, 400.0, refused), _open(2.5, 400.0))]
    lines = http_tables(rows)
    assert lines[2].startswith("| step | req/s | req/s × floor |")
    assert lines[4] == "| floor max | 1,500 | 1.00 | 1.00 | 4.00 | 5.00 | 0 |"
    assert lines[5] == "| decide max | 498 | 0.33 | 1.50 | 9.00 | 12.00 | 3 {503: 3} |"
    assert lines[6].startswith(f"| {CLIENT_PATH} | not measured yet |")
    assert "floor p99 ms | p99 × floor |" in lines[10]
    assert lines[12] == (
        "| decide @ 400/s | 400 | 2.25 | 9.00 | 2.50 | 3.60 | 18.00 | 5.00 | 10 {503: 10} (0) |"
    )
    client = at_max(f"{CLIENT_PATH} max", RUN, FLOOR)  # once measured, no placeholder
    assert not any("not measured yet" in line for line in http_tables([*rows, client]))


def test_the_report_is_the_table_then_the_in_process_figures() -> None:
    figures = {
        "http": [at_max("floor max", FLOOR, FLOOR)],
        "in_actor": {
            "candidates": 20,
            "eligible_avg": 12.34,
            "total_us": 300.2,
            "p99_us": 900.7,
            "eligibility_us": 10.1,
            "features_us": 20.2,
            "scoring_us": 30.3,
            "arbitration_us": 4.4,
            "commit_us": 40.4,
            "other_us": 194.8,
            "fsync": "batch",
            "rules": {"actions": 100, "rules_us": 55.5, "compile_ms": 12.3},
            "triggers": {"watched_us": 66.66, "plain_us": 10.01},
            "logged_total_us": 333.3,
            "logged_p99_us": 999.9,
        },
        "memory": {
            "total_bytes": 400.4,
            "profiles": 1_000_000,
            "features": 40,
            "columns_bytes": 300.3,
            "index_bytes": 100.1,
            "f32_cols": 30,
            "f64_cols": 5,
            "u16_cols": 2,
            "i32_cols": 3,
        },
        "durability": {
            "profiles": 1_000_000,
            "snapshot_mb": 403.2,
            "snapshot_pause_s": 0.2,
            "snapshot_pause_first_s": 0.5,
            "snapshot_write_s": 3.21,
            "events_per_s_during_snapshot": 12_000.0,
            "events_per_s_idle": 24_000.0,
            "wal_records": 100_000,
            "recovery_s": 5.55,
            "recovery_snapshot_s": 2.22,
            "recovery_replay_s": 3.33,
        },
        "model": {"trees": 200, "features": 28},
    }
    lines = report(figures).split("\n")
    tables = http_tables(figures["http"])
    n = len(tables)
    assert lines[0] == "" and lines[1 : n + 1] == tables and lines[n + 1] == ""
    lines = lines[n + 2 :]  # the in-process figures
    assert lines[0].startswith("in-actor decision through the request path (run_calls: slot")
    assert "WAL append, group commit with fsync=batch, one decision per commit" in lines[0]
    assert "300 µs mean, 901 µs p99 = eligibility 10 + features 20 + scoring 30" in lines[0]
    assert "+ WAL commit 40 + profile read, ids, record and WAL append 195" in lines[0]
    assert lines[1] == (
        "eligibility rules of 100 actions for one customer: 56 µs (compiled once at load in 12 ms)"
    )
    assert "requests wait 200 ms for the copy (first one 500 ms)" in lines[5]
    assert lines[5].endswith("applies 12,000 events/s (idle: 24,000, 0.50x)")
    assert lines[6] == (
        "recovery of 1,000,000 profiles + 100,000 WAL records: 5.55 s (snapshot 2.22 s + "
        "replay 3.33 s), state identical (sha256)"
    )
    assert len(lines) == 7


def test_the_bodies_are_the_requests_a_client_sends() -> None:
    customers = [f"c-{i}" for i in range(1000)]
    decide = decide_bodies(customers[:2])
    assert [json.loads(b) for b in decide] == [
        {"customer_id": c, "channel": "web", "placement": "home_hero", "limit": 3}
        for c in ("c-0", "c-1")
    ]
    # msgpack: the same requests (customers, placement, limit) in the other encoding
    packed = decide_msgpack_bodies(customers)
    assert [msgpack.unpackb(b) for b in packed] == [json.loads(b) for b in decide_bodies(customers)]
    assert json.loads(event_bodies(["c-7"], 5.0)[0]) == {
        "customer_id": "c-7",
        "type": "page_view",
        "ts": 5.0,
        "properties": {"page": "cards"},
    }
    batches = [json.loads(b) for b in batch_bodies(customers, 5.0)]
    assert len(batches) == 20 and {len(b) for b in batches} == {100}
    ids = [e["customer_id"] for b in batches for e in b]
    assert ids == customers * 2  # round the customers, each twice
    assert {e["properties"]["page"] for b in batches for e in b} == {"loans"}


def test_the_elastic_lines_give_the_move_speed_the_p99_ratio_and_the_per_shard_cost() -> None:
    def row(p99: float, statuses: dict[str, int]) -> dict[str, object]:
        return {"rps": 200.0, "p50_ms": 2.0, "p99_ms": p99, "statuses": statuses}

    e = {
        "rate": 200.0,
        "profiles": 21_000,
        "scale_1_to_2": {"profiles_moved": 10_500, "elapsed_s": 4.2},
        "move": {"profiles_moved": 5_250, "profiles_per_s": 21_000.0},
        "without_move": {"decide": row(10.0, {"200": 1000}), "events": row(5.0, {"200": 1000})},
        "during_move": {
            "moves": 3,
            "decide": row(25.0, {"200": 990, "503": 10}),
            "events": row(5.0, {"200": 1000}),
        },
        "decide_by_shards": {
            1: {"rps": 1000.0},
            2: {"rps": 900.0},
            4: {"rps": 800.0, "statuses": {"200": 7, "401": 1}},
        },
    }
    lines = elastic_lines(e, {"total_us": 260.0, "commit_us": 60.0})
    assert "scale 1 -> 2 moved 10,500 profiles in 4.2 s" in lines[0]
    assert "5,250 profiles at 21,000/s" in lines[0]
    assert "decide p99 10.0 ms without a move, 25.0 ms during (2.50x)" in lines[1]
    assert "25.0 ms during (2.50x) (answers other than 200: {'503': 10})" in lines[1]
    assert "events p99 5.0 ms without a move, 5.0 ms during (1.00x)" in lines[1]
    assert "1 -> 1,000 req/s (1.00x), 2 -> 900 req/s (0.90x), 4 -> 800 req/s (0.80x)" in lines[2]
    assert "(0.80x) (answers other than 200: {'401': 1})" in lines[2]  # never hidden
    assert "decides in 200 µs in-actor besides the WAL commit" in lines[2]
    assert "~5,000 decisions/s" in lines[2]  # 1e6 / 200 µs: one shard with its own core
