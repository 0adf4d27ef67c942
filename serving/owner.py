"""A shard's own port: the channels' API served inside the shard actor's process.

(No `from __future__ import annotations`: FastAPI resolves the routes' annotations.)

Every shard listens on a port of its own (`server.shard_port`) and serves there the
same routes as the Serve ingress (serving/api.py), with the same keys, limits, errors
and TLS. Its router's link to the shard itself is a plain call in this process
(`LocalShardLink`): a request for a customer this shard owns crosses no process
boundary. A request for another shard's customer is forwarded once, through Ray, as
the ingress would send it; with `X-Nextbest-Route: strict` it is answered 421
`slot_moved` instead, so a client that routes by slot (`nextbest_client`) refetches
`GET /v1/cluster/slots` and sends it to the owner itself.

Single writer: the server runs on the shard actor's event loop (the shard is an async
actor, whose plain methods run on that loop one at a time), so a request's call to the
shard runs between, never during, the calls Ray delivers.
"""

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.routing import APIRoute
from starlette.types import Receive, Scope, Send

from actors.calls import Call
from actors.remote import RayShardLink, SupervisorClient
from actors.router import Router, ShardLink
from decisioning.config import Config
from decisioning.profile.slots import SlotMap, slot_of
from serving.api import Api, api_router
from serving.responses import error_response, install_error_handlers
from serving.wire import WireError

__all__ = ["STRICT", "FastLane", "LocalShardLink", "OwnerApi", "OwnerPort", "public_host"]

log = logging.getLogger("nextbest.serving")
STRICT = "x-nextbest-route"  # "strict": answer 421 slot_moved rather than forward


class LocalShardLink:
    """The shard itself as a `router.ShardLink`: `run` is its call_many, in-process."""

    def __init__(self, run: Callable[[list[Call]], list[Any]]) -> None:
        self.run = run

    async def call_many(self, calls: list[Call]) -> list[Any]:
        return self.run(calls)

    async def ready(self) -> None:
        return None


class OwnerApi(Api):
    """The Api of a shard's own port: a strict request for a customer of another shard
    is refused (421) before anything is applied."""

    def __init__(
        self, config: Config, router: Router, owner_of: Callable[[int], tuple[int, int]]
    ) -> None:
        super().__init__(config, router)
        self.owner_of = owner_of  # slot -> (owning shard, epoch) as this shard knows it
        self.shard_id = -1

    def misdirected(self, request: Request, customer_ids: Sequence[str]) -> None:
        if request.headers.get(STRICT) != "strict":
            return
        for cid in customer_ids:
            slot = slot_of(cid)
            owner, epoch = self.owner_of(slot)
            if owner != self.shard_id:
                raise WireError(
                    421,
                    "slot_moved",
                    f"slot {slot} is served by shard {owner} (slot map epoch {epoch}), not "
                    f"this one ({self.shard_id}): fetch GET /v1/cluster/slots and send it there",
                )


class FastLane:
    """The hot routes (POST /v1/decide, /v1/events, /v1/outcomes) called straight, with
    the same endpoint functions and error answers as through FastAPI, but without its
    routing, dependency solving and middleware (about a third of what the HTTP layer
    costs a request here); every other request goes to the FastAPI app."""

    HOT = ("/v1/decide", "/v1/events", "/v1/outcomes")

    def __init__(self, app: FastAPI, api: Api) -> None:
        self.app = app
        self.api = api
        self.lanes = {
            r.path: r.endpoint
            for r in app.routes
            if isinstance(r, APIRoute) and r.path in self.HOT and "POST" in (r.methods or ())
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        lane = self.lanes.get(scope.get("path", "")) if scope["type"] == "http" else None
        if lane is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            response = await lane(request=request, api=self.api)
        except Exception as e:  # noqa: BLE001 - answered as the app answers it
            response = await error_response(request, e)
        await response(scope, receive, send)


class _EmbeddedServer(uvicorn.Server):
    """uvicorn in a loop it does not own: the actor's signals are Ray's, not ours."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def public_host(host: str) -> str:
    """The host clients reach a port bound on `host` at: this node's address when it
    binds every interface, the address itself otherwise."""
    if host in ("0.0.0.0", "::", ""):
        import ray  # (only on a cluster node, where it is the node's own address)

        return str(ray.util.get_node_ip_address())
    return host


class OwnerPort:
    """Shard `shard_id`'s own HTTP port (`server.shard_port`: 0 any free port, N: N+i)."""

    def __init__(
        self,
        config: Config,
        shard_id: int,
        slot_map: SlotMap,
        run: Callable[[list[Call]], list[Any]],
        owner_of: Callable[[int], tuple[int, int]],
    ) -> None:
        self.config = config
        self.shard_id = shard_id
        ns = config.server.namespace

        def link_of(i: int) -> ShardLink:
            return LocalShardLink(run) if i == shard_id else RayShardLink(None, f"shard-{i}", ns)

        links = [link_of(i) for i in range(slot_map.shards)]
        self.router = Router(
            config, SupervisorClient(config), list(slot_map.owners), links, slot_map.epoch, link_of
        )
        self.api = OwnerApi(config, self.router, owner_of)
        self.api.shard_id = shard_id
        app = FastAPI(title="nextbest shard", openapi_url=None, docs_url=None, redoc_url=None)
        install_error_handlers(app)

        async def api() -> Api:  # async: FastAPI runs a plain dependency in a thread
            return self.api

        app.include_router(api_router(api))
        self.app = FastLane(app, self.api)
        self.server: _EmbeddedServer | None = None
        self.task: asyncio.Task[None] | None = None
        self.endpoint: str | None = None

    def _bind(self) -> socket.socket:
        s = self.config.server
        port = 0 if s.shard_port == 0 else int(s.shard_port or 0) + self.shard_id
        family = socket.AF_INET6 if ":" in s.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart rebinds at once
        sock.bind((s.host, port))
        sock.listen(2048)
        sock.setblocking(False)
        return sock

    async def start(self, timeout: float = 10.0) -> str | None:
        """Listen; the endpoint clients use (None, logged, when the port cannot be had:
        the shard still serves its customers through the ingress)."""
        s = self.config.server
        try:
            sock = self._bind()
        except OSError as e:
            log.error("shard %d: no port of its own (%s); it serves through the ingress only",
                      self.shard_id, e)  # fmt: skip
            return None
        cfg = uvicorn.Config(
            self.app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            ssl_certfile=s.tls_certfile,
            ssl_keyfile=s.tls_keyfile,
            timeout_graceful_shutdown=int(max(1, s.drain_s)),
        )
        self.server = _EmbeddedServer(cfg)
        self.task = asyncio.get_running_loop().create_task(self.server.serve(sockets=[sock]))
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if self.task.done() or time.monotonic() > deadline:
                log.error("shard %d: its port did not start (%s)", self.shard_id,
                          self.task.exception() if self.task.done() else "timeout")  # fmt: skip
                return None
            await asyncio.sleep(0.01)
        scheme = "https" if s.tls_certfile else "http"
        self.endpoint = f"{scheme}://{public_host(s.host)}:{sock.getsockname()[1]}"
        log.info("shard %d serves its customers on %s", self.shard_id, self.endpoint)
        return self.endpoint

    async def stop(self) -> None:
        """Stop taking requests; those in flight finish (for up to `drain_s`)."""
        if self.server is None or self.task is None:
            return
        self.server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(self.task), self.config.server.drain_s + 5)
        self.endpoint = None
