"""OpenAPI for routes that decode their own bodies (JSON or msgpack): the request
schemas come from the same pydantic wire models that validate them."""

from __future__ import annotations

from collections.abc import Callable, Set
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

__all__ = ["OPEN_PATHS", "install_openapi"]

OPEN_PATHS = frozenset(("/healthz", "/readyz"))  # no API key: probes must get through

_REF = "#/components/schemas/{model}"
_ERROR = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "field": {"type": "string"},
            },
            "required": ["code", "message"],
        }
    },
    "required": ["error"],
}


Bodies = dict[str, tuple[type[BaseModel], bool]]


def install_openapi(
    app: FastAPI, bodies: Callable[[], Bodies], hidden: Callable[[], Set[str]] = frozenset
) -> None:
    """Describe `bodies()` ({path: (model, accepts a list too)}) in the app's OpenAPI,
    leaving out the paths in `hidden()` (routes this app does not serve as configured);
    called at the first request for it, so the models can carry the configured limits."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        spec = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        for path in hidden():
            spec["paths"].pop(path, None)
        schemas = spec.setdefault("components", {}).setdefault("schemas", {})
        schemas["Error"] = _ERROR
        for path, (model, many) in bodies().items():
            js = model.model_json_schema(ref_template=_REF)
            schemas.update(js.pop("$defs", {}))
            schemas[model.__name__] = js
            ref: dict[str, Any] = {"$ref": _REF.format(model=model.__name__)}
            body = {"oneOf": [ref, {"type": "array", "items": ref}]} if many else ref
            for op in spec["paths"].get(path, {}).values():
                op["requestBody"] = {
                    "required": True,
                    "content": {
                        "application/json": {"schema": body},
                        "application/msgpack": {"schema": body},
                    },
                }
        spec["components"]["securitySchemes"] = {
            "apiKey": {"type": "http", "scheme": "bearer", "description": "An API key."},
            "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        }
        for path, ops in spec["paths"].items():
            for op in ops.values():
                if path not in OPEN_PATHS:
                    op["security"] = [{"apiKey": []}, {"apiKeyHeader": []}]
                op.setdefault("responses", {})["4XX"] = {
                    "description": "Bad input: a machine-readable error code",
                    "content": {
                        "application/json": {"schema": {"$ref": _REF.format(model="Error")}}
                    },
                }
        app.openapi_schema = spec
        return spec

    app.openapi = openapi  # type: ignore[method-assign]
