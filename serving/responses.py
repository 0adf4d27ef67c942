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
from serving.wire import WireError, encode_body, error_body

__all__ = [
    "RETRY_AFTER",
    "core_error",
    "fail",
    "install_error_handlers",
    "raise_for",
    "reply",
]

log = logging.getLogger("nextbest.serving")
RETRY_AFTER = "1"


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


# a stale shard instance; a full queue; a merge that must wait for another
_RETRY = frozenset(("Fenced", "Backlogged", "MergeBusy"))
_STATUS = {"NotFound": 404, "AlreadyMerged": 409}


def core_error(request: Request, result: Any) -> Response | None:
    """A shard's error dict -> a 4xx (or a temporary 503) response; None when the result
    is not an error."""
    if isinstance(result, dict) and "error" in result and len(result) == 1:
        err = result["error"]
        if err["type"] in _RETRY:
            headers = {"Retry-After": RETRY_AFTER}
            return fail(request, 503, err["code"], err["message"], headers=headers)
        status = _STATUS.get(err["type"], 422)
        return fail(request, status, err["code"], err["message"], err.get("field"))
    return None


def raise_for(result: Any) -> None:
    """Raise what `core_error` would answer, for code that has no request at hand."""
    if isinstance(result, dict) and "error" in result and len(result) == 1:
        err = result["error"]
        if err["type"] in _RETRY:
            raise ShardUnavailable(err["message"], err["code"])
        status = _STATUS.get(err["type"], 422)
        raise WireError(status, err["code"], err["message"], err.get("field"))


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
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return fail(request, exc.status, exc.code, exc.message, exc.field, headers)


async def _unavailable(request: Request, exc: Exception) -> Response:
    return fail(
        request,
        503,
        getattr(exc, "code", "unavailable"),
        str(exc),
        None,
        {"Retry-After": RETRY_AFTER},
    )


async def _internal(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s", request.url.path)
    return fail(request, 500, "internal_error", "internal error; the server logs say more")


def install_error_handlers(app: FastAPI) -> None:
    """Every error leaves `app` as the same JSON (or msgpack) error body with a code."""
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(WireError, _wire_error)
    app.add_exception_handler(ShardUnavailable, _unavailable)
    app.add_exception_handler(Exception, _internal)
