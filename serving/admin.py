"""The admin API (models, catalog, status): defined once, served on the channels' port
or on a port of its own.

(No `from __future__ import annotations`: FastAPI resolves the routes' annotations.)

`admin_router` holds the routes; whichever app serves them mounts it with the
`AdminAccess` of that app. The ingress mounts it on `port` by default. With
`server.admin_port` set, an `AdminServer` actor mounts it instead (its own small uvicorn
on `admin_host`, default 127.0.0.1), and the channels' port answers 404 for these
routes: an ops network can reach deploys and status while the public one cannot even
see them. The admin port checks the same API keys (scope `admin`) and speaks TLS with
the same certificate when one is configured.
"""

import contextlib
import logging
import re
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import ray
import uvicorn
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import Response
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from actors.remote import SupervisorClient, ensure_supervisor
from decisioning.config import Config
from serving.auth import KeyRing
from serving.errors import ok
from serving.openapi import install_openapi
from serving.responses import install_error_handlers, reply
from serving.wire import (
    ModelDeployIn,
    PromoteIn,
    ScaleIn,
    SlotMoveIn,
    SplitIn,
    WireError,
    decode_body,
    validate,
)

__all__ = [
    "ADMIN",
    "ADMIN_BODIES",
    "ADMIN_PATHS",
    "AdminAccess",
    "AdminServer",
    "admin_app",
    "admin_router",
    "ensure_admin",
    "on_channel_port",
    "stop_admin",
]

log = logging.getLogger("nextbest.serving")
ADMIN = "nextbest-admin"
MAX_MODEL_BYTES = 64 * 1024 * 1024  # a deploy carries the model text
MAX_CATALOG_BYTES = 4 * 1024 * 1024
ADMIN_PATHS = frozenset(
    (
        "/v1/models",
        "/v1/models/deploy",
        "/v1/models/stats",
        "/v1/models/{name}/promote",
        "/v1/models/{name}/rollback",
        "/v1/models/{name}/split",
        "/v1/status",
        "/v1/catalog",
        "/v1/catalog/rollback",
        "/v1/shards",
        "/v1/shards/scale",
        "/v1/shards/move",
        "/v1/shards/rebalance",
    )
)
_MODEL_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


ADMIN_BODIES: dict[str, tuple[type, bool]] = {
    "/v1/models/deploy": (ModelDeployIn, False),
    "/v1/models/{name}/promote": (PromoteIn, False),
    "/v1/models/{name}/split": (SplitIn, False),
    "/v1/shards/scale": (ScaleIn, False),
    "/v1/shards/move": (SlotMoveIn, False),
}


def on_channel_port(config: Config) -> bool:
    """Whether the ingress serves the admin routes: unless they are off or have a port."""
    return config.auth.admin_api and config.server.admin_port is None


class AdminAccess:
    """What an app that mounts the admin routes gives them: who may call them (scope
    `admin`), the supervisor they call, and whether this app serves them at all."""

    def __init__(self, config: Config, supervisor: SupervisorClient, served: bool = True):
        self.keys = KeyRing(config.auth)
        self.supervisor = supervisor
        self.served = served

    def allow(self, request: Request) -> SupervisorClient:
        """The supervisor, for a request whose key has the `admin` scope; 401/403 else,
        and 404 on an app that does not serve the admin routes (off, or moved)."""
        if not self.served:
            raise WireError(404, "not_found", "Not Found")
        self.keys.check(request.headers, "admin")
        return self.supervisor


async def _roll_out(request: Request, supervisor: SupervisorClient, name: str, op: str) -> Any:
    """promote, rollback or split `name` on every shard at once."""
    if not _MODEL_NAME.match(name):
        raise WireError(422, "invalid_field", "not a model name", "name")
    body = await request.body()
    data = decode_body(body, request.headers.get("content-type"), 4096) if body else {}
    args: tuple[Any, ...] = ()
    if op == "promote":
        args = (validate(PromoteIn, data).version,)
    elif op == "split":
        req = validate(SplitIn, data)
        args = (req.version, req.share, req.shadow)
    elif data:
        raise WireError(422, "invalid_field", "rollback takes no body")
    # what is refused is a stored version, or the aliases as they are: a conflict
    return ok(await supervisor.call("roll_out", name, op, *args), refusal=409)


async def _apply_catalog(request: Request, supervisor: SupervisorClient, rollback: bool) -> Any:
    """PUT: validate, version and swap a catalog on every shard; or roll back."""
    catalog = None
    if not rollback:
        body = decode_body(
            await request.body(), request.headers.get("content-type"), MAX_CATALOG_BYTES
        )
        if not isinstance(body, dict):
            raise WireError(422, "invalid_catalog", "a catalog is a JSON object")
        catalog = body
    return ok(await supervisor.call("apply_catalog", catalog), code="invalid_catalog")


def admin_router(access: Callable[[], AdminAccess | Awaitable[AdminAccess]]) -> APIRouter:
    """The admin routes, for an app whose `access` dependency gives their AdminAccess."""
    router = APIRouter()

    def allowed(request: Request, admin: Annotated[AdminAccess, Depends(access)]) -> Any:
        return admin.allow(request)

    Supervisor = Annotated[SupervisorClient, Depends(allowed)]  # noqa: N806 - a type

    @router.get("/v1/models", tags=["models"], summary="Models served by every shard")
    async def models(request: Request, supervisor: Supervisor) -> Response:
        status = await supervisor.call("status")
        shards = [
            {"shard": s["shard"], "models": s.get("models"), "challengers": s.get("challengers")}
            for s in status
        ]
        return reply(request, {"shards": shards})

    @router.post("/v1/models/deploy", tags=["models"], summary="Deploy a model version")
    async def deploy(request: Request, supervisor: Supervisor) -> Response:
        body = decode_body(
            await request.body(), request.headers.get("content-type"), MAX_MODEL_BYTES
        )
        req = validate(ModelDeployIn, body)
        result = await supervisor.call("deploy_model", req.manifest, req.model_text)
        return reply(request, ok(result, code="model_refused"))  # the model it carries

    @router.get("/v1/models/stats", tags=["models"], summary="Live metrics per model version")
    async def model_stats(request: Request, supervisor: Supervisor) -> Response:
        return reply(request, {"models": await supervisor.call("model_stats")})

    @router.post("/v1/models/{name}/promote", tags=["models"], summary="Make a version champion")
    async def promote(name: str, request: Request, supervisor: Supervisor) -> Response:
        return reply(request, await _roll_out(request, supervisor, name, "promote"))

    @router.post("/v1/models/{name}/rollback", tags=["models"], summary="Back to the last champion")
    async def rollback(name: str, request: Request, supervisor: Supervisor) -> Response:
        return reply(request, await _roll_out(request, supervisor, name, "rollback"))

    @router.post("/v1/models/{name}/split", tags=["models"], summary="Start or end a challenger")
    async def split(name: str, request: Request, supervisor: Supervisor) -> Response:
        return reply(request, await _roll_out(request, supervisor, name, "split"))

    @router.get("/v1/catalog", tags=["catalog"], summary="The catalog the shards serve")
    async def catalog(request: Request, supervisor: Supervisor) -> Response:
        return reply(request, await supervisor.call("catalog"))

    @router.put("/v1/catalog", tags=["catalog"], summary="Apply a catalog on every shard")
    async def put_catalog(request: Request, supervisor: Supervisor) -> Response:
        return reply(request, await _apply_catalog(request, supervisor, rollback=False))

    @router.post("/v1/catalog/rollback", tags=["catalog"], summary="Back to the last catalog")
    async def rollback_catalog(request: Request, supervisor: Supervisor) -> Response:
        return reply(request, await _apply_catalog(request, supervisor, rollback=True))

    @router.get("/v1/status", tags=["ops"], summary="Every shard's state")
    async def status(request: Request, supervisor: Supervisor) -> Response:
        return reply(request, {"shards": await supervisor.call("status")})

    _shard_routes(router, allowed)
    return router


async def _body(request: Request) -> Any:
    return decode_body(await request.body(), request.headers.get("content-type"), 4096)


def _shard_routes(router: APIRouter, allowed: Callable[..., SupervisorClient]) -> None:
    """GET /v1/shards and the slot moves (one at a time; each answers 202 with its
    progress at once and runs on in the supervisor: GET /v1/shards follows it)."""

    @router.get("/v1/shards", tags=["ops"], summary="Slot ranges, owners and the epoch")
    async def shards(
        request: Request, supervisor: Annotated[SupervisorClient, Depends(allowed)]
    ) -> Response:
        return reply(request, await supervisor.call("shards"))

    @router.post("/v1/shards/scale", tags=["ops"], summary="Run N shards; slots move to balance")
    async def scale(
        request: Request, supervisor: Annotated[SupervisorClient, Depends(allowed)]
    ) -> Response:
        req = validate(ScaleIn, await _body(request))
        started = await supervisor.call("start_scale", req.shards)
        return reply(request, ok(started, refusal=409), status=202)

    @router.post("/v1/shards/move", tags=["ops"], summary="Move a slot range to a shard")
    async def move(
        request: Request, supervisor: Annotated[SupervisorClient, Depends(allowed)]
    ) -> Response:
        req = validate(SlotMoveIn, await _body(request))
        started = await supervisor.call("start_move", req.first, req.last + 1, req.to)
        return reply(request, ok(started, refusal=409), status=202)

    @router.post("/v1/shards/rebalance", tags=["ops"], summary="Even out slots over the shards")
    async def rebalance(
        request: Request, supervisor: Annotated[SupervisorClient, Depends(allowed)]
    ) -> Response:
        return reply(request, ok(await supervisor.call("start_rebalance"), refusal=409), status=202)


def admin_app(config: Config, supervisor: SupervisorClient) -> FastAPI:
    """The FastAPI app of the admin port: the admin routes and a liveness probe."""
    app = FastAPI(title="nextbest admin", version="1", description="Models and status.")
    install_error_handlers(app)
    install_openapi(app, lambda: ADMIN_BODIES)
    access = AdminAccess(config, supervisor)
    app.include_router(admin_router(lambda: access))

    @app.get("/healthz", tags=["ops"], summary="Liveness")
    async def healthz(request: Request) -> Response:
        return reply(request, {"status": "ok"})

    return app


class AdminServer:
    """Serves the admin app on `admin_host:admin_port` from a thread of this actor."""

    def __init__(self, config: Config, supervisor: Any, timeout: float = 30.0) -> None:
        s = config.server
        assert s.admin_port is not None
        self.address = f"{s.admin_host}:{s.admin_port}"
        app = admin_app(config, SupervisorClient(config, supervisor))
        self.server = uvicorn.Server(  # in a thread: it leaves the process's signals alone
            uvicorn.Config(
                app,
                host=s.admin_host,
                port=s.admin_port,
                ssl_certfile=s.tls_certfile,
                ssl_keyfile=s.tls_keyfile,
                log_level="warning",
                access_log=False,
                lifespan="off",
            )
        )
        self.thread = threading.Thread(target=self.server.run, name="admin-http", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                msg = f"the admin API cannot listen on {self.address} (is the port in use?)"
                raise RuntimeError(msg)
            time.sleep(0.02)

    def ready(self) -> str:
        return self.address

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def ensure_admin(config: Config, timeout: float = 60.0) -> str:
    """Start the admin server actor (or find it running); returns host:port. It runs on
    this node (the address is this node's), restarted by Ray if its process dies."""
    supervisor = ensure_supervisor(config)
    node = ray.get_runtime_context().get_node_id()
    actor: Any = (
        ray.remote(AdminServer)
        .options(
            name=ADMIN,
            namespace=config.server.namespace,
            lifetime="detached",
            get_if_exists=True,
            max_restarts=-1,
            num_cpus=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),
        )
        .remote(config, supervisor)
    )
    return str(ray.get(actor.ready.remote(), timeout=timeout))


def stop_admin(config: Config) -> None:
    """Stop the admin server actor, if there is one (its port is free afterwards)."""
    try:
        actor = ray.get_actor(ADMIN, namespace=config.server.namespace)
    except ValueError:
        return
    with contextlib.suppress(Exception):
        ray.get(actor.stop.remote(), timeout=15)
    ray.kill(actor, no_restart=True)
