"""The OpenAPI documents (the channels' app and the admin port's) describe every answer:
a real schema for each success, the error shape for each error status a route can give,
and a 503 with Retry-After wherever the route waits on a shard or the supervisor; so
schemathesis checks the answers for real. Built without Ray."""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.routing import APIRoute

from actors.remote import SupervisorClient
from decisioning.config import Config
from serving.admin import ADMIN_PATHS, admin_app
from serving.app import fastapi_app
from serving.openapi import ANSWERS

ERROR = {"$ref": "#/components/schemas/ErrorOut"}
# what a route's code uses to reach a shard or the supervisor
REACHES = re.compile(r"\bapi\.(router|ident|fanout|_decide)\b|\bsupervisor\b")


def _admin(config: Config) -> FastAPI:
    return admin_app(config, SupervisorClient(config, None))


def _routes(router: Any) -> Iterator[APIRoute]:
    """The app's routes, also those Serve's ingress nests in an included router."""
    for r in router.routes:
        if isinstance(r, APIRoute):
            yield r
        elif hasattr(r, "original_router"):
            yield from _routes(r.original_router)


def _operations(app: FastAPI) -> Iterator[tuple[str, str, dict[str, Any], APIRoute]]:
    spec = app.openapi()
    for route in _routes(app.router):
        for method in sorted(route.methods):
            op = spec["paths"][route.path][method.lower()]
            yield route.path, method.lower(), op, route


@pytest.fixture(params=["channels", "admin"])
def app(request: pytest.FixtureRequest, example_config: Config) -> FastAPI:
    return fastapi_app if request.param == "channels" else _admin(example_config)


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def test_every_success_has_a_real_schema_in_both_media_types(app: FastAPI) -> None:
    spec = app.openapi()
    ops = list(_operations(app))
    assert len(ops) >= 11
    for path, method, op, _ in ops:
        ok = "202" if path.startswith("/v1/shards/") else "200"  # a slot move: started
        content = op["responses"][ok]["content"]
        assert set(content) == {"application/json", "application/msgpack"}, (method, path)
        schema = _resolve(spec, content["application/json"]["schema"])
        shape = {"properties", "anyOf", "additionalProperties"} & set(schema)
        assert shape, (method, path, "the 200 body has no schema")
        assert content["application/msgpack"] == content["application/json"]


def test_every_error_status_is_listed_with_the_error_shape(app: FastAPI) -> None:
    spec = app.openapi()
    for path, method, op, route in _operations(app):
        where = (method, path)
        responses = op["responses"]
        assert not {"default", "4XX", "5XX"} & set(responses), where  # each status by name
        for status, r in responses.items():
            if status in ("200", "202"):
                continue
            schema = r["content"]["application/json"]["schema"]
            assert schema == ERROR or ERROR in schema.get("anyOf", ()), (where, status)
        statuses = set(responses) - {"200", "202"}
        if "security" in op:
            assert {"401", "403"} <= statuses, where
            assert responses["401"]["headers"]["WWW-Authenticate"]["required"], where
        else:
            assert not {"401", "403"} & statuses, where
        if "requestBody" in op:
            assert {"400", "413", "415", "422"} <= statuses, where
        if "{" in path:  # a "/" in the segment matches no route
            assert "404" in statuses, where
        waits = bool(REACHES.search(inspect.getsource(route.endpoint)))
        assert ("503" in statuses) == waits, (where, "a route that waits on a shard 503s")
        if waits:
            retry = responses["503"]["headers"]["Retry-After"]
            assert retry["required"] and retry["schema"]["type"] == "integer", where
    assert "HTTPValidationError" not in spec["components"]["schemas"]  # ours answer ErrorOut


def test_answers_name_only_routes_that_exist(example_config: Config) -> None:
    served = {
        (path, method)
        for app in (fastapi_app, _admin(example_config))
        for path, method, _, _ in _operations(app)
    }
    declared = {(path, method) for path, ops in ANSWERS.items() for method in ops}
    assert declared == served
    assert {p for p, _ in served if p != "/healthz"} >= ADMIN_PATHS


def test_open_routes_need_no_key() -> None:
    spec = fastapi_app.openapi()
    open_ = {
        path for path, ops in spec["paths"].items() for op in ops.values() if "security" not in op
    }
    assert open_ == {"/healthz", "/readyz", "/v1/open/{token}"}


def test_schemathesis_reads_every_operation(app: FastAPI) -> None:
    schema = schemathesis.openapi.from_dict(app.openapi())
    labels = [result.ok().label for result in schema.get_all_operations()]
    assert len(labels) == len(list(_operations(app)))


def test_decide_documents_the_idempotency_key_header_as_its_request_id() -> None:
    """The header is the body's request_id: the same string schema (the configured
    limits), and the 409 a reused one gets."""
    spec = fastapi_app.openapi()
    op = spec["paths"]["/v1/decide"]["post"]
    (header,) = [p for p in op["parameters"] if p["in"] == "header"]
    assert (header["name"], header["required"]) == ("Idempotency-Key", False)
    body = spec["components"]["schemas"]["DecideIn"]["properties"]["request_id"]
    assert header["schema"] in body["anyOf"] and header["schema"]["type"] == "string"
    assert "409" in op["responses"]
