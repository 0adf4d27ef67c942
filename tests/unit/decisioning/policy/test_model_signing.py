"""Model integrity: sha256 of the file always; with a signing key configured, a valid
HMAC-SHA256 signature too. A refused model leaves the serving one in place."""

from __future__ import annotations

from dataclasses import replace

import pytest
from typer.testing import CliRunner

from actors.shard import Shard
from decisioning.config import Config
from decisioning.config.loader import config_from_dict
from decisioning.errors import ModelError, ModelIntegrityError
from decisioning.policy.scoring import check_signature, read_model_dir, sign, write_model_dir
from serving.cli import app
from tests.unit import edge
from tests.unit.decisioning.policy.test_decide import Clock
from tests.unit.models import tiny_model

KEY = b"0123456789abcdef0123456789abcdef"


def _signed_config(small_config: Config) -> Config:
    data = small_config.model_dump(mode="json")
    data["auth"]["model_key_env"] = "NEXTBEST_TEST_MODEL_KEY"
    return config_from_dict(data, "small.yaml")


def test_signatures_cover_the_file_and_its_features(small_config: Config) -> None:
    m = sign(tiny_model(small_config).manifest, KEY)
    check_signature(m, KEY)
    check_signature(replace(m, version=7), KEY)  # the registry renumbers: still valid
    check_signature(replace(m, signature=""), None)  # no key configured: no signature needed
    for tampered, why in (
        (replace(m, sha256="0" * 64), "does not verify"),
        (replace(m, features=m.features[::-1]), "does not verify"),
        (replace(m, signature=""), "unsigned"),
    ):
        with pytest.raises(ModelIntegrityError, match=why):
            check_signature(tampered, KEY)
    with pytest.raises(ModelIntegrityError, match="does not verify"):
        check_signature(m, b"another key")


def test_a_shard_refuses_unsigned_and_tampered_models_and_keeps_serving(
    small_config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _signed_config(small_config)
    bundle = tiny_model(cfg)
    # fail closed, but the shard still starts: it serves without the model and says why
    unkeyed = Shard(0, cfg, [bundle], clock=Clock())
    assert unkeyed.model_versions() == {}
    assert "not set" in unkeyed.status()["refused_models"][bundle.manifest.ref]
    decision = edge.decide(unkeyed, {"customer_id": "c1", "channel": "web"})
    assert decision["model_version"] is None
    monkeypatch.setenv("NEXTBEST_TEST_MODEL_KEY", KEY.decode())
    signed = replace(bundle, manifest=sign(bundle.manifest, KEY))
    shard = Shard(0, cfg, [signed], clock=Clock())
    serving = shard.model_versions()
    for bad in (bundle.manifest, replace(signed.manifest, features=signed.manifest.features[::-1])):
        with pytest.raises(ModelError):
            shard.stage_model(bad.to_dict(), bundle.model_text)
    assert shard.model_versions() == serving


def test_models_sign_cli_and_training_sign(
    small_config: Config, tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pathlib import Path

    d = Path(str(tmp_path)) / "m"
    write_model_dir(d, tiny_model(small_config))
    monkeypatch.setenv("NEXTBEST_TEST_MODEL_KEY", KEY.decode())
    env = {"NEXTBEST_AUTH_MODEL_KEY_ENV": "NEXTBEST_TEST_MODEL_KEY"}
    r = CliRunner().invoke(app, ["models", "sign", str(d)], env=env)
    assert r.exit_code == 0, r.output
    check_signature(read_model_dir(d).manifest, KEY)
    r = CliRunner().invoke(app, ["models", "sign", str(d)], env={})
    assert r.exit_code == 1 and "model_key_env" in r.output
