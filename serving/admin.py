"""The admin API (models, status): on the channels' port, or on a port of its own.

(No `from __future__ import annotations`: FastAPI resolves the routes' `Request`.)

`AdminRoutes` holds the handlers. The ingress serves them on `port` by default. With
`server.admin_port` set, an `AdminServer` actor serves them there instead (its own small
uvicorn on `admin_host`, default 127.0.0.1), and the channels' port answers 404 for them:
an ops network can reach deploys and status while the public one cannot even see them.
The admin port checks the same API keys (scope `admin`) and speaks TLS with the same
certificate when one is configured.
"""

import contextlib
import logging
import re
import threading
import time
from typing import Any

import ray
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from actors.remote import SupervisorClient, ensure_supervisor
from decisioning.config import Config
from serving.auth import KeyRing
from serving.openapi import install_openapi
from serving.responses import fail, install_error_handlers, reply
from serving.wire import ModelDeployIn, PromoteIn, SplitIn, WireError, decode_body, validate

__all__ = [
    "ADMIN",
    "ADMIN_PATHS",
    "AdminRoutes",
    "AdminServer",
    "admin_app",
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
    )
)
_MODEL_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


ADMIN_BODIES: dict[str, tuple[type, bool]] = {
    "/v1/models/deploy": (ModelDeployIn, False),
    "/v1/models/{name}/promote": (PromoteIn, False),
    "/v1/models/{name}/split": (SplitIn, False),
}


def on_channel_port(config: Config) -> bool:
    """Whether the ingress serves the admin routes: unless they are off or have a port."""
    return config.auth.admin_api and config.server.admin_port is None


class AdminRoutes:
    """The admin handlers; the caller has checked the `admin` scope."""

    def __init__(self, supervisor: SupervisorClient) -> None:
        self.supervisor = supervisor

    async def models(self, request: Request) -> Response:
        status = await self.supervisor.call("status")
        shards = [
            {"shard": s["shard"], "models": s.get("models"), "challengers": s.get("challengers")}
            for s in status
        ]
        return reply(request, {"shards": shards})

    async def stats(self, request: Request) -> Response:
        return reply(request, {"models": await self.supervisor.call("model_stats")})

    async def roll_out(self, request: Request, name: str, op: str) -> Response:
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
        result = await self.supervisor.call("roll_out", name, op, *args)
        if isinstance(result, dict) and "error" in result:
            err = result["error"]
            status = 404 if err["type"] == "NotFound" else 409
            return fail(request, status, err["code"], err["message"])
        return reply(request, result)

    async def deploy(self, request: Request) -> Response:
        body = decode_body(
            await request.body(), request.headers.get("content-type"), MAX_MODEL_BYTES
        )
        req = validate(ModelDeployIn, body)
        result = await self.supervisor.call("deploy_model", req.manifest, req.model_text)
        if isinstance(result, dict) and "error" in result:
            return fail(request, 422, "model_refused", result["error"]["message"])
        return reply(request, result)

    async def catalog(self, request: Request) -> Response:
        return reply(request, await self.supervisor.call("catalog"))

    async def apply_catalog(self, request: Request, rollback: bool = False) -> Response:
        """PUT: validate, version and swap a catalog on every shard; or roll back."""
        catalog = None
        if not rollback:
            body = decode_body(
                await request.body(), request.headers.get("content-type"), MAX_CATALOG_BYTES
            )
            if not isinstance(body, dict):
                raise WireError(422, "invalid_catalog", "a catalog is a JSON object")
            catalog = body
        result = await self.supervisor.call("apply_catalog", catalog)
        if isinstance(result, dict) and "error" in result:
            err = result["error"]
            status = 409 if err["type"] == "NotFound" else 422
            code = err["code"] if status == 409 else "invalid_catalog"
            return fail(request, status, code, err["message"])
        return reply(request, result)

    async def status(self, request: Request) -> Response:
        return reply(request, {"shards": await self.supervisor.call("status")})


def admin_app(config: Config, supervisor: SupervisorClient) -> FastAPI:
    """The FastAPI app of the admin port: the admin routes and a liveness probe."""
    app = FastAPI(title="nextbest admin", version="1", description="Models and status.")
    install_error_handlers(app)
    install_openapi(app, lambda: ADMIN_BODIES)
    keys = KeyRing(config.auth)
    routes = AdminRoutes(supervisor)

    @app.get("/v1/models", tags=["models"], summary="Models served by every shard")
    async def models(request: Request) -> Response:
        keys.check(request.headers, "admin")
        return await routes.models(request)

    @app.post("/v1/models/deploy", tags=["models"], summary="Deploy a model version")
    async def deploy(request: Request) -> Response:
        keys.check(request.headers, "admin")
        return await routes.deploy(request)

    @app.get("/v1/models/stats", tags=["models"], summary="Live metrics per model version")
    async def stats(request: Request) -> Response:
        keys.check(request.headers, "admin")
        return await routes.stats(request)

    @app.post("/v1/models/{name}/promote", tags=["models"], summary="Make a version champion")
    async def promote(name: str, request: Request) -> Response:
        keys.check(request.headers, "admin")
        return await routes.roll_out(request, name, "promote")

    @app.post("/v1/models/{name}/rollback", tags=["models"], summary="Back to the last champion")
    async def rollback(name: str, request: Request) -> Response:
        keys.check(request.headers, "admin")
        return await routes.roll_out(request, name, "rollback")

    @app.post("/v1/models/{name}/split", tags=["models"], summary="Start or end a challenger")
    async def split(name: str, request: Request) -> Response:
        keys.check(request.headers, "admin")
        return await routes.roll_out(request, name, "split")

    @app.get("/v1/catalog", tags=["catalog"], summary="The catalog the shards serve")
    async def catalog(request: Request) -> Response:
        keys.check(request.headers, "admin")
        return await routes.catalog(request)

    @app.put("/v1/catalog", tags=["catalog"], summary="Apply a catalog on every shard")
    async def put_catalog(request: Request) -> Response:
        keys.check(request.headers, "admin")
        return await routes.apply_catalog(request)

    @app.post("/v1/catalog/rollback", tags=["catalog"], summary="Back to the last catalog")
    async def rollback_catalog(request: Request) -> Response:
        keys.check(request.headers, "admin")
        return await routes.apply_catalog(request, rollback=True)

    @app.get("/v1/status", tags=["ops"], summary="Every shard's state")
    async def status(request: Request) -> Response:
        keys.check(request.headers, "admin")
        return await routes.status(request)

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
    actor = (
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
