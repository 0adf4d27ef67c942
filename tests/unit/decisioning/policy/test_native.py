"""Native scoring (lleaves): same propensities as LightGBM, and LightGBM whenever in doubt."""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest

from actors.shard import Shard
from decisioning.config import Config
from decisioning.config.loader import config_from_dict
from decisioning.policy.scoring import (
    NATIVE_TOLERANCE,
    LightGBMScorer,
    NativeScorer,
    compile_native,
    native_tag,
    probe_matrix,
    scorer_for,
)
from decisioning.stores.registry import Registry
from tests.unit import edge
from tests.unit.models import tiny_model


@pytest.fixture(scope="module")
def compiled() -> dict[int, bytes]:
    """Native code of the tiny model at 10 and at 12 rounds (two different models)."""
    from tests.conftest import SMALL

    cfg = config_from_dict(SMALL, "small")
    return {r: compile_native(tiny_model(cfg, rounds=r).model_text) for r in (10, 12)}


def _with_scorer(config: Config, scorer: str) -> Config:
    data = config.model_dump(mode="json")
    data["server"]["scorer"] = scorer
    return config_from_dict(data, "small")


def test_native_code_gives_lightgbm_propensities(
    small_config: Config, compiled: dict[int, bytes]
) -> None:
    bundle = tiny_model(small_config)
    native = NativeScorer(bundle.model_text, compiled[10])
    reference = LightGBMScorer(bundle.model_text)
    x = probe_matrix(4, {2: 3}, rows=2000)
    assert np.isnan(x).any() and (x[:, 2] == 3).any()  # missing values and unseen categories
    got, want = native.predict(x), reference.predict(x)
    assert got.shape == want.shape == (2000,)
    assert np.max(np.abs(got - want)) <= NATIVE_TOLERANCE
    assert len(np.unique(want)) > 10  # the probe reaches many leaves, not one


def test_scorer_choice_falls_back_to_lightgbm_with_a_reason(
    small_config: Config, compiled: dict[int, bytes], caplog: pytest.LogCaptureFixture
) -> None:
    bundle = tiny_model(small_config)
    reference = LightGBMScorer(bundle.model_text)
    cats = {2: 3}
    caplog.set_level(logging.WARNING, logger="nextbest.model")

    _, kind = scorer_for(bundle.with_native(compiled[10]), reference, cats, use_native=True)
    assert kind == "native"
    assert scorer_for(bundle.with_native(compiled[10]), reference, cats, False)[1] == "lightgbm"

    assert scorer_for(bundle, reference, cats, True)[1] == "lightgbm"
    assert "no native code for this CPU" in caplog.text

    # native code of another model loads fine but scores differently: refused
    assert scorer_for(bundle.with_native(compiled[12]), reference, cats, True)[1] == "lightgbm"
    assert "differs from LightGBM" in caplog.text

    assert scorer_for(bundle.with_native(b"not an object file"), reference, cats, True)[1] == (
        "lightgbm"
    )
    assert "did not load" in caplog.text


def test_registry_keeps_native_code_per_model_and_cpu(
    small_config: Config, compiled: dict[int, bytes]
) -> None:
    reg = Registry(small_config.server.data_dir)
    bundle = tiny_model(small_config)
    reg.register(bundle)
    tag = native_tag()
    assert tag is not None and tag.startswith(("x86_64-", "aarch64-", "arm64-"))
    assert reg.read_native(bundle.manifest.sha256, tag) is None
    assert reg.read("propensity", 1, tag).native is None
    reg.write_native(bundle.manifest.sha256, tag, compiled[10])
    assert reg.read("propensity", 1, tag).native == compiled[10]
    assert reg.read("propensity", 1).native is None  # no tag asked: no native code
    assert reg.read_native(bundle.manifest.sha256, "other-cpu") is None


def test_damaged_native_code_is_ignored_not_loaded(
    small_config: Config, compiled: dict[int, bytes], caplog: pytest.LogCaptureFixture
) -> None:
    # LLVM aborts the process on a truncated object file: the checksum must stop it first
    caplog.set_level(logging.WARNING)
    reg = Registry(small_config.server.data_dir)
    bundle = tiny_model(small_config)
    tag = native_tag()
    assert tag is not None
    reg.write_native(bundle.manifest.sha256, tag, compiled[10])
    path = reg._native_path(bundle.manifest.sha256, tag)
    with open(path, "rb") as f:
        whole = f.read()
    with open(path, "wb") as f:
        f.write(whole[: len(whole) // 2])
    assert reg.read_native(bundle.manifest.sha256, tag) is None
    assert "damaged" in caplog.text
    reg.register(bundle)
    shard = Shard(0, small_config, [reg.read("propensity", 1, tag)])
    assert shard.status()["scorers"] == {"propensity": "lightgbm"}


def test_shard_scores_natively_and_reports_it(
    small_config: Config, compiled: dict[int, bytes]
) -> None:
    now = time.time()
    bundle = tiny_model(small_config)
    native = Shard(0, small_config, [bundle.with_native(compiled[10])], clock=lambda: now)
    plain = Shard(
        0, _with_scorer(small_config, "lightgbm"), [bundle.with_native(compiled[10])], lambda: now
    )
    assert native.status()["scorers"] == {"propensity": "native"}
    assert plain.status()["scorers"] == {"propensity": "lightgbm"}
    req = {"customer_id": "c1", "channel": "web", "limit": 5, "explain": True, "dry_run": True}
    a, b = edge.decide(native, req), edge.decide(plain, req)
    assert [x["action_id"] for x in a["actions"]] == [x["action_id"] for x in b["actions"]]
    for x, y in zip(a["explanation"], b["explanation"], strict=True):
        assert x.get("propensity") == pytest.approx(y.get("propensity"), abs=NATIVE_TOLERANCE)

    # staging a model with native code of another model: served, but by LightGBM
    native.stage_model(bundle.manifest.to_dict(), bundle.model_text, compiled[12])
    native.commit_model("propensity")
    assert native.status()["scorers"] == {"propensity": "lightgbm"}
