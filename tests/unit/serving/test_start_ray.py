"""`start_ray` starts a Ray of its own, never a stranger's cluster found on the machine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import ray

from decisioning.config.loader import load_config
from serving import server

ROOT = Path(__file__).resolve().parents[3]


def _captured_init(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: seen.update(kwargs))
    return seen


def test_a_local_start_is_a_new_local_ray_with_the_resources_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = load_config(ROOT / "examples" / "nextbest.yaml", {})
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    for key, value in server.serve_env(config).items():
        monkeypatch.setenv(key, value)  # (restored after the test)
    seen = _captured_init(monkeypatch)
    assert server.start_ray(config, num_cpus=2) is True
    # without address="local", ray.init joins a cluster another user started here
    # (`ray start`, a test's cluster) and refuses num_cpus
    assert seen["address"] == "local" and seen["num_cpus"] == 2


def test_ray_address_connects_and_starts_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config(ROOT / "examples" / "nextbest.yaml", {})
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    seen = _captured_init(monkeypatch)
    assert server.start_ray(config) is False
    assert seen["address"] == "10.0.0.1:6379" and "num_cpus" not in seen
