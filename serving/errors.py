"""The one mapping from a core error to HTTP: status, error code, message and field.

Every route answers errors through `http_error` (or `ok`/`raise_for`, which use it), so
an error class means the same status wherever it surfaces. The classes are drawn in
decisioning/errors.py; the status of each is decided here, by the class (the nearest
in its MRO that the table names), then by a code that refines it:

    temporary (503 + Retry-After)  Fenced, StorageFailed, Backlogged, MergeBusy, Moved,
                                   SlotMoved, SlotFrozen
    404 not found                  NotFound, LinkError (an open link that is not ours)
    410 gone                       code `link_expired`
    409 conflict                   AlreadyMerged, RequestIdReused; code `no_previous`
                                   (nothing to roll back to: the state, not the
                                   request, is at fault)
    500                            SnapshotError (never the caller's fault), and any
                                   exception outside the tree
    a refusal (422 by default)     everything else in the tree: InvalidInput,
                                   RuleError/CatalogError, ConfigError, ModelError, ...

What a refusal answers depends on what the route was asked to do, which only the route
knows: to act on what its body carries (422 unprocessable: a model to deploy, a catalog
to apply) or on state it names (409 conflict: promote a stored version). A route says
so with `refusal=`, and may name the code its refusals carry (`code="model_refused"`).

Two errors of the edge join them: `ShardUnavailable` (actors/remote.py: restarting,
timed out, overloaded; 503) and `WireError` (serving/wire.py: a request that does not
decode or validate; it carries its own status).

Errors cross the actor boundary as one typed value: a shard or the supervisor answers
a refusal with the error itself (actors/calls.py), which pickles as its class and
attributes (decisioning/errors.py), so `error_of` has nothing to decode: an answer is
an error exactly when it is an exception instance, and the mapping sees the very class
that was raised.
"""

from __future__ import annotations

from typing import Any

from actors.remote import ShardUnavailable
from decisioning.delivery.links import LinkError
from decisioning.errors import (
    AlreadyMerged,
    Backlogged,
    ConfigError,
    MergeBusy,
    ModelError,
    Moved,
    NextbestError,
    NotFound,
    RequestIdReused,
    RuleError,
    SlotFrozen,
    SlotMoved,
)
from decisioning.journal.fencing import Fenced
from decisioning.journal.snapshot import SnapshotError
from decisioning.journal.wal import StorageFailed
from decisioning.policy.catalog import CatalogError
from serving.wire import WireError

__all__ = [
    "REFUSED",
    "RETRY_AFTER",
    "error_of",
    "http_error",
    "is_error",
    "moved_of",
    "ok",
    "raise_for",
]

RETRY_AFTER = "1"  # seconds, on every 503
REFUSED = 0  # in _STATUS: the route's `refusal` status
INTERNAL = "internal error; the server logs say more"

# by class: the first class of an error's MRO found here decides
_STATUS: dict[type[BaseException], int] = {
    Fenced: 503,  # a stale instance of a shard: its successor answers soon
    StorageFailed: 503,  # the shard restarts from disk
    Backlogged: 503,
    MergeBusy: 503,
    Moved: 503,  # followed by the ingress; one left over means merges are moving it
    SlotMoved: 503,  # followed by the ingress; one left over means slots keep moving
    SlotFrozen: 503,
    LinkError: 404,  # (before InvalidInput) the token is the path: not ours
    NotFound: 404,
    AlreadyMerged: 409,
    RequestIdReused: 409,  # (before InvalidInput) the id answered another request
    SnapshotError: 500,
    NextbestError: REFUSED,
}
# by code, refining the class
_CODE_STATUS = {"link_expired": 410, "no_previous": 409, "move_in_progress": 409}
# the code of an error whose class carries none
_CODE: dict[type[BaseException], str] = {
    Fenced: "shard_unavailable",
    StorageFailed: "shard_unavailable",
    CatalogError: "invalid_catalog",
    RuleError: "invalid_rule",
    ConfigError: "invalid_config",
    ModelError: "model_refused",
    NextbestError: "invalid_input",
}


def _nearest(table: dict[type[BaseException], Any], err: BaseException) -> Any:
    return next((table[c] for c in type(err).__mro__ if c in table), None)


def error_of(answer: Any) -> BaseException | None:
    """The error a shard or the supervisor answered; None when `answer` is a result."""
    return answer if isinstance(answer, BaseException) else None


def is_error(answer: Any, code: str | None = None) -> bool:
    """Whether `answer` is an error (with this code, when one is given)."""
    err = error_of(answer)
    return err is not None and (code is None or _code_of(err) == code)


def moved_of(answer: Any) -> dict[str, str] | None:
    """An answer `moved`: every merged customer it names, and where each went."""
    err = error_of(answer)
    if not isinstance(err, Moved):
        return None
    return dict(getattr(err, "moved", None) or {err.customer: err.target})


def _code_of(err: BaseException) -> str:
    code = getattr(err, "code", None)
    return code if isinstance(code, str) else _nearest(_CODE, err) or "internal_error"


def http_error(
    err: BaseException, *, refusal: int = 422, code: str | None = None, prefix: str = ""
) -> WireError:
    """The HTTP answer to `err`: status, code, message, field (a 503 gets Retry-After).

    `refusal`: the status of a refusal on this route (422: what the body carries is
    refused; 409: the state the request names is); `code`: the code its refusals carry
    instead of the error's own; `prefix`: the item's place in a batch, e.g. `[2].`.
    """
    if isinstance(err, WireError):
        return err
    if isinstance(err, ShardUnavailable):
        return WireError(503, err.code, str(err))
    if not isinstance(err, NextbestError | Fenced | StorageFailed):
        return WireError(500, "internal_error", INTERNAL)
    own = _code_of(err)
    status = _nearest(_STATUS, err)
    if status == 500:
        return WireError(500, "internal_error", INTERNAL)
    if status != 503:
        status = _CODE_STATUS.get(own, status)
    if status == REFUSED:
        status, own = refusal, code or own
    message = getattr(err, "message", None) or str(err)
    field = getattr(err, "field", None) if status != 503 else None
    return WireError(status, own, message, f"{prefix}{field}" if field else None)


def raise_for(answer: Any, **how: Any) -> None:
    """Raise what an error answer maps to (see `http_error` for `how`): a temporary one
    as ShardUnavailable, which callers may catch to try again later; else WireError."""
    err = error_of(answer)
    if err is None:
        return
    wire = http_error(err, **how)
    if wire.status == 503:
        raise ShardUnavailable(wire.message, wire.code)
    raise wire


def ok(answer: Any, **how: Any) -> Any:
    """`answer` when it is not an error; else raise what it maps to (`raise_for`)."""
    raise_for(answer, **how)
    return answer
