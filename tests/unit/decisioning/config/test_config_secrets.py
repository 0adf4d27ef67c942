"""Secrets the config names are resolved from one process's environment, at its edge:
a configured model key missing there refuses every model, and no key travels with the
config to another process."""

from __future__ import annotations

import hashlib
import pickle

import pytest

from decisioning.config import Config, Secrets
from decisioning.config.loader import config_from_dict
from decisioning.errors import ModelIntegrityError
from tests.conftest import SMALL

MODEL_VAR, LINK_VAR = "NB_TEST_SECRET_MODEL_KEY", "NB_TEST_SECRET_LINK_KEY"
ENVIRON = {MODEL_VAR: "model-signing-secret", LINK_VAR: "link-sealing-secret"}


def _config(model: str | None = MODEL_VAR, link: str | None = LINK_VAR) -> Config:
    data = {**SMALL, "auth": {"model_key_env": model}, "delivery": {"link_key_env": link}}
    return config_from_dict(data, "secrets.yaml")


def test_keys_come_from_the_environment_given() -> None:
    secrets = Secrets.resolve(_config(), ENVIRON)
    assert secrets.model_key() == b"model-signing-secret"
    # the derivation open links were always sealed with: links handed out before still open
    assert secrets.link_key == hashlib.sha256(b"link-sealing-secret").digest()


def test_unconfigured_keys_are_none_whatever_the_environment() -> None:
    secrets = Secrets.resolve(_config(None, None), ENVIRON)
    assert secrets.model_key() is None and secrets.link_key is None


@pytest.mark.parametrize("environ", [{}, {MODEL_VAR: ""}], ids=["unset", "empty"])
def test_a_configured_model_key_missing_refuses_every_model(environ: dict[str, str]) -> None:
    secrets = Secrets.resolve(_config(), environ)
    with pytest.raises(ModelIntegrityError) as e:
        secrets.model_key()
    assert str(e.value) == (
        f"auth.model_key_env is {MODEL_VAR} but it is not set in this process's "
        "environment: no model can be verified"
    )
    assert secrets.link_key is None


def test_no_key_travels_with_the_config() -> None:
    """A shard gets its config pickled from the driver: the key in the driver's
    environment must not come with it (a node without the key refuses models)."""
    loaded = config_from_dict(
        {**SMALL, "auth": {"model_key_env": MODEL_VAR}}, "c.yaml", {**ENVIRON}
    )
    shipped = pickle.dumps(loaded)
    assert b"model-signing-secret" not in shipped
    with pytest.raises(ModelIntegrityError, match=MODEL_VAR):
        Secrets.resolve(pickle.loads(shipped), {}).model_key()


def test_keys_are_never_printed() -> None:
    shown = repr(Secrets.resolve(_config(), ENVIRON))
    assert "model-signing-secret" not in shown and "model_key_value" not in shown
    assert MODEL_VAR in shown  # which variable it is, though, helps
