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

import pyarrow as pa
import pyarrow.parquet as pq
from fastapi import FastAPI, Request
from fastapi.responses import Response
from ray import serve

from actors.remote import ShardRouter
from decisioning.config import OUTBOUND, Config, Secrets
from decisioning.config.loader import load_config
from decisioning.delivery.links import LinkError, open_link
from decisioning.errors import NextbestError
from decisioning.profile import ProfileSchema, event_from_wire
from serving.admin import ADMIN_BODIES, ADMIN_PATHS, AdminRoutes, on_channel_port
from serving.auth import KeyRing
from serving.events import apply_events, ingest
from serving.identity import Identities
from serving.openapi import install_openapi
from serving.responses import RETRY_AFTER, core_error, fail, install_error_handlers, reply
from serving.serve_ports import reuse_ports
from serving.wire import (
    DEFAULT,
    Limits,
    WireError,
    WireModels,
    decode_body,
    status_of,
    validate,
)

__all__ = ["Ingress", "app_builder", "build_app", "fastapi_app", "serve_limits"]

log = logging.getLogger("nextbest.serving")
reuse_ports()  # a replica that replaces a killed one binds its port at once
PARQUET_TYPES = frozenset(("application/vnd.apache.parquet", "application/x-parquet"))

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


_BODIES: dict[str, tuple[type, bool]] = {}


def _bodies(wire: WireModels) -> dict[str, tuple[type, bool]]:
    return {
        "/v1/events": (wire.EventIn, True),
        "/v1/decide": (wire.DecideIn, False),
        "/v1/outcomes": (wire.OutcomeIn, True),
        "/v1/outbound/ack": (wire.OutboundAckIn, False),
        "/v1/identities/merge": (wire.MergeIn, False),
        **ADMIN_BODIES,
    }


_OUTBOUND_PARAMS = [
    {
        "name": "channel",
        "in": "query",
        "required": True,
        "description": "The channel whose messages to take (one without a sink).",
        "schema": {"type": "string", "maxLength": 64},
    },
    {
        "name": "limit",
        "in": "query",
        "description": "At most this many messages.",
        "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
    },
    {
        "name": "wait_s",
        "in": "query",
        "description": "With none queued, wait up to this long for one (long poll).",
        "schema": {"type": "number", "minimum": 0, "maximum": 30, "default": 0},
    },
]


def _number(q: Any, name: str, default: Any, low: float, high: float, kind: type) -> Any:
    raw = q.get(name)
    if raw is None:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise WireError(422, "invalid_field", f"{name} must be a number", name) from None
    if not low <= value <= high:  # (NaN fails this too)
        raise WireError(422, "invalid_field", f"{name} must be between {low:g} and {high:g}", name)
    return value


_HIDDEN: set[str] = set()  # the admin paths, when they are not served on this port
_BODIES.update(_bodies(DEFAULT))  # the replica puts its configured models in at start
# before @serve.ingress, which freezes (pickles) the app as it is at that moment
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
        self._sweeper: asyncio.Task[None] | None = None  # finishes merges left unfinished
        with contextlib.suppress(RuntimeError):  # (no loop running: the health check starts it)
            self._start_sweep()
        self.link_key = Secrets.resolve(config, os.environ).link_key  # open links, if any
        self.keys = KeyRing(config.auth)
        self.admin_here = on_channel_port(config)
        self.admin = AdminRoutes(self.router.supervisor)
        if not self.admin_here:
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
        """401/403 unless the request's API key has `scope`; admin routes 404 when they
        are off or on the admin port."""
        if scope == "admin" and not self.admin_here:
            raise WireError(404, "not_found", "Not Found")
        self.keys.check(request.headers, scope)

    async def _body(self, request: Request) -> Any:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            raise WireError(413, "body_too_large", f"body is larger than {self.max_body} bytes")
        return decode_body(
            await request.body(), request.headers.get("content-type"), self.max_body, self.max_depth
        )

    @fastapi_app.post("/v1/events", tags=["events"], summary="Send one event or a batch")
    async def events(self, request: Request) -> Response:
        self._allow(request, "events:write")
        self.router.admit()  # overloaded: shed before the body is read
        data = await self._body(request)
        items = _one_or_many(data, self.wire.EventIn, self.max_batch)
        now = time.time()
        wires: list[dict[str, Any]] = []
        for i, ev in enumerate(items):
            wire = ev.model_dump()
            if wire["ts"] is None:
                wire["ts"] = now
            try:
                self.schema.check_event(event_from_wire(wire), now)
            except NextbestError as e:
                field = getattr(e, "field", None)
                field = f"[{i}].{field}" if isinstance(data, list) and field else field
                return fail(
                    request, status_of(e), getattr(e, "code", "invalid_field"), str(e), field
                )
            wires.append(wire)
        return reply(request, await ingest(self.ident, wires))

    @fastapi_app.post("/v1/decide", tags=["decisions"], summary="Decide the next best actions")
    async def decide(self, request: Request) -> Response:
        self._allow(request, "decide")
        self.router.admit()  # overloaded: shed before the body is read
        req = validate(self.wire.DecideIn, await self._body(request))
        if req.channel not in self.channels and req.channel != OUTBOUND:
            raise WireError(
                422,
                "unknown_channel",
                f"unknown channel {req.channel!r} (known: {', '.join(sorted(self.channels))})",
                "channel",
            )
        wire = req.model_dump()
        if wire["event"] is not None and wire["event"]["ts"] is None:
            wire["event"]["ts"] = time.time()
        customer = await self.ident.canonical(req.customer_id)
        result, _ = await self.ident.call(
            customer, "decide", lambda c: ({**wire, "customer_id": c},)
        )
        return core_error(request, result) or reply(request, result)

    @fastapi_app.post("/v1/outcomes", tags=["decisions"], summary="Report outcomes of decisions")
    async def outcomes(self, request: Request) -> Response:
        self._allow(request, "events:write")
        self.router.admit()  # overloaded: shed before the body is read
        data = await self._body(request)
        items = _one_or_many(data, self.wire.OutcomeIn, self.max_batch)
        by_shard: dict[int, list[dict[str, Any]]] = {}
        for i, o in enumerate(items):
            try:
                shard = self.router.shard_of_decision(o.decision_id)
            except NextbestError as e:
                prefix = f"[{i}]." if isinstance(data, list) else ""
                return fail(request, 404, "unknown_decision", str(e), prefix + "decision_id")
            by_shard.setdefault(shard, []).append(o.model_dump())
        calls = list(by_shard.items())
        if len(calls) > 1:  # check on every shard before any applies: never half a batch
            checks = await self.router.call_all([(s, "check_outcomes", os_) for s, os_ in calls])
            for r in checks:
                if (resp := core_error(request, r)) is not None:
                    return resp
        results = await self.router.call_all([(s, "record_outcomes", os_) for s, os_ in calls])
        accepted, forward = 0, []
        for r in results:
            if (resp := core_error(request, r)) is not None:
                return resp
            if isinstance(r, dict):  # outcomes of customers merged away since
                accepted += r["accepted"]
                forward += r["forward"]
            else:
                accepted += r
        if forward:
            await apply_events(self.ident, forward)
        return reply(request, {"accepted": accepted})

    @fastapi_app.get(
        "/v1/outbound",
        tags=["outbound"],
        summary="Take queued messages of a channel (long poll)",
        openapi_extra={"parameters": _OUTBOUND_PARAMS},
    )
    async def outbound(self, request: Request) -> Response:
        """Messages that triggers queued for a channel without a sink, oldest first per
        shard. Each is leased for `delivery.lease_s`: ack it once delivered, or it is
        handed out again (at least once; `id` is the idempotency key)."""
        self._allow(request, "outbound")  # before the parameters: 401/403 come first
        q = request.query_params
        stray = sorted(set(q) - {"channel", "limit", "wait_s"})
        if stray:
            raise WireError(422, "unknown_field", f"unknown parameter {stray[0]!r}", stray[0])
        channel = q.get("channel")
        if channel is None:
            raise WireError(422, "missing_field", "channel is required", "channel")
        limit = _number(q, "limit", 100, 1, 1000, int)
        wait_s = _number(q, "wait_s", 0.0, 0.0, 30.0, float)
        if channel not in self.channels:
            raise WireError(422, "unknown_channel", f"unknown channel {channel!r}", "channel")
        if channel in self.sinks:
            raise WireError(
                409,
                "channel_has_sink",
                f"{channel} is delivered by its sink (delivery.sinks), not pulled",
                "channel",
            )
        deadline = time.monotonic() + wait_s
        shards = range(len(self.router.shards))
        while True:
            results = await asyncio.gather(
                *(self.router.call(s, "lease_outbound", channel, limit) for s in shards)
            )
            for r in results:
                if (resp := core_error(request, r)) is not None:
                    return resp
            taken = sorted((m for r in results for m in r), key=lambda m: m["queued_at"])
            left = deadline - time.monotonic()
            if taken or left <= 0:
                break
            await asyncio.sleep(min(0.1, left))
        extra = taken[limit:]  # more than asked, over every shard: back to the queue
        by_shard: dict[int, list[str]] = {}
        for m in extra:
            by_shard.setdefault(self.router.shard_of_decision(m["id"]), []).append(m["id"])
        if by_shard:
            await self.router.call_all(
                [(s, "release_outbound", ids) for s, ids in by_shard.items()]
            )
        lease = self.config.delivery.lease_s
        return reply(request, {"messages": taken[:limit], "lease_s": lease})

    @fastapi_app.post("/v1/outbound/ack", tags=["outbound"], summary="Ack delivered messages")
    async def outbound_ack(self, request: Request) -> Response:
        self._allow(request, "outbound")
        req = validate(self.wire.OutboundAckIn, await self._body(request))
        by_shard: dict[int, list[str]] = {}
        for i, mid in enumerate(req.ids):
            try:
                shard = self.router.shard_of_decision(mid)
            except NextbestError as e:
                return fail(request, 422, "invalid_field", str(e), f"ids[{i}]")
            by_shard.setdefault(shard, []).append(mid)
        results = await self.router.call_all(
            [(s, "ack_outbound", ids) for s, ids in by_shard.items()]
        )
        for r in results:
            if (resp := core_error(request, r)) is not None:
                return resp
        return reply(request, {"acked": sum(results)})

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
        key = self.link_key
        if key is None:
            raise WireError(404, "not_found", "open links are off (delivery.link_key_env)")
        try:
            link = open_link(key, token, time.time())
        except LinkError as e:
            status = 410 if e.code == "link_expired" else 404
            raise WireError(status, e.code, e.message, "token") from None
        wire = {
            "customer_id": link.customer_id,
            "channel": link.channel,
            "placement": link.placement,
            "context": {"opened": link.message_id},
            "limit": None,
            "explain": False,
            "dry_run": False,
            "event": None,
        }
        result, _ = await self.ident.call(  # (merged since: its survivor decides)
            link.customer_id, "decide", lambda c: ({**wire, "customer_id": c},)
        )
        if (resp := core_error(request, result)) is not None:
            return resp
        return reply(request, {**result, "message_id": link.message_id})

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
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise WireError(413, "body_too_large", f"a table is at most {limit} bytes")
        raw = await request.body()
        if len(raw) > limit:
            raise WireError(413, "body_too_large", f"a table is at most {limit} bytes")
        media = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
        try:
            if media in PARQUET_TYPES:
                data = pq.read_table(pa.BufferReader(raw))
            else:
                body = decode_body(raw, media or None, limit, self.max_depth)
                if not isinstance(body, dict) or set(body) != {"rows"}:
                    raise WireError(422, "invalid_table", 'the body is {"rows": [{...}, ...]}')
                rows = body["rows"]
                if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
                    raise WireError(422, "invalid_table", "rows is a list of objects", "rows")
                data = pa.Table.from_pylist(rows)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OSError) as e:
            raise WireError(422, "invalid_table", f"not a table: {e}") from None
        result = await self.router.supervisor_call("put_context", table, data)
        return core_error(request, result) or reply(request, result)

    @fastapi_app.get("/v1/context", tags=["context"], summary="Context tables and versions")
    async def context_tables(self, request: Request) -> Response:
        self._allow(request, "context:write")
        return reply(request, await self.router.supervisor_call("context_tables"))

    @fastapi_app.get("/v1/profiles/{customer_id}", tags=["profiles"], summary="A live profile")
    async def profile(self, customer_id: str, request: Request) -> Response:
        self._allow(request, "profiles:read")
        customer_id = await self.ident.canonical(self._path_id(customer_id))
        result, _ = await self.ident.call(customer_id, "get_profile", lambda c: (c,))
        return core_error(request, result) or reply(request, result)

    @fastapi_app.delete("/v1/profiles/{customer_id}", tags=["profiles"], summary="Erase a customer")
    async def erase(self, customer_id: str, request: Request) -> Response:
        """Forget the customer: profile and decisions at once; the WAL segments and
        snapshots that held them are deleted by a snapshot that starts now."""
        self._allow(request, "profiles:erase")
        asked = self._path_id(customer_id)
        customer_id = await self.ident.canonical(asked)
        result, customer_id = await self.ident.call(customer_id, "erase_profile", lambda c: (c,))
        if (resp := core_error(request, result)) is not None:
            return resp
        await self.ident.forget(asked, customer_id)  # its links and merges, everywhere
        return reply(request, result)

    @fastapi_app.post(
        "/v1/identities/merge", tags=["identity"], summary="Merge two profiles of one person"
    )
    async def merge(self, request: Request) -> Response:
        """Fold `merged` into `survivor`: aggregates combined per kind, contact history
        joined, the stricter consent kept; `merged` forwards to `survivor` from then on,
        and the merge is written to the identity audit log."""
        self._allow(request, "identities:write")
        req = validate(self.wire.MergeIn, await self._body(request))
        result = await self.ident.merge(req.survivor, req.merged)
        return core_error(request, result) or reply(request, result)

    @fastapi_app.get(
        "/v1/identities/{key}", tags=["identity"], summary="Who an id or identifier is"
    )
    async def identity(self, key: str, request: Request) -> Response:
        self._allow(request, "profiles:read")
        key = self._path_id(key)
        info = await self.ident.describe(key)
        info["merges"] = await self.router.supervisor_call("identity_audit", info["customer_id"])
        return reply(request, info)

    @fastapi_app.get("/v1/models", tags=["models"], summary="Models served by every shard")
    async def models(self, request: Request) -> Response:
        self._allow(request, "admin")
        return await self.admin.models(request)

    @fastapi_app.post("/v1/models/deploy", tags=["models"], summary="Deploy a model version")
    async def deploy(self, request: Request) -> Response:
        self._allow(request, "admin")
        return await self.admin.deploy(request)

    @fastapi_app.get("/v1/models/stats", tags=["models"], summary="Live metrics per model version")
    async def model_stats(self, request: Request) -> Response:
        self._allow(request, "admin")
        return await self.admin.stats(request)

    @fastapi_app.post(
        "/v1/models/{name}/promote", tags=["models"], summary="Make a version champion"
    )
    async def promote(self, name: str, request: Request) -> Response:
        self._allow(request, "admin")
        return await self.admin.roll_out(request, name, "promote")

    @fastapi_app.post(
        "/v1/models/{name}/rollback", tags=["models"], summary="Back to the last champion"
    )
    async def rollback(self, name: str, request: Request) -> Response:
        self._allow(request, "admin")
        return await self.admin.roll_out(request, name, "rollback")

    @fastapi_app.post(
        "/v1/models/{name}/split", tags=["models"], summary="Start or end a challenger"
    )
    async def split(self, name: str, request: Request) -> Response:
        self._allow(request, "admin")
        return await self.admin.roll_out(request, name, "split")

    @fastapi_app.get("/v1/catalog", tags=["catalog"], summary="The catalog the shards serve")
    async def catalog(self, request: Request) -> Response:
        self._allow(request, "admin")
        return await self.admin.catalog(request)

    @fastapi_app.put("/v1/catalog", tags=["catalog"], summary="Apply a catalog on every shard")
    async def put_catalog(self, request: Request) -> Response:
        self._allow(request, "admin")
        return await self.admin.apply_catalog(request)

    @fastapi_app.post("/v1/catalog/rollback", tags=["catalog"], summary="Back to the last catalog")
    async def rollback_catalog(self, request: Request) -> Response:
        self._allow(request, "admin")
        return await self.admin.apply_catalog(request, rollback=True)

    @fastapi_app.get("/v1/status", tags=["ops"], summary="Every shard's state")
    async def status(self, request: Request) -> Response:
        self._allow(request, "admin")
        return await self.admin.status(request)

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
    return Ingress.options(
        num_replicas=config.server.ingress_replicas, **serve_limits(config)
    ).bind(config)


def app_builder(args: dict[str, str]) -> Any:
    """Entry for `serve build` / `serve deploy`: args {"config": "path/to/nextbest.yaml"}."""
    return build_app(load_config(args.get("config", "examples/nextbest.yaml"), os.environ))
