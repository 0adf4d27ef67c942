"""A call to a shard as both sides of the actor boundary see it (no Ray here).

A request-path call names one of `REQUEST_METHODS` and runs on the shard's one thread.
Its answer is a typed value (actors/messages.py), or, for a refusal, the error itself:
one typed error value (a `NextbestError`, or `Fenced`) returned, not raised, so the
request path never pays for a remote traceback on bad input. It crosses the actor
boundary as its class and attributes (decisioning/errors.py pickles it so), and
serving/errors.py maps it to HTTP; an answer is an error exactly when it is an
exception instance (`refused`). Several calls run as one batch with one WAL commit
before any answer (group commit). `ShardUnavailable` is what the ingress answers with
a 503 when a call cannot be served now.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeGuard

from actors.shard import Shard
from decisioning.errors import NextbestError
from decisioning.journal.fencing import Fenced

__all__ = [
    "REQUEST_METHODS",
    "Call",
    "Refusal",
    "ShardUnavailable",
    "error_answer",
    "refused",
    "run_calls",
]

Call = tuple[str, tuple[Any, ...]]  # (method, args)
Refusal = NextbestError | Fenced  # a call's answer when it is refused: the error itself

REQUEST_METHODS = frozenset(
    (
        "apply_events",
        "decide",
        "decide_many",
        "tick",
        "resolve",
        "link",
        "merged_into",
        "pin",
        "unpin",
        "freeze",
        "absorb",
        "drop_merged",
        "cancel_merge",
        "settle",
        "compress",
        "unfinished_merges",
        "identity_of",
        "forget_identity",
        "lease_outbound",
        "ack_outbound",
        "release_outbound",
        "outbound_status",
        "check_outcomes",
        "record_outcomes",
        "get_profile",
        "erase_profile",
        "stage_model",
        "stage_catalog",
        "stage_context",
        "freeze_slots",
        "absorb_slots",
        "drop_slots",
        "unfreeze_slots",
        "set_slot_map",
    )
)


class ShardUnavailable(Exception):
    """The request cannot be served now; retry later (503 + Retry-After). `code` says why:

    - `shard_unavailable`: the customer's shard is restarting (loading its snapshot and
      log) or gone;
    - `shard_timeout`: it did not answer within `request_timeout_s`;
    - `overloaded`: this ingress replica already waits on `max_ongoing_requests`;
    - `supervisor_unavailable`: status, models and deploys wait for a restarting supervisor;
    - `merge_in_progress`: merges are moving the customer right now.
    """

    def __init__(self, message: str, code: str = "shard_unavailable") -> None:
        super().__init__(message)
        self.code = code


def error_answer(e: NextbestError) -> NextbestError:
    """A core error as the answer of a call: the error itself, without the traceback
    (it would keep the frames alive, and it never crosses: the error pickles as its
    class and attributes). The ingress maps it to HTTP (serving/errors.py)."""
    return e.with_traceback(None)


def refused(answer: Any) -> TypeGuard[Refusal]:
    """Whether a call's answer is a refusal: an error value, not a result."""
    return isinstance(answer, NextbestError | Fenced)


def _run(shard: Shard, method: str, args: tuple[Any, ...]) -> Any:
    if method not in REQUEST_METHODS:
        raise ValueError(f"not a request method: {method}")
    try:
        if args:  # a slot this shard does not serve: SlotMoved or SlotFrozen, nothing applied
            shard.ownership.check(method, args[0])
        return getattr(shard, method)(*args)
    except NextbestError as e:
        return error_answer(e)


def run_calls(shard: Shard, calls: Sequence[Call]) -> list[Any]:
    """Run request-path calls on `shard` in order, then commit the WAL once for all of
    them before any answer goes out. A shard fenced out by a newer instance of itself
    answers nothing (each call gets a `Fenced` error, a 503 at the ingress). A failed
    log write raises `StorageFailed`: the caller must answer nothing (see ShardActor)."""
    try:
        if shard.owner is not None:
            shard.owner.check()
        results = [_run(shard, method, args) for method, args in calls]
        shard.flush()
    except Fenced as e:
        return [e.with_traceback(None)] * len(calls)
    return results
