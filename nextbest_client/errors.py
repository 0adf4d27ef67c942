"""What a call raises once it will not be retried any more.

    NextbestError (status, code, message, field)   any error answer; `status` 0: none came
     ├── BadRequest     400, 413, 415, 422   the request itself is wrong: fix it, do not resend
     ├── Unauthorized   401, 403             no key, an unknown key, or a key without the scope
     ├── NotFound       404                  unknown decision, table, model or route
     ├── Conflict       409                  a slot move already running, a merge done before
     └── Unavailable    503, 429             temporary: `retry_after` seconds (None if not said)
          └── Unreachable  (status 0)        no answer at all (refused, reset, timed out)

A 503, a 429 and a transport error are retried until the client's deadline, and a 421
`slot_moved` is followed to the slot's owner: these surface only when the deadline is
past. Every other error surfaces at once. `pending` holds what a batch call could not
deliver (events with the ids they were sent with), so sending exactly those again
counts each event once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "BadRequest",
    "Conflict",
    "NextbestError",
    "NotFound",
    "Unauthorized",
    "Unavailable",
    "Unreachable",
    "error_of",
]


class NextbestError(Exception):
    """An error answer (or none): HTTP status, error code, message, the field to blame."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.pending: list[dict[str, Any]] = []  # a batch's events not acknowledged

    def __reduce__(self) -> tuple[Any, ...]:  # picklable with its attributes
        return (type(self), (self.status, self.code, self.message, self.field))


class BadRequest(NextbestError):
    """400, 413, 415, 422: the request is malformed, too large or refused as invalid."""


class Unauthorized(NextbestError):
    """401 (no key or an unknown one) or 403 (the key lacks the route's scope)."""


class NotFound(NextbestError):
    """404: an unknown decision, table or model, or a route this server does not serve."""


class Conflict(NextbestError):
    """409: the server's state refuses the request (e.g. `move_in_progress`)."""


class Unavailable(NextbestError):
    """503 (or 429): the server could not serve it now; still so at the deadline."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(status, code, message, field)
        self.retry_after = retry_after

    def __reduce__(self) -> tuple[Any, ...]:
        args = (self.status, self.code, self.message, self.field, self.retry_after)
        return (type(self), args)


class Unreachable(Unavailable):
    """No answer (connection refused or reset, a timeout) until the deadline."""

    def __init__(self, message: str) -> None:
        super().__init__(0, "unreachable", message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.message,))


_BY_STATUS: dict[int, type[NextbestError]] = {
    400: BadRequest,
    413: BadRequest,
    415: BadRequest,
    422: BadRequest,
    401: Unauthorized,
    403: Unauthorized,
    404: NotFound,
    409: Conflict,
}


def error_of(status: int, body: Any, retry_after: float | None = None) -> NextbestError:
    """The typed error of an error answer; `body` is its decoded body (anything: a
    proxy's or Serve's own 503 may not carry the API's error object)."""
    err = body.get("error") if isinstance(body, Mapping) else None
    if isinstance(err, Mapping):
        code = str(err.get("code") or f"http_{status}")
        message = str(err.get("message") or "")
        field = err.get("field")
        field = None if field is None else str(field)
    else:
        code, message, field = f"http_{status}", str(body or "")[:500], None
    if status in (429, 503):
        return Unavailable(status, code, message, field, retry_after)
    return _BY_STATUS.get(status, NextbestError)(status, code, message, field)
