"""The Ray Serve application: a FastAPI ingress that validates, routes and encodes.

(No `from __future__ import annotations` here: FastAPI must resolve `Request` in the
route signatures at import time.)

`build_app(config)` is the single entry used by `nextbest serve`, the tests and
`serve build`/`serve deploy` (through `app_builder`). Each route is thin: decode,
validate, route to the customer's shard, encode.
"""

import asyncio
import contextlib
import logging
import os
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from ray import serve

from actors.messages import Decide, Decided, EraseProfile, GetProfile, Outcome
from actors.remote import ShardRouter
from decisioning.config import OUTBOUND, Config, Secrets
from decisioning.config.loader import load_config
from decisioning.delivery.links import LinkError, open_link
from decisioning.profile import Event, ProfileSchema
from serving import outbound
from serving.admin import ADMIN_BODIES, ADMIN_PATHS, AdminAccess, admin_router, on_channel_port
from serving.auth import KeyRing
from serving.bodies import decision_body, erased_body, opened_body, profile_body
from serving.context import check_length, table_of
from serving.errors import RETRY_AFTER, http_error, ok
from serving.events import checked_events, ingest, record_outcomes
from serving.identity import Identities
from serving.openapi import install_openapi
from serving.responses import install_error_handlers, reply
from serving.serve_ports import reuse_ports
from serving.wire import DEFAULT, Limits, WireError, WireModels, decode_body, validate

__all__ = ["Ingress", "app_builder", "build_app", "fastapi_app", "serve_limits"]

log = logging.getLogger("nextbest.serving")
reuse_ports()  # a replica that replaces a killed one binds its port at once

fastapi_app = FastAPI(
    title="nextbest",
    version="1",
    description="Real-time next-best-action decisions from live profiles and LightGBM models.",
)
install_error_handlers(fastapi_app)


def _one_or_many(data: Any, model: type, max_batch: int) -> list[Any]:
    items = data if isinstance(data, list) else [data]
    if not items:
        raise WireError(422, "empty_batch", "the batch is empty")
    if len(items) > max_batch:
        raise WireError(413, "batch_too_large", f"a batch holds at most {max_batch} items")
    prefix = isinstance(data, list)
    return [validate(model, item, f"[{i}]." if prefix else "") for i, item in enumerate(items)]


def _bodies(wire: WireModels) -> dict[str, tuple[type, bool]]:
    return {
        "/v1/events": (wire.EventIn, True),
        "/v1/decide": (wire.DecideIn, False),
        "/v1/outcomes": (wire.OutcomeIn, True),
        "/v1/outbound/ack": (wire.OutboundAckIn, False),
        "/v1/identities/merge": (wire.MergeIn, False),
        **ADMIN_BODIES,
    }


async def _replica_admin() -> AdminAccess:
    """The admin routes' access on this ingress replica (its Ingress instance's)."""
    ingress: Any = serve.get_replica_context().servable_object  # (this replica's Ingress)
    return ingress.admin  # type: ignore[no-any-return]


_BODIES: dict[str, tuple[type, bool]] = _bodies(DEFAULT)  # a replica puts its limits in
_HIDDEN: set[str] = set()  # the admin paths, when they are not served on this port
# before @serve.ingress, which freezes (pickles) the app as it is at that moment
fastapi_app.include_router(admin_router(_replica_admin))
install_openapi(fastapi_app, lambda: _BODIES, lambda: _HIDDEN)


@serve.deployment(
    name="nextbest",
    logging_config={"enable_access_log": False},
    health_check_period_s=10,
)
@serve.ingress(fastapi_app)
class Ingress:
    """Stateless ingress replica: validates requests and routes them to shard actors."""

    def __init__(self, config: Config) -> None:
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
        _BODIES.update(_bodies(self.wire))  # /openapi.json shows the configured limits
        self.router = ShardRouter(config)
        self.ident = Identities(config, self.router)
        self.fanout = self.ident.fanout
        self._sweeper: asyncio.Task[None] | None = None  # finishes merges left unfinished
        with contextlib.suppress(RuntimeError):  # (no loop running: the health check starts it)
            self._start_sweep()
        self.link_key = Secrets.resolve(config, os.environ).link_key  # open links, if any
        self.keys = KeyRing(config.auth)
        served = on_channel_port(config)
        self.admin = AdminAccess(config, self.router.supervisor, served)  # (admin_router's)
        if not served:
            _HIDDEN.update(ADMIN_PATHS)
        if config.auth.enabled and not config.auth.keys:
            log.error("auth is on and no API keys are configured: every API call gets 401")
        if not config.auth.enabled:
            log.warning(
                "AUTHENTICATION IS OFF (auth.enabled: false): anyone who reaches port %d can "
                "read and change every profile",
                config.server.port,
            )

    def _start_sweep(self) -> None:
        """Run the identity sweep in this replica's event loop (again, if it stopped)."""
        if self.ident.sweep_s > 0 and (self._sweeper is None or self._sweeper.done()):
            self._sweeper = asyncio.get_running_loop().create_task(self.ident.sweep_forever())

    async def check_health(self) -> None:
        """Serve's periodic health check; it also keeps the identity sweep running."""
        self._start_sweep()

    def _path_id(self, customer_id: str) -> str:
        """A customer id from the path, checked and normalised as in a body."""
        return str(
            validate(self.wire.DecideIn, {"customer_id": customer_id, "channel": "-"}).customer_id
        )

    def _allow(self, request: Request, scope: str) -> None:
        """401/403 unless the request's API key has `scope`."""
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

    @fastapi_app.post("/v1/events", tags=["events"], summary="Send one event or a batch")
    async def events(self, request: Request) -> Response:
        self._allow(request, "events:write")
        self.router.admit()  # overloaded: shed before the body is read
        data = await self._body(request)
        items = _one_or_many(data, self.wire.EventIn, self.max_batch)
        events = checked_events(self.schema, items, isinstance(data, list), time.time())
        return reply(request, await ingest(self.ident, events))

    @fastapi_app.post("/v1/decide", tags=["decisions"], summary="Decide the next best actions")
    async def decide(self, request: Request) -> Response:
        self._allow(request, "decide")
        self.router.admit()  # overloaded: shed before the body is read
        req = validate(self.wire.DecideIn, await self._body(request))
        rid = self.wire.request_id(req.request_id, request.headers)  # body or header
        if req.channel not in self.channels and req.channel != OUTBOUND:
            raise WireError(
                422,
                "unknown_channel",
                f"unknown channel {req.channel!r} (known: {', '.join(sorted(self.channels))})",
                "channel",
            )
        customer = await self.ident.canonical(req.customer_id)
        ev, event = req.event, None
        if ev is not None:
            ts = time.time() if ev.ts is None else ev.ts
            event = Event(customer, ev.type, ts, ev.properties, ev.event_id)
        decide = Decide(
            customer, req.channel, req.placement, req.context, req.limit, req.explain,
            req.dry_run, event, rid,
        )  # fmt: skip
        return reply(request, decision_body(await self._decide(decide)))

    @fastapi_app.post("/v1/outcomes", tags=["decisions"], summary="Report outcomes of decisions")
    async def outcomes(self, request: Request) -> Response:
        self._allow(request, "events:write")
        self.router.admit()  # overloaded: shed before the body is read
        data = await self._body(request)
        items = [
            Outcome(o.decision_id, o.action_id, o.outcome, o.ts)
            for o in _one_or_many(data, self.wire.OutcomeIn, self.max_batch)
        ]
        shard_of = self.router.shard_of_decision
        accepted = await record_outcomes(self.ident, items, shard_of, isinstance(data, list))
        return reply(request, {"accepted": accepted})

    @fastapi_app.get(
        "/v1/outbound",
        tags=["outbound"],
        summary="Take queued messages of a channel (long poll)",
        openapi_extra={"parameters": outbound.OUTBOUND_PARAMS},
    )
    async def outbound(self, request: Request) -> Response:
        """Messages that triggers queued for a channel without a sink, oldest first per
        shard. Each is leased for `delivery.lease_s`: ack it once delivered, or it is
        handed out again (at least once; `id` is the idempotency key)."""
        self._allow(request, "outbound")  # before the parameters: 401/403 come first
        poll = outbound.poll_of(request.query_params, self.channels, self.sinks)
        taken = await outbound.take(self.fanout, self.router.shard_of_decision, poll)
        return reply(request, {"messages": taken, "lease_s": self.config.delivery.lease_s})

    @fastapi_app.post("/v1/outbound/ack", tags=["outbound"], summary="Ack delivered messages")
    async def outbound_ack(self, request: Request) -> Response:
        self._allow(request, "outbound")
        req = validate(self.wire.OutboundAckIn, await self._body(request))
        acked = await outbound.ack(self.fanout, self.router.shard_of_decision, req.ids)
        return reply(request, {"acked": acked})

    @fastapi_app.get(
        "/v1/open/{token}",
        tags=["outbound"],
        summary="Decide a message's content as it is opened (no API key: the token is one)",
    )
    async def open_message(self, token: str, request: Request) -> Response:
        """Send-time recomputation: the `open_token` of an outbound message decides, for
        its customer and channel, when the message is opened, so the content reflects
        what happened since it was sent. The token allows nothing else and expires after
        `delivery.link_ttl`."""
        if self.link_key is None:
            raise WireError(404, "not_found", "open links are off (delivery.link_key_env)")
        try:
            link = open_link(self.link_key, token, time.time())
        except LinkError as e:
            e.field = "token"  # (the path's token: 404 not ours, 410 expired)
            raise http_error(e) from None
        decide = Decide(link.customer_id, link.channel, link.placement, {"opened": link.message_id})
        result = await self._decide(decide)  # (merged since: its survivor's)
        return reply(request, opened_body(result, link.message_id))

    @fastapi_app.put(
        "/v1/context/{table}",
        tags=["context"],
        summary="Push a new version of a context table (JSON/msgpack rows or Parquet)",
    )
    async def put_context(self, table: str, request: Request) -> Response:
        """`{"rows": [{...}, ...]}` as JSON or msgpack, or a Parquet file with
        `Content-Type: application/vnd.apache.parquet`; at most
        `server.max_context_bytes`. Checked against `context_tables.<table>`, stored,
        broadcast through the object store and swapped on every shard at once."""
        self._allow(request, "context:write")
        if table not in self.config.context_tables:
            known = ", ".join(sorted(self.config.context_tables)) or "none configured"
            raise WireError(
                404, "unknown_table", f"unknown context table {table!r} (known: {known})"
            )
        limit = self.config.server.max_context_bytes
        check_length(request.headers, limit)
        raw = await request.body()
        data = table_of(raw, request.headers.get("content-type"), limit, self.max_depth)
        result = await self.router.supervisor_call("put_context", table, data)
        return reply(request, ok(result))

    @fastapi_app.get("/v1/context", tags=["context"], summary="Context tables and versions")
    async def context_tables(self, request: Request) -> Response:
        self._allow(request, "context:write")
        return reply(request, await self.router.supervisor_call("context_tables"))

    @fastapi_app.get("/v1/profiles/{customer_id}", tags=["profiles"], summary="A live profile")
    async def profile(self, customer_id: str, request: Request) -> Response:
        self._allow(request, "profiles:read")
        customer_id = await self.ident.canonical(self._path_id(customer_id))
        result, _ = await self.ident.call(customer_id, "get_profile", GetProfile)
        return reply(request, profile_body(ok(result)))

    @fastapi_app.delete("/v1/profiles/{customer_id}", tags=["profiles"], summary="Erase a customer")
    async def erase(self, customer_id: str, request: Request) -> Response:
        """Forget the customer: profile and decisions at once; the WAL segments and
        snapshots that held them are deleted by a snapshot that starts now."""
        self._allow(request, "profiles:erase")
        asked = self._path_id(customer_id)
        customer_id = await self.ident.canonical(asked)
        result, customer_id = await self.ident.call(customer_id, "erase_profile", EraseProfile)
        ok(result)
        await self.ident.forget(asked, customer_id)  # its links and merges, everywhere
        return reply(request, erased_body(result))

    @fastapi_app.post(
        "/v1/identities/merge", tags=["identity"], summary="Merge two profiles of one person"
    )
    async def merge(self, request: Request) -> Response:
        """Fold `merged` into `survivor`: aggregates combined per kind, contact history
        joined, the stricter consent kept; `merged` forwards to `survivor` from then on,
        and the merge is written to the identity audit log."""
        self._allow(request, "identities:write")
        req = validate(self.wire.MergeIn, await self._body(request))
        return reply(request, ok(await self.ident.merge(req.survivor, req.merged)))

    @fastapi_app.get(
        "/v1/identities/{key}", tags=["identity"], summary="Who an id or identifier is"
    )
    async def identity(self, key: str, request: Request) -> Response:
        self._allow(request, "profiles:read")
        key = self._path_id(key)
        info = await self.ident.describe(key)
        info["merges"] = await self.router.supervisor_call("identity_audit", info["customer_id"])
        return reply(request, info)

    @fastapi_app.get("/healthz", tags=["ops"], summary="Liveness")
    async def healthz(self, request: Request) -> Response:
        return reply(request, {"status": "ok"})

    @fastapi_app.get("/readyz", tags=["ops"], summary="Readiness: every shard answers")
    async def readyz(self, request: Request) -> Response:
        status = await self.router.supervisor_call("status")
        ready = all(s.get("ready", True) for s in status)
        retry = None if ready else {"Retry-After": RETRY_AFTER}  # like every 503: temporary
        return reply(request, {"ready": ready, "shards": len(status)}, 200 if ready else 503, retry)


def serve_limits(config: Config) -> dict[str, Any]:
    """Serve's own admission limits for the ingress (and the bench's floor deployment).

    The ingress sheds with its own JSON 503 (`overloaded`) at `max_ongoing_requests`
    requests waiting on shards; Serve lets a few more in (health checks, status, shed
    answers) and queues at most `max_queued_requests` behind them.
    """
    s = config.server
    return {
        "max_ongoing_requests": s.max_ongoing_requests + 64,
        "max_queued_requests": s.max_queued_requests,
        "backpressure_config": {"status_code": 503, "retry_after_s": int(RETRY_AFTER)},
    }


def build_app(config: Config) -> Any:
    """The nextbest Serve application for `config` (used by the CLI, tests, serve build)."""
    deployment: Any = Ingress  # (a Serve deployment: serve.deployment typed it away)
    return deployment.options(
        num_replicas=config.server.ingress_replicas, **serve_limits(config)
    ).bind(config)


def app_builder(args: dict[str, str]) -> Any:
    """Entry for `serve build` / `serve deploy`: args {"config": "path/to/nextbest.yaml"}."""
    return build_app(load_config(args.get("config", "examples/nextbest.yaml"), os.environ))
