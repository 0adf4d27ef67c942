"""OpenAPI for routes that decode their own bodies and build their own answers (JSON or
msgpack): the request schemas come from the same pydantic wire models that validate
them (and so do the headers that stand for a body field: `HEADER_FIELDS`); `ANSWERS`
says what each route answers (the success body, from `serving/answers.py` and
`serving/admin_answers.py`, and every error status it gives)."""

from __future__ import annotations

import json
from collections.abc import Callable, Set
from typing import Any, NamedTuple

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from serving.admin_answers import (
    CatalogApplied,
    CatalogOut,
    Deployed,
    ModelsOut,
    ModelStatsOut,
    MoveProgress,
    RolledOut,
    ShardsOut,
    StatusOut,
)
from serving.answers import (
    Accepted,
    Acked,
    ClusterSlots,
    ContextPut,
    ContextTables,
    DecisionOut,
    DecisionsOut,
    Erased,
    ErrorOut,
    Health,
    IdentityOut,
    MergeOut,
    OpenedOut,
    OutboundOut,
    ProfileOut,
    Readiness,
)
from serving.wire import IDEMPOTENCY_KEY

__all__ = ["ANSWERS", "HEADER_FIELDS", "MEDIA_TYPES", "OPEN_PATHS", "Answer", "install_openapi"]

# no API key: probes must get through; an open link's token is its own key
OPEN_PATHS = frozenset(("/healthz", "/readyz", "/v1/open/{token}"))
MEDIA_TYPES = ("application/json", "application/msgpack")  # msgpack: with that Accept
# a header a route takes in place of a body field, checked as that field: path -> {header:
# field}
HEADER_FIELDS = {"/v1/decide": {IDEMPOTENCY_KEY: "request_id"}}


class Answer(NamedTuple):
    """A route's success body and the error statuses it can give (each with ErrorOut;
    `unavailable`, when set, is what its 503 may carry instead)."""

    ok: type[BaseModel]
    errors: tuple[int, ...] = ()
    unavailable: type[BaseModel] | None = None
    status: int = 200  # 202: started, runs on (the slot moves)


KEY = (401, 403)  # no or unknown API key; a key without the route's scope
BODY = (400, 413, 415, 422)  # not JSON/msgpack, too large, another media type, invalid
PATH = (404, 422)  # a path segment that is no id (or holds a "/")
LATER = (503,)  # a shard or the supervisor restarting, a timeout, overload

ANSWERS: dict[str, dict[str, Answer]] = {
    "/v1/events": {"post": Answer(Accepted, (*KEY, *BODY, *LATER))},
    "/v1/decide": {"post": Answer(DecisionOut, (*KEY, *BODY, 409, *LATER))},
    "/v1/decide/batch": {"post": Answer(DecisionsOut, (*KEY, *BODY, *LATER))},
    "/v1/outcomes": {"post": Answer(Accepted, (*KEY, *BODY, 404, *LATER))},
    "/v1/outbound": {"get": Answer(OutboundOut, (*KEY, 409, 422, *LATER))},
    "/v1/outbound/ack": {"post": Answer(Acked, (*KEY, *BODY, *LATER))},
    "/v1/open/{token}": {"get": Answer(OpenedOut, (*PATH, 410, *LATER))},
    "/v1/context/{table}": {"put": Answer(ContextPut, (*KEY, *BODY, 404, *LATER))},
    "/v1/context": {"get": Answer(ContextTables, (*KEY, *LATER))},
    "/v1/profiles/{customer_id}": {
        "get": Answer(ProfileOut, (*KEY, *PATH, *LATER)),
        "delete": Answer(Erased, (*KEY, *PATH, *LATER)),
    },
    "/v1/identities/merge": {"post": Answer(MergeOut, (*KEY, *BODY, 409, *LATER))},
    "/v1/identities/{key}": {"get": Answer(IdentityOut, (*KEY, *PATH, *LATER))},
    "/v1/models": {"get": Answer(ModelsOut, (*KEY, *LATER))},
    "/v1/models/deploy": {"post": Answer(Deployed, (*KEY, *BODY, *LATER))},
    "/v1/models/stats": {"get": Answer(ModelStatsOut, (*KEY, *LATER))},
    "/v1/models/{name}/promote": {"post": Answer(RolledOut, (*KEY, *BODY, 404, 409, *LATER))},
    "/v1/models/{name}/rollback": {"post": Answer(RolledOut, (*KEY, *BODY, 404, 409, *LATER))},
    "/v1/models/{name}/split": {"post": Answer(RolledOut, (*KEY, *BODY, 404, 409, *LATER))},
    "/v1/catalog": {
        "get": Answer(CatalogOut, (*KEY, *LATER)),
        "put": Answer(CatalogApplied, (*KEY, *BODY, 409, *LATER)),
    },
    "/v1/catalog/rollback": {"post": Answer(CatalogApplied, (*KEY, 409, 422, *LATER))},
    "/v1/status": {"get": Answer(StatusOut, (*KEY, *LATER))},
    "/v1/shards": {"get": Answer(ShardsOut, (*KEY, *LATER))},
    "/v1/shards/scale": {"post": Answer(MoveProgress, (*KEY, *BODY, 409, *LATER), status=202)},
    "/v1/shards/move": {"post": Answer(MoveProgress, (*KEY, *BODY, 409, *LATER), status=202)},
    "/v1/shards/rebalance": {"post": Answer(MoveProgress, (*KEY, 409, *LATER), status=202)},
    "/v1/cluster/slots": {"get": Answer(ClusterSlots, (*KEY, *LATER))},
    "/healthz": {"get": Answer(Health)},
    "/readyz": {"get": Answer(Readiness, LATER, unavailable=Readiness)},
}

_REF = "#/components/schemas/{model}"
_WHY = {
    400: "The body is not JSON or msgpack, is empty, or nests too deep",
    401: "No API key, or an unknown one",
    403: "The API key lacks this route's scope",
    404: "Not found (see the error code)",
    409: "Conflicts with the current state (see the error code)",
    410: "The link has expired",
    413: "The body or the batch is too large",
    415: "Neither JSON nor msgpack",
    422: "Invalid input: the error names the field",
    503: "Temporarily unavailable (restarting, timed out or overloaded): retry after "
    "Retry-After seconds",
}
_HEADERS = {
    401: {"WWW-Authenticate": {"required": True, "schema": {"type": "string"}}},
    503: {
        "Retry-After": {
            "description": "Seconds to wait before retrying.",
            "required": True,
            "schema": {"type": "integer", "minimum": 0},
        }
    },
}

Bodies = dict[str, tuple[type[BaseModel], bool]]


def _content(schema: dict[str, Any]) -> dict[str, Any]:
    return {media: {"schema": schema} for media in MEDIA_TYPES}


def _responses(answer: Answer, ref: Callable[[type[BaseModel]], dict[str, Any]]) -> Any:
    """The OpenAPI `responses` of one operation."""
    what = "OK" if answer.status == 200 else "Accepted: started, runs on"
    out: dict[str, Any] = {
        str(answer.status): {"description": what, "content": _content(ref(answer.ok))}
    }
    for status in answer.errors:
        schema = ref(ErrorOut)
        if status == 503 and answer.unavailable is not None:
            schema = {"anyOf": [ref(answer.unavailable), schema]}
        out[str(status)] = {"description": _WHY[status], "content": _content(schema)}
        if status in _HEADERS:
            out[str(status)]["headers"] = _HEADERS[status]
    return out


def _headers(path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The headers `path` takes in place of a body field (HEADER_FIELDS), each with the
    field's own string schema (so the configured limits show)."""
    out = []
    for header, name in HEADER_FIELDS.get(path, {}).items():
        field = body["properties"][name]
        schema = next(s for s in field.get("anyOf", [field]) if s.get("type") == "string")
        out.append(
            {
                "name": header,
                "in": "header",
                "required": False,
                "description": f"The body's `{name}` as a header (send one, or the same "
                f"in both). {field.get('description', '')}".rstrip(),
                "schema": schema,
            }
        )
    return out


def _describe_answers(spec: dict[str, Any]) -> None:
    """Every operation's answers from ANSWERS; the components they refer to."""
    schemas = spec["components"]["schemas"]
    models = {a.ok for ops in ANSWERS.values() for a in ops.values()} | {ErrorOut}
    models |= {a.unavailable for ops in ANSWERS.values() for a in ops.values() if a.unavailable}
    refs, defs = models_json_schema(
        [(m, "serialization") for m in sorted(models, key=lambda m: m.__name__)],
        ref_template=_REF,
    )
    schemas.update(defs.get("$defs", {}))

    def ref(model: type[BaseModel]) -> dict[str, Any]:
        return dict(refs[(model, "serialization")])

    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            answer = ANSWERS.get(path, {}).get(method)
            if answer is not None:  # (a route missing here keeps FastAPI's: a test fails)
                op["responses"] = _responses(answer, ref)
    if "HTTPValidationError" not in json.dumps(spec["paths"]):  # our handler answers ErrorOut
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)


def install_openapi(
    app: FastAPI, bodies: Callable[[], Bodies], hidden: Callable[[], Set[str]] = frozenset
) -> None:
    """Describe `bodies()` ({path: (model, accepts a list too)}) and every route's answers
    in the app's OpenAPI, leaving out the paths in `hidden()` (routes this app does not
    serve as configured); called at the first request for it, so the models can carry
    the configured limits."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        spec = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        for path in hidden():
            spec["paths"].pop(path, None)
        schemas = spec.setdefault("components", {}).setdefault("schemas", {})
        for path, (model, many) in bodies().items():
            js = model.model_json_schema(ref_template=_REF)
            schemas.update(js.pop("$defs", {}))
            schemas[model.__name__] = js
            ref: dict[str, Any] = {"$ref": _REF.format(model=model.__name__)}
            body = {"oneOf": [ref, {"type": "array", "items": ref}]} if many else ref
            for op in spec["paths"].get(path, {}).values():
                op["requestBody"] = {"required": True, "content": _content(body)}
                if path in HEADER_FIELDS:
                    op["parameters"] = [*op.get("parameters", []), *_headers(path, js)]
        _describe_answers(spec)
        spec["components"]["securitySchemes"] = {
            "apiKey": {"type": "http", "scheme": "bearer", "description": "An API key."},
            "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        }
        for path, ops in spec["paths"].items():
            for op in ops.values():
                if path not in OPEN_PATHS:
                    op["security"] = [{"apiKey": []}, {"apiKeyHeader": []}]
        app.openapi_schema = spec
        return spec

    app.openapi = openapi  # type: ignore[method-assign]
