"""The admin routes are defined once (serving/admin.py) and mounted by whichever app
serves them: the channels' port and the admin port describe and guard them alike, an app
that does not serve them answers 404, and each supervisor answer maps to HTTP as
serving/errors.py says.

The supervisor is a Ray actor; here a stand-in answers as it does (its real error
dicts, from actors/remote.py), so the routes' wiring is tested without Ray. The real one
is behind tests/integration/test_rollout.py, test_catalog.py and test_admin_port.py."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from actors.calls import error_answer as _error
from actors.remote import ShardUnavailable, SupervisorClient
from decisioning.config import Config
from decisioning.config.loader import load_config
from decisioning.errors import ConfigError, ModelError, ModelIncompatible, NotFound
from serving.admin import ADMIN_PATHS, AdminAccess, admin_app, admin_router
from serving.app import fastapi_app
from serving.auth import new_key, sha256_hex
from serving.responses import install_error_handlers
from tests.conftest import EXAMPLE

ADMIN_KEY, OTHER_KEY = new_key(), new_key()


@pytest.fixture(scope="module")
def config() -> Config:
    keys = [
        {"name": "ops", "sha256": sha256_hex(ADMIN_KEY), "scopes": ["admin"]},
        {"name": "web", "sha256": sha256_hex(OTHER_KEY), "scopes": ["decide"]},
    ]
    return load_config(EXAMPLE, {"NEXTBEST_AUTH_KEYS": json.dumps(keys)})


class Supervisor(SupervisorClient):
    """Answers each method as the supervisor would (a value, an error dict, or raises
    ShardUnavailable while it restarts)."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers

    async def call(self, method: str, *args: Any) -> Any:
        answer = self.answers[method]
        if isinstance(answer, ShardUnavailable):
            raise answer
        return answer


def _mounted(config: Config, supervisor: SupervisorClient, served: bool) -> TestClient:
    app = FastAPI()
    install_error_handlers(app)
    access = AdminAccess(config, supervisor, served)
    app.include_router(admin_router(lambda: access))
    return TestClient(app)


def _operations() -> list[tuple[str, str]]:
    spec = fastapi_app.openapi()
    return [(m, p) for p in sorted(ADMIN_PATHS) for m in spec["paths"][p]]


def test_both_ports_describe_the_admin_routes_alike(config: Config) -> None:
    channels = fastapi_app.openapi()["paths"]
    admin = admin_app(config, SupervisorClient(config, None)).openapi()["paths"]
    assert set(admin) == ADMIN_PATHS | {"/healthz"}
    for path in ADMIN_PATHS:
        assert channels[path] == admin[path], path


def test_an_app_that_does_not_serve_them_answers_404_whatever_the_key(config: Config) -> None:
    with _mounted(config, SupervisorClient(config, None), served=False) as c:
        for method, path in _operations():
            for headers in ({}, {"x-api-key": ADMIN_KEY}):
                r = c.request(method, path.replace("{name}", "propensity"), headers=headers)
                assert r.status_code == 404, (method, path, r.text)
                assert r.json()["error"]["code"] == "not_found"


def test_only_an_admin_key_gets_in(config: Config) -> None:
    with _mounted(config, SupervisorClient(config, None), served=True) as c:
        for method, path in _operations():
            for headers, status in (({}, 401), ({"x-api-key": OTHER_KEY}, 403)):
                r = c.request(method, path, headers=headers, json={})
                assert r.status_code == status, (method, path, r.text)


def test_supervisor_answers_map_as_the_routes_ask(config: Config) -> None:
    stale = ModelError("propensity@9 is not in the registry")
    supervisor = Supervisor(
        {
            "roll_out": _error(stale),
            "deploy_model": _error(ModelIncompatible("propensity@2", ["shoe_size"])),
            "apply_catalog": _error(NotFound("no earlier catalog", code="no_previous")),
            "status": ShardUnavailable("restarting", "supervisor_unavailable"),
        }
    )
    key = {"x-api-key": ADMIN_KEY}
    with _mounted(config, supervisor, served=True) as c:
        r = c.post("/v1/models/propensity/promote", json={"version": 9}, headers=key)
        assert (r.status_code, r.json()["error"]["code"]) == (409, "model_refused")  # stored
        deploy = {"manifest": {}, "model_text": "tree"}
        r = c.post("/v1/models/deploy", json=deploy, headers=key)
        assert (r.status_code, r.json()["error"]["code"]) == (422, "model_refused")  # carried
        assert "shoe_size" in r.json()["error"]["message"]
        r = c.post("/v1/catalog/rollback", headers=key)
        assert (r.status_code, r.json()["error"]["code"]) == (409, "no_previous")
        supervisor.answers["apply_catalog"] = _error(ConfigError("catalog", [("actions", "x")]))
        r = c.put("/v1/catalog", json={"actions": []}, headers=key)
        assert (r.status_code, r.json()["error"]["code"]) == (422, "invalid_catalog")
        r = c.get("/v1/status", headers=key)
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert r.json()["error"]["code"] == "supervisor_unavailable"


def test_the_channels_app_mounts_them_with_its_replica_access(config: Config) -> None:
    """On an ingress replica the access is the Ingress's (Serve's replica context); here
    the same dependency is given one, moved to the admin port (404) and then not."""
    from serving.app import _replica_admin

    for served, status in ((False, 404), (True, 401)):
        access = AdminAccess(config, SupervisorClient(config, None), served)
        fastapi_app.dependency_overrides[_replica_admin] = lambda access=access: access
        try:
            with TestClient(fastapi_app) as c:
                for method, path in _operations():
                    r = c.request(method, path, json={})
                    assert r.status_code == status, (method, path, r.text)
        finally:
            fastapi_app.dependency_overrides.clear()
