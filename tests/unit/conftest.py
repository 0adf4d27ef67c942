"""Unit tests never start Ray: this keeps them honest."""

from __future__ import annotations

import pytest
import ray


@pytest.fixture(autouse=True)
def _no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("unit tests must not start Ray; put this test in tests/integration")

    if not ray.is_initialized():
        monkeypatch.setattr(ray, "init", refuse)
