"""Shared fixtures: the example config, a small config, a tiny trained model; the
hypothesis profiles."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from decisioning.config import Config
from decisioning.config.loader import config_from_dict, load_config

# Hypothesis profiles, by HYPOTHESIS_PROFILE (default: "ci" when CI is set, else "dev").
# None has a deadline: a timing figure never fails a test.
settings.register_profile("dev", deadline=None)
settings.register_profile(
    "ci",
    deadline=None,
    derandomize=True,  # the same examples on every run (and no database): reproducible
    print_blob=True,  # a failure prints the line that replays it (@reproduce_failure)
    # the shared 2-core runner generates slowly at times, which says nothing of the code
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("thorough", deadline=None, max_examples=1000)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
settings.load_profile(PROFILE)


def examples(n: int, *suppress: HealthCheck) -> settings:
    """A property's own settings: `n` examples (ten times as many under "thorough"),
    and health checks it suppresses on top of the profile's."""
    return settings(
        max_examples=n * (10 if PROFILE == "thorough" else 1),
        suppress_health_check=[*settings().suppress_health_check, *suppress],
    )


ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "nextbest.yaml"

SMALL: dict[str, Any] = {
    "channels": ["web", "email"],
    "profile": {
        "attributes": [
            {"name": "age", "type": "numeric"},
            {"name": "segment", "type": "categorical", "values": ["mass", "affluent"]},
        ],
        "aggregates": [
            {"name": "views_1h", "kind": "count", "event": "page_view", "window": "1h"},
            {"name": "views_all", "kind": "count", "event": "page_view"},
            {
                "name": "spend_1h",
                "kind": "sum",
                "event": "purchase",
                "property": "amount",
                "window": "1h",
            },
            {
                "name": "min_1h",
                "kind": "min",
                "event": "purchase",
                "property": "amount",
                "window": "1h",
            },
            {
                "name": "max_1h",
                "kind": "max",
                "event": "purchase",
                "property": "amount",
                "window": "1h",
            },
            {"name": "spend_all", "kind": "sum", "event": "purchase", "property": "amount"},
            {"name": "min_all", "kind": "min", "event": "purchase", "property": "amount"},
            {"name": "max_all", "kind": "max", "event": "purchase", "property": "amount"},
            {"name": "last_amount", "kind": "last", "event": "purchase", "property": "amount"},
            {
                "name": "last_amount_1h",
                "kind": "last",
                "event": "purchase",
                "property": "amount",
                "window": "1h",
            },
            {"name": "since_login", "kind": "time_since", "event": "login"},
            {"name": "logins_decay", "kind": "decayed_count", "event": "login", "half_life": "1h"},
            {
                "name": "card_views_1h",
                "kind": "count",
                "event": "page_view",
                "where": {"page": "cards"},
                "window": "1h",
            },
        ],
    },
    "actions": [
        {
            "id": "card",
            "group": "cards",
            "channels": ["web", "email"],
            "value": 100,
            "model": "propensity",
            "eligibility": "profile.age >= 18",
        },
        {
            "id": "loan",
            "group": "loans",
            "channels": ["web"],
            "value": "2 * profile.age",
            "model": "propensity",
        },
        {"id": "tip", "group": "service", "channels": ["web"], "value": 1},
    ],
    "decisioning": {"default_limit": 3, "do_nothing_threshold": 0.0, "default_propensity": 0.5},
    "server": {"shards": 2},
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Unit tests assert Ray is not running; integration tests start it: one process
    cannot hold both (`make test` runs them one after the other)."""
    kinds = {Path(str(item.fspath)).relative_to(ROOT).parts[1] for item in items}
    if {"unit", "integration"} <= kinds:
        raise pytest.UsageError(
            "tests/unit and tests/integration run in separate processes: "
            "`make test`, or `pytest tests/unit` then `pytest tests/integration`"
        )


@pytest.fixture
def small_config(tmp_path: Path) -> Config:
    data = {**SMALL, "server": {**SMALL["server"], "data_dir": str(tmp_path / "data")}}
    return config_from_dict(data, "small.yaml")


@pytest.fixture
def example_config(tmp_path: Path) -> Config:
    return load_config(EXAMPLE, {"NEXTBEST_DATA_DIR": str(tmp_path / "data")})
