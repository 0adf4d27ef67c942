"""The channels' API (events, decide, outcomes, outbound, context, profiles, identity,
health): defined once, served by every app that reaches the shards.

(No `from __future__ import annotations`: FastAPI resolves the routes' annotations.)

`Api` holds what the routes need (the router to the shards, the identities over it, the
configured limits, the API keys); `api_router` holds the routes, for an app whose
dependency gives its `Api`. The Serve ingress (serving/app.py) mounts them over Ray
handles to every shard; a shard's own port (serving/owner.py) mounts them over a router
whose link to that shard is a plain call in its process, so a request that reaches its
customer's owner crosses no process boundary.
"""

import os
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from actors.messages import Decide, Decided, EraseProfile, GetProfile, Outcome
from actors.router import Router
from decisioning.config import OUTBOUND, Config, Secrets
from decisioning.delivery.links import LinkError, open_link
from decisioning.profile import ProfileSchema
from serving import outbound as queue
from serving.auth import KeyRing
from serving.bodies import decision_body, erased_body, opened_body, profile_body
from serving.context import check_length, table_of
from serving.decide import (
    batch_of,
    calls_of,
    check_channel,
    checked_requests,
    decide_all,
    decide_message,
    no_idempotency_key,
)
from serving.errors import RETRY_AFTER, http_error, ok
from serving.events import checked_events, ingest, record_outcomes
from serving.identity import Identities
from serving.responses import reply
from serving.wire import Limits, WireError, WireModels, decode_body, validate

__all__ = ["Api", "api_bodies", "api_router", "one_or_many"]


def one_or_many(data: Any, model: type, max_batch: int) -> list[Any]:
    """One item or a batch of at most `max_batch`, each validated (422 names its place)."""
    items = data if isinstance(data, list) else [data]
    if not items:
        raise WireError(422, "empty_batch", "the batch is empty")
    if len(items) > max_batch:
        raise WireError(413, "batch_too_large", f"a batch holds at most {max_batch} items")
    prefix = isinstance(data, list)
    return [validate(model, item, f"[{i}]." if prefix else "") for i, item in enumerate(items)]


def api_bodies(wire: WireModels) -> dict[str, tuple[type, bool]]:
    """The request body of each route that takes one (and whether it may be a batch)."""
    return {
        "/v1/events": (wire.EventIn, True),
        "/v1/decide": (wire.DecideIn, False),
        "/v1/decide/batch": (wire.DecideBatchIn, False),
        "/v1/outcomes": (wire.OutcomeIn, True),
        "/v1/outbound/ack": (wire.OutboundAckIn, False),
        "/v1/identities/merge": (wire.MergeIn, False),
    }


class Api:
    """What the channels' routes use: the router, the identities over it, the limits and
    the keys of one app (an ingress replica, or a shard's own port)."""

    def __init__(self, config: Config, router: Router) -> None:
        self.config = config
        self.schema = ProfileSchema(config)
        self.channels = frozenset(config.channels)
        self.sinks = frozenset(config.delivery.sinks)  # channels the shards deliver
        s = config.server
        self.max_body = s.max_body_bytes
        self.max_batch = s.max_batch
        self.max_depth = s.max_depth
        self.wire = WireModels(
            Limits(s.max_id_length, s.max_string_length, s.max_properties, s.max_abs_number),
            (*config.channels, OUTBOUND),
        )
        self.router = router
        self.ident = Identities(config, router)
        self.fanout = self.ident.fanout
        self.link_key = Secrets.resolve(config, os.environ).link_key  # open links, if any
        self.keys = KeyRing(config.auth)

    def misdirected(self, request: Request, customer_ids: Sequence[str]) -> None:
        """Refuse a request sent to the wrong place before anything is applied (a
        shard's own port, serving/owner.py; the ingress routes every request)."""

    def _path_id(self, customer_id: str) -> str:
        """A customer id from the path, checked and normalised as in a body."""
        return str(
            validate(self.wire.DecideIn, {"customer_id": customer_id, "channel": "-"}).customer_id
        )

    def _allow(self, request: Request, scope: str | None) -> None:
        """401/403 unless the request's API key has `scope` (None: any scope)."""
        self.keys.check(request.headers, scope)

    async def _body(self, request: Request) -> Any:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            raise WireError(413, "body_too_large", f"body is larger than {self.max_body} bytes")
        return decode_body(
            await request.body(), request.headers.get("content-type"), self.max_body, self.max_depth
        )

    async def _decide(self, request: Decide) -> Decided:
        """The decision for the request's customer, followed to where it lives now."""
        result, _ = await self.ident.call(request.customer_id, "decide", request.for_customer)
        return ok(result)


def api_router(get: Callable[[], Api | Awaitable[Api]]) -> APIRouter:
    """The channels' routes, for an app whose `get` dependency gives its Api."""
    router = APIRouter()
    Api_ = Annotated[Api, Depends(get)]  # noqa: N806 - a type

    @router.post("/v1/events", tags=["events"], summary="Send one event or a batch")
    async def events(request: Request, api: Api_) -> Response:
        api._allow(request, "events:write")
        api.router.admit()  # overloaded: shed before the body is read
        data = await api._body(request)
        items = one_or_many(data, api.wire.EventIn, api.max_batch)
        events = checked_events(api.schema, items, isinstance(data, list), time.time())
        api.misdirected(request, [e.customer_id for e in events])
        return reply(request, await ingest(api.ident, events))

    @router.post("/v1/decide", tags=["decisions"], summary="Decide the next best actions")
    async def decide(request: Request, api: Api_) -> Response:
        api._allow(request, "decide")
        api.router.admit()  # overloaded: shed before the body is read
        req = validate(api.wire.DecideIn, await api._body(request))
        rid = api.wire.request_id(req.request_id, request.headers)  # body or header
        api.misdirected(request, (req.customer_id,))
        check_channel(req.channel, api.channels)
        customer = await api.ident.canonical(req.customer_id)
        decide = decide_message(req, customer, time.time(), rid)
        return reply(request, decision_body(await api._decide(decide)))

    @router.post(
        "/v1/decide/batch", tags=["decisions"], summary="Decide for several requests at once"
    )
    async def decide_batch(request: Request, api: Api_) -> Response:
        """`{"requests": [...]}`, each a POST /v1/decide body (at most `server.max_batch`),
        decided on its own, with one call per shard: `{"results": [...]}` in the same
        order, each the decision /v1/decide answers or `{"error": {...}, "status": n}`
        with the status /v1/decide would have answered. One refused never fails the rest."""
        api._allow(request, "decide")
        api.router.admit()  # overloaded: shed before the body is read
        no_idempotency_key(request.headers)  # (each request has its own request_id)
        requests = batch_of(await api._body(request), api.max_batch)
        checked = checked_requests(
            api.wire.DecideIn,
            api.channels,
            requests,
            time.time(),
            lambda customer: api.misdirected(request, (customer,)),  # (a shard's port)
        )
        api.router.admit(calls_of(checked, api.router.shard_of))  # whole, before any call
        return reply(request, {"results": await decide_all(api.ident, checked)})

    @router.post("/v1/outcomes", tags=["decisions"], summary="Report outcomes of decisions")
    async def outcomes(request: Request, api: Api_) -> Response:
        api._allow(request, "events:write")
        api.router.admit()  # overloaded: shed before the body is read
        data = await api._body(request)
        items = [
            Outcome(o.decision_id, o.action_id, o.outcome, o.ts)
            for o in one_or_many(data, api.wire.OutcomeIn, api.max_batch)
        ]
        shard_of = api.router.shard_of_decision
        accepted = await record_outcomes(api.ident, items, shard_of, isinstance(data, list))
        return reply(request, {"accepted": accepted})

    @router.get(
        "/v1/outbound",
        tags=["outbound"],
        summary="Take queued messages of a channel (long poll)",
        openapi_extra={"parameters": queue.OUTBOUND_PARAMS},
    )
    async def outbound(request: Request, api: Api_) -> Response:
        """Messages that triggers queued for a channel without a sink, oldest first per
        shard. Each is leased for `delivery.lease_s`: ack it once delivered, or it is
        handed out again (at least once; `id` is the idempotency key)."""
        api._allow(request, "outbound")  # before the parameters: 401/403 come first
        poll = queue.poll_of(request.query_params, api.channels, api.sinks)
        taken = await queue.take(api.fanout, api.router.shard_of_decision, poll)
        return reply(request, {"messages": taken, "lease_s": api.config.delivery.lease_s})

    @router.post("/v1/outbound/ack", tags=["outbound"], summary="Ack delivered messages")
    async def outbound_ack(request: Request, api: Api_) -> Response:
        api._allow(request, "outbound")
        req = validate(api.wire.OutboundAckIn, await api._body(request))
        acked = await queue.ack(api.fanout, api.router.shard_of_decision, req.ids)
        return reply(request, {"acked": acked})

    @router.get(
        "/v1/open/{token}",
        tags=["outbound"],
        summary="Decide a message's content as it is opened (no API key: the token is one)",
    )
    async def open_message(token: str, request: Request, api: Api_) -> Response:
        """Send-time recomputation: the `open_token` of an outbound message decides, for
        its customer and channel, when the message is opened, so the content reflects
        what happened since it was sent. The token allows nothing else and expires after
        `delivery.link_ttl`."""
        if api.link_key is None:
            raise WireError(404, "not_found", "open links are off (delivery.link_key_env)")
        try:
            link = open_link(api.link_key, token, time.time())
        except LinkError as e:
            e.field = "token"  # (the path's token: 404 not ours, 410 expired)
            raise http_error(e) from None
        decide = Decide(link.customer_id, link.channel, link.placement, {"opened": link.message_id})
        result = await api._decide(decide)  # (merged since: its survivor's)
        return reply(request, opened_body(result, link.message_id))

    @router.put(
        "/v1/context/{table}",
        tags=["context"],
        summary="Push a new version of a context table (JSON/msgpack rows or Parquet)",
    )
    async def put_context(table: str, request: Request, api: Api_) -> Response:
        """`{"rows": [{...}, ...]}` as JSON or msgpack, or a Parquet file with
        `Content-Type: application/vnd.apache.parquet`; at most
        `server.max_context_bytes`. Checked against `context_tables.<table>`, stored,
        broadcast through the object store and swapped on every shard at once."""
        api._allow(request, "context:write")
        if table not in api.config.context_tables:
            known = ", ".join(sorted(api.config.context_tables)) or "none configured"
            raise WireError(
                404, "unknown_table", f"unknown context table {table!r} (known: {known})"
            )
        limit = api.config.server.max_context_bytes
        check_length(request.headers, limit)
        raw = await request.body()
        data = table_of(raw, request.headers.get("content-type"), limit, api.max_depth)
        result = await api.router.supervisor_call("put_context", table, data)
        return reply(request, ok(result))

    @router.get("/v1/context", tags=["context"], summary="Context tables and versions")
    async def context_tables(request: Request, api: Api_) -> Response:
        api._allow(request, "context:write")
        return reply(request, await api.router.supervisor_call("context_tables"))

    @router.get("/v1/profiles/{customer_id}", tags=["profiles"], summary="A live profile")
    async def profile(customer_id: str, request: Request, api: Api_) -> Response:
        api._allow(request, "profiles:read")
        customer_id = api._path_id(customer_id)
        api.misdirected(request, (customer_id,))
        customer_id = await api.ident.canonical(customer_id)
        result, _ = await api.ident.call(customer_id, "get_profile", GetProfile)
        return reply(request, profile_body(ok(result)))

    @router.delete("/v1/profiles/{customer_id}", tags=["profiles"], summary="Erase a customer")
    async def erase(customer_id: str, request: Request, api: Api_) -> Response:
        """Forget the customer: profile and decisions at once; the WAL segments and
        snapshots that held them are deleted by a snapshot that starts now."""
        api._allow(request, "profiles:erase")
        asked = api._path_id(customer_id)
        customer_id = await api.ident.canonical(asked)
        result, customer_id = await api.ident.call(customer_id, "erase_profile", EraseProfile)
        ok(result)
        await api.ident.forget(asked, customer_id)  # its links and merges, everywhere
        return reply(request, erased_body(result))

    @router.post(
        "/v1/identities/merge", tags=["identity"], summary="Merge two profiles of one person"
    )
    async def merge(request: Request, api: Api_) -> Response:
        """Fold `merged` into `survivor`: aggregates combined per kind, contact history
        joined, the stricter consent kept; `merged` forwards to `survivor` from then on,
        and the merge is written to the identity audit log."""
        api._allow(request, "identities:write")
        req = validate(api.wire.MergeIn, await api._body(request))
        return reply(request, ok(await api.ident.merge(req.survivor, req.merged)))

    @router.get("/v1/identities/{key}", tags=["identity"], summary="Who an id or identifier is")
    async def identity(key: str, request: Request, api: Api_) -> Response:
        api._allow(request, "profiles:read")
        key = api._path_id(key)
        info = await api.ident.describe(key)
        info["merges"] = await api.router.supervisor_call("identity_audit", info["customer_id"])
        return reply(request, info)

    @router.get(
        "/v1/cluster/slots", tags=["cluster"], summary="Who owns each slot, and where it listens"
    )
    async def cluster_slots(request: Request, api: Api_) -> Response:
        """Like Redis's CLUSTER SLOTS: each slot range with its shard, each shard's own
        endpoint, the map's epoch. A client that routes by slot sends a customer's
        requests to its shard's endpoint and fetches this again on 421 `slot_moved` or
        when an endpoint does not answer. A key with any scope may read it."""
        api._allow(request, None)
        return reply(request, await api.router.supervisor_call("cluster_slots"))

    @router.get("/healthz", tags=["ops"], summary="Liveness")
    async def healthz(request: Request, api: Api_) -> Response:
        return reply(request, {"status": "ok"})

    @router.get("/readyz", tags=["ops"], summary="Readiness: every shard answers")
    async def readyz(request: Request, api: Api_) -> Response:
        status = await api.router.supervisor_call("status")
        ready = all(s.get("ready", True) for s in status)
        retry = None if ready else {"Retry-After": RETRY_AFTER}  # like every 503: temporary
        return reply(request, {"ready": ready, "shards": len(status)}, 200 if ready else 503, retry)

    return router
