"""Decisions at the ingress: a /v1/decide body as the message its customer's shard gets
(one function, for POST /v1/decide and for each request of POST /v1/decide/batch), and
the batch.

A batch (`{"requests": [<decide body>, ...]}`) is answered request by request: each is
validated on its own (a 422 names its place, `requests[2].limit`), identifiers are
resolved (`Identities.canonical`), and the valid requests go to their shards, one
`decide_many` call per shard carrying all of that shard's requests (`Fanout.follow_each`:
a part whose slots moved is regrouped by the new map and sent to the owners, nothing of
it applied by the shard that refused it; a merged customer's request goes again for its
survivor). The answer is one result per request, in the request's order: the decision
body POST /v1/decide would have answered, or that route's error with the status it would
have had (`{"error": {...}, "status": 503}`). One bad request, or one shard that cannot
be reached, never fails the others; only a bad envelope (or the key, or an overloaded
replica) fails the whole batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict

from actors.messages import Decide, DecideMany
from actors.remote import ShardUnavailable
from decisioning.config import OUTBOUND
from decisioning.errors import NextbestError
from decisioning.profile import Event
from serving.bodies import decision_body
from serving.errors import error_of, http_error
from serving.identity import Identities
from serving.wire import IDEMPOTENCY_KEY, WireError, error_body, validate

__all__ = [
    "batch_of",
    "calls_of",
    "check_channel",
    "checked_requests",
    "decide_all",
    "decide_message",
    "no_idempotency_key",
]

Checked = Decide | WireError  # a batch's request as its message, or why it is refused


class _Envelope(BaseModel):
    """POST /v1/decide/batch's body before its requests are validated, each on its own
    (the OpenAPI document shows `DecideBatchIn`, with each request's schema)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    requests: list[Any]


def check_channel(channel: str, channels: frozenset[str], prefix: str = "") -> None:
    """422 `unknown_channel` unless the channel is configured (or "outbound")."""
    if channel not in channels and channel != OUTBOUND:
        raise WireError(
            422,
            "unknown_channel",
            f"unknown channel {channel!r} (known: {', '.join(sorted(channels))})",
            f"{prefix}channel",
        )


def decide_message(req: Any, customer: str, now: float, request_id: str | None) -> Decide:
    """A validated /v1/decide body (`DecideIn`) as the `Decide` for `customer` (its
    identifier resolved) under `request_id`; a triggering event is that customer's (no
    `ts`: now)."""
    ev, event = req.event, None
    if ev is not None:
        ts = now if ev.ts is None else ev.ts
        event = Event(customer, ev.type, ts, ev.properties, ev.event_id)
    return Decide(
        customer, req.channel, req.placement, req.context, req.limit, req.explain,
        req.dry_run, event, request_id,
    )  # fmt: skip


def no_idempotency_key(headers: Mapping[str, str]) -> None:
    """422 for a batch sent with an Idempotency-Key header: one id cannot name several
    requests (each request of a batch carries its own `request_id`)."""
    if IDEMPOTENCY_KEY.lower() in headers:
        raise WireError(
            422,
            "invalid_field",
            f"{IDEMPOTENCY_KEY}: a batch takes no {IDEMPOTENCY_KEY} header; give each "
            "request its own request_id",
            IDEMPOTENCY_KEY,
        )


def batch_of(data: Any, max_batch: int) -> list[Any]:
    """The requests of a batch's body, not validated yet: 422 for a body that is not
    `{"requests": [...]}` or holds none (`empty_batch`), 413 over `max_batch`."""
    requests: list[Any] = validate(_Envelope, data).requests
    if not requests:
        raise WireError(422, "empty_batch", "the batch is empty", "requests")
    if len(requests) > max_batch:
        raise WireError(413, "batch_too_large", f"a batch holds at most {max_batch} requests")
    return requests


def checked_requests(
    model: type[BaseModel],
    channels: frozenset[str],
    requests: list[Any],
    now: float,
    misdirected: Callable[[str], None],
) -> list[Checked]:
    """Each request checked on its own as /v1/decide checks its body: validated against
    `model` (DecideIn), `misdirected(customer_id)` (a shard's own port refuses another
    shard's customer when asked to), its channel; its `Decide` (for the customer id as
    given, under its own `request_id`), or the error, at its place."""
    out: list[Checked] = []
    for i, data in enumerate(requests):
        prefix = f"requests[{i}]."
        try:
            req = validate(model, data, prefix)
            misdirected(req.customer_id)
            check_channel(req.channel, channels, prefix)
        except WireError as e:
            out.append(e)
            continue
        out.append(decide_message(req, req.customer_id, now, req.request_id))
    return out


def calls_of(checked: list[Checked], shard_of: Callable[[str], int]) -> int:
    """How many shard calls the batch makes (one per shard its valid requests name): what
    the replica admits, or sheds whole, before any is sent."""
    return len({shard_of(d.customer_id) for d in checked if isinstance(d, Decide)})


async def decide_all(ident: Identities, checked: list[Checked]) -> list[dict[str, Any]]:
    """The results of a checked batch, in its order (see the module docstring)."""
    answers: list[Any] = list(checked)  # the refused stay as they are
    valid = [(i, d) for i, d in enumerate(checked) if isinstance(d, Decide)]
    named = list(dict.fromkeys(d.customer_id for _, d in valid))
    customers = await asyncio.gather(*(_settled(ident.canonical(c)) for c in named))
    resolved = dict(zip(named, customers, strict=True))
    placed: list[tuple[int, Decide]] = []
    for i, d in valid:
        customer = resolved[d.customer_id]
        if isinstance(customer, BaseException):  # its identifier could not be resolved
            answers[i] = customer
        else:
            placed.append((i, d if customer == d.customer_id else d.for_customer(customer)))
    decided = await ident.fanout.follow_each(
        "decide_many", [d for _, d in placed], _customer, _rehome, _many
    )
    for (i, _), answer in zip(placed, decided, strict=True):
        answers[i] = answer
    return [_result(i, answer) for i, answer in enumerate(answers)]


async def _settled(aw: Awaitable[str]) -> str | BaseException:
    """What `aw` gives, or the error that refuses it (the item's answer)."""
    try:
        return await aw
    except (ShardUnavailable, WireError, NextbestError) as e:
        return e


def _customer(d: Decide) -> str:
    return d.customer_id


def _rehome(d: Decide, customer: str) -> Decide:
    return d.for_customer(customer)


def _many(part: list[Decide]) -> DecideMany:
    return DecideMany(tuple(part))


def _result(i: int, answer: Any) -> dict[str, Any]:
    """One request's result: its decision body, or its error with its HTTP status."""
    err = error_of(answer)
    if err is None:
        return decision_body(answer)
    wire = http_error(err, prefix=f"requests[{i}].")
    return {**error_body(wire.code, wire.message, wire.field), "status": wire.status}
