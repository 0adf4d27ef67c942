"""The admin API on a port of its own (`server.admin_port`): the admin routes only, with
the same keys, over TLS when a certificate is configured, and gone when stopped."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme

from decisioning.config import Config
from serving.admin import ADMIN_PATHS, ensure_admin, stop_admin
from tests.conftest import EXAMPLE
from tests.integration.harness import ALL_SCOPES_KEY, NO_SCOPES_KEY, Server, _free_port

CLI = str(Path(sys.executable).parent / "nextbest")


def _with_admin(config: Config, **server: object) -> Config:
    return config.model_copy(update={"server": config.server.model_copy(update=server)})


@pytest.fixture
def admin(server: Server) -> Iterator[tuple[Config, str]]:
    config = _with_admin(server.config, admin_port=_free_port())
    address = ensure_admin(config)
    yield config, f"http://{address}"
    stop_admin(config)


def test_admin_port_serves_the_admin_routes_to_admin_keys_only(
    server: Server, admin: tuple[Config, str]
) -> None:
    config, url = admin
    with httpx.Client(base_url=url, timeout=30) as c:
        ok = {"authorization": f"Bearer {ALL_SCOPES_KEY}"}
        status = c.get("/v1/status", headers=ok)
        assert status.status_code == 200, status.text
        assert len(status.json()["shards"]) == config.server.shards
        served = c.get("/v1/models", headers=ok).json()
        assert served == httpx.get(f"{server.url}/v1/models", headers=ok).json()
        assert len(served["shards"]) == config.server.shards
        assert c.get("/healthz").status_code == 200
        spec = c.get("/openapi.json").json()
        assert set(spec["paths"]) == ADMIN_PATHS | {"/healthz"}
        for path in ADMIN_PATHS:
            for method in spec["paths"][path]:
                for headers, code in (({}, 401), ({"x-api-key": NO_SCOPES_KEY}, 403)):
                    r = c.request(method, path, headers=headers, json={})
                    assert r.status_code == code, (method, path, r.text)
        # the channels' routes are not here: an ops network cannot decide or read profiles
        r = c.post("/v1/decide", json={"customer_id": "a-1", "channel": "web"}, headers=ok)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_cli_status_goes_to_the_admin_port(admin: tuple[Config, str], server: Server) -> None:
    config, _ = admin
    env = {
        **os.environ,
        "NEXTBEST_API_KEY": ALL_SCOPES_KEY,
        "NEXTBEST_PORT": "9",  # nothing there: the CLI must not call the channels' port
        "NEXTBEST_ADMIN_PORT": str(config.server.admin_port),
        "NEXTBEST_DATA_DIR": str(server.data_dir),
    }
    r = subprocess.run(
        [CLI, "status", "--config", str(EXAMPLE)], capture_output=True, text=True, env=env
    )
    assert r.returncode == 0, r.stderr
    rows = [line.split() for line in r.stdout.splitlines()[1:] if line.strip()]
    assert [row[1] for row in rows] == ["yes"] * config.server.shards, r.stdout


def test_admin_port_speaks_tls_with_the_configured_certificate(
    server: Server, tmp_path: Path
) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(keyfile))
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    config = _with_admin(
        server.config,
        admin_port=_free_port(),
        tls_certfile=str(certfile),
        tls_keyfile=str(keyfile),
    )
    address = ensure_admin(config)
    try:
        trusted = ssl.create_default_context()
        ca.configure_trust(trusted)
        headers = {"authorization": f"Bearer {ALL_SCOPES_KEY}"}
        r = httpx.get(f"https://{address}/v1/status", headers=headers, verify=trusted)
        assert r.status_code == 200, r.text
        with pytest.raises(httpx.ConnectError):  # a certificate nobody vouched for
            httpx.get(f"https://{address}/healthz")
        with pytest.raises(httpx.HTTPError):  # and no plain HTTP on the TLS port
            httpx.get(f"http://{address}/healthz", timeout=5)
    finally:
        stop_admin(config)
    with pytest.raises(httpx.ConnectError):  # stopped: the port is free again
        httpx.get(f"https://{address}/healthz", verify=trusted)
