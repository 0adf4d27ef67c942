"""Responses and error handlers shared by the public app and the admin API.

(No `from __future__ import annotations`: FastAPI resolves the handlers' `Request`.)
"""

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from actors.remote import ShardUnavailable
from decisioning.errors import NextbestError
from serving.errors import RETRY_AFTER, http_error
from serving.wire import WireError, encode_body, error_body

__all__ = ["RETRY_AFTER", "error_response", "fail", "install_error_handlers", "reply"]

log = logging.getLogger("nextbest.serving")
_HEADERS = {401: {"WWW-Authenticate": "Bearer"}, 503: {"Retry-After": RETRY_AFTER}}


def reply(
    request: Request, value: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """`value` as JSON or msgpack, as the request's Accept header asks."""
    body, media = encode_body(value, request.headers.get("accept"))
    return Response(body, status_code=status, media_type=media, headers=headers)


def fail(
    request: Request,
    status: int,
    code: str,
    message: str,
    field: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """An error response: {"error": {"code", "message", "field"}}."""
    return reply(request, error_body(code, message, field), status, headers)


async def _request_validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    err = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    field = ".".join(str(p) for p in err["loc"])
    return fail(request, 422, "invalid_field", f"{field}: {err['msg']}", field or None)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return fail(request, exc.status_code, code, str(exc.detail))


async def _wire_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, WireError)
    return fail(request, exc.status, exc.code, exc.message, exc.field, _HEADERS.get(exc.status))


async def _mapped(request: Request, exc: Exception) -> Response:
    """A core error a route let through, an unavailable shard, or a bug (500, logged):
    `http_error`'s answer."""
    wire = http_error(exc)
    if wire.status >= 500 and wire.status != 503:
        log.error("unhandled error on %s", request.url.path, exc_info=exc)
    return await _wire_error(request, wire)


async def error_response(request: Request, exc: Exception) -> Response:
    """What the handlers below answer for `exc` (for a caller outside FastAPI's)."""
    if isinstance(exc, WireError):
        return await _wire_error(request, exc)
    return await _mapped(request, exc)


def install_error_handlers(app: FastAPI) -> None:
    """Every error leaves `app` as the same JSON (or msgpack) error body with a code."""
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(WireError, _wire_error)
    for kind in (ShardUnavailable, NextbestError, Exception):
        app.add_exception_handler(kind, _mapped)
