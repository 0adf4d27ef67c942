"""What the CLI shows, built apart from the calls (serving/cli/render.py): a rollout's
aliases and the live model metrics, as a user reads them."""

from __future__ import annotations

from serving.cli.render import move_line, rollout, shards_table, stats_lines


def test_a_rollout_names_the_champion_and_any_challenger() -> None:
    base = {"model": "propensity", "champion": 3, "shards": 2}
    alone = rollout({**base, "challenger": None, "share": 0.0, "shadow": False})
    assert alone == "propensity: champion propensity@3 (on 2 shards)"
    split = rollout({**base, "challenger": 4, "share": 0.1, "shadow": False})
    assert split == (
        "propensity: champion propensity@3, challenger propensity@4 for 10% of customers "
        "(on 2 shards)"
    )
    shadow = rollout({**base, "challenger": 4, "share": 0.0, "shadow": True})
    assert "challenger propensity@4 in shadow" in shadow


def test_model_stats_show_one_line_per_version_and_a_dash_for_no_rate() -> None:
    version = {"decisions": 10, "impression": 8, "accept": 2, "accept_rate": 0.25}
    models = {
        "propensity": {
            "versions": [
                {"version": "propensity@1", "alias": "champion", **version},
                {"version": "propensity@2", "alias": None, **version, "accept_rate": None},
            ]
        }
    }
    head, first, second = list(stats_lines(models))
    assert head.split() == [
        "version",
        "alias",
        "decisions",
        "impressions",
        "accepts",
        "accept",
        "rate",
    ]
    assert first.split() == ["propensity@1", "champion", "10", "8", "2", "25.00%"]
    assert second.split() == ["propensity@2", "-", "10", "8", "2", "-"]


def _progress(**over: object) -> dict[str, object]:
    p = {"operation": "scale 1->3", "state": "running", "target": "3 shards", "slots_total": 10922,
         "slots_moved": 5461, "profiles_moved": 120_000, "profiles_per_s": 40_000.0,
         "elapsed_s": 3.0, "eta_s": 3.0, "error": None}  # fmt: skip
    return {**p, **over}


def test_a_move_shows_its_bar_counts_rate_and_eta_then_its_end() -> None:
    running = move_line(_progress())
    assert running == (
        "scale 1->3 (3 shards): [###############               ] 5,461/10,922 slots, "
        "120,000 profiles (40,000/s), ETA 3s"
    )
    done = move_line(_progress(state="done", slots_moved=10922, eta_s=None, elapsed_s=6.04))
    assert done.endswith("10,922/10,922 slots, 120,000 profiles (40,000/s), done in 6.0s")
    failed = move_line(_progress(state="failed", error="shard 2 refused: no disk"))
    assert failed.endswith("FAILED after 3.0s: shard 2 refused: no disk")


def test_shards_table_names_each_shards_ranges_and_the_epoch() -> None:
    answer = {
        "epoch": 4,
        "shards": [
            {
                "shard": 0,
                "ranges": [[0, 99], [200, 299]],
                "slots": 200,
                "profiles": 1500,
                "node": "abcdef0123456789",
                "ready": True,
            },
            {
                "shard": 1,
                "ranges": [[100, 199]],
                "slots": 100,
                "profiles": None,
                "node": None,
                "ready": False,
            },
        ],  # fmt: skip
        "moving": None,
    }
    lines = shards_table(answer).splitlines()
    assert lines[1].split() == ["0", "200", "0-99,", "200-299", "1,500", "abcdef012345", "yes"]
    assert lines[2].split() == ["1", "100", "100-199", "-", "-", "no"]
    assert lines[-1] == "slot map epoch 4"
