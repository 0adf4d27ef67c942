"""Unit tests never start Ray: this keeps them honest.

`make test` runs them in a process of their own (no integration test has started Ray
there), so the guard is unconditional: any `ray.init` fails the test that calls it."""

from __future__ import annotations

import pytest
import ray


@pytest.fixture(autouse=True)
def _no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("unit tests must not start Ray; put this test in tests/integration")

    assert not ray.is_initialized(), (
        "Ray is running in this process: run tests/unit apart from tests/integration"
    )
    monkeypatch.setattr(ray, "init", refuse)
