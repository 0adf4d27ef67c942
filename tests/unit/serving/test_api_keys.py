"""API keys: hashing, scopes, constant-time comparison, and how the CLI hands them out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from decisioning.config import AuthSpec
from decisioning.config.loader import load_config
from decisioning.errors import ConfigError
from serving.auth import KeyRing, new_key, sha256_hex
from serving.cli import app
from serving.wire import WireError
from tests.conftest import EXAMPLE

runner = CliRunner()


def _ring(**keys: list[str]) -> tuple[KeyRing, dict[str, str]]:
    raw = {name: new_key() for name in keys}
    spec = AuthSpec.model_validate(
        {"keys": [{"name": n, "sha256": sha256_hex(raw[n]), "scopes": s} for n, s in keys.items()]}
    )
    return KeyRing(spec), raw


def _status(ring: KeyRing, headers: dict[str, str], scope: str | None) -> int | str | None:
    try:
        return ring.check(headers, scope)
    except WireError as e:
        return e.status


def test_a_route_open_to_any_scope_refuses_a_key_without_one() -> None:
    ring, raw = _ring(web=["events:write"], none=[])
    assert _status(ring, {"authorization": f"Bearer {raw['web']}"}, None) == "web"
    assert _status(ring, {"authorization": f"Bearer {raw['none']}"}, None) == 403
    assert _status(ring, {}, None) == 401


def test_scopes_and_both_headers() -> None:
    ring, raw = _ring(web=["decide", "events:write"], ops=["admin"])
    assert _status(ring, {"authorization": f"Bearer {raw['web']}"}, "decide") == "web"
    assert _status(ring, {"x-api-key": raw["ops"]}, "admin") == "ops"
    assert _status(ring, {"x-api-key": raw["web"]}, "admin") == 403
    assert _status(ring, {"authorization": f"Basic {raw['web']}"}, "decide") == 401
    assert _status(ring, {}, "decide") == 401
    assert _status(ring, {"x-api-key": raw["web"][:-1]}, "decide") == 401
    assert _status(ring, {"x-api-key": "\udcff"}, "decide") == 401  # odd bytes: still 401
    off = KeyRing(AuthSpec(enabled=False))
    assert _status(off, {}, "admin") is None


def test_keys_config_is_checked_and_can_come_from_the_environment() -> None:
    key = new_key()
    entry = {"name": "web", "sha256": sha256_hex(key), "scopes": ["decide"]}
    c = load_config(EXAMPLE, {"NEXTBEST_AUTH_KEYS": json.dumps([entry])})
    assert c.auth.keys[0].name == "web" and c.auth.enabled
    assert not load_config(EXAMPLE, {"NEXTBEST_AUTH_ENABLED": "false"}).auth.enabled
    for bad, fragment in (
        ([{**entry, "sha256": key}], "auth.keys[0].sha256"),  # the key itself, not its hash
        ([{**entry, "scopes": ["root"]}], "auth.keys[0].scopes[0]"),
        ([entry, entry], "unique"),
    ):
        with pytest.raises(ConfigError) as e:
            load_config(EXAMPLE, {"NEXTBEST_AUTH_KEYS": json.dumps(bad)})
        assert fragment in str(e.value)


def test_keys_new_prints_a_key_and_the_entry_that_accepts_it() -> None:
    r = runner.invoke(app, ["keys", "new", "--name", "web", "--scope", "decide"])
    assert r.exit_code == 0, r.output
    key = r.output.splitlines()[1].strip()
    entry = json.loads(r.output.splitlines()[-1].strip().removeprefix("- "))
    assert entry == {"name": "web", "sha256": sha256_hex(key), "scopes": ["decide"]}
    r = runner.invoke(app, ["keys", "new", "--name", "web", "--scope", "root"])
    assert r.exit_code == 1 and "unknown scope" in r.output


def test_serve_refuses_to_start_open_by_accident(tmp_path: Path) -> None:
    env = {"NEXTBEST_DATA_DIR": str(tmp_path), "NEXTBEST_PORT": "1"}
    r = runner.invoke(app, ["serve", "--config", str(EXAMPLE)], env=env)
    assert r.exit_code == 1
    assert "no API keys are configured" in r.output  # before Ray is even started


def test_demo_key_is_made_once_private_and_has_every_scope(tmp_path: Path) -> None:
    import os
    import stat

    from serving.cli.client import headers as _headers
    from serving.cli.run import with_keys as _with_keys

    cfg = load_config(EXAMPLE, {"NEXTBEST_DATA_DIR": str(tmp_path)})
    served, key = _with_keys(cfg, demo=True)
    assert key is not None and served.auth.keys[0].sha256 == sha256_hex(key)
    assert set(served.auth.keys[0].scopes) == {
        "events:write", "decide", "profiles:read", "profiles:erase", "outbound",
        "context:write", "identities:write", "admin",
    }  # fmt: skip
    path = tmp_path / "demo-api-key"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert _with_keys(cfg, demo=True)[1] == key  # a restart keeps the same key
    assert _headers(cfg) == {"authorization": f"Bearer {key}"}  # the CLI's own calls
