"""What the CLI shows, built apart from the calls (serving/cli/render.py): a rollout's
aliases and the live model metrics, as a user reads them."""

from __future__ import annotations

from serving.cli.render import rollout, stats_lines


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
