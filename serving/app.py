"""The Ray Serve application: a FastAPI ingress that validates, routes and encodes.

(No `from __future__ import annotations` here: FastAPI must resolve `Request` in the
route signatures at import time.)

`build_app(config)` is the single entry used by `nextbest serve`, the tests and
`serve build`/`serve deploy` (through `app_builder`). The routes are serving/api.py's
(the channels') and serving/admin.py's; an ingress replica gives them its `Api` and
`AdminAccess`.
"""

import asyncio
import contextlib
import logging
import os
from typing import Any

from fastapi import FastAPI
from ray import serve
from ray.serve.exceptions import RayServeException

from actors.remote import ShardRouter
from decisioning.config import Config
from decisioning.config.loader import load_config
from serving.admin import ADMIN_BODIES, ADMIN_PATHS, AdminAccess, admin_router, on_channel_port
from serving.api import Api, api_bodies, api_router
from serving.errors import RETRY_AFTER
from serving.openapi import install_openapi
from serving.responses import install_error_handlers
from serving.serve_ports import reuse_ports
from serving.wire import DEFAULT

__all__ = ["Ingress", "app_builder", "build_app", "fastapi_app", "serve_limits"]

log = logging.getLogger("nextbest.serving")
reuse_ports()  # a replica that replaces a killed one binds its port at once

fastapi_app = FastAPI(
    title="nextbest",
    version="1",
    description="Real-time next-best-action decisions from live profiles and LightGBM models.",
)
install_error_handlers(fastapi_app)


async def _replica_admin() -> AdminAccess:
    """The admin routes' access on this ingress replica (its Ingress instance's)."""
    ingress: Any = serve.get_replica_context().servable_object  # (this replica's Ingress)
    return ingress.admin  # type: ignore[no-any-return]


async def _replica_api() -> Api:
    """The channels' routes' Api on this ingress replica."""
    ingress: Any = serve.get_replica_context().servable_object
    return ingress.api  # type: ignore[no-any-return]


def _replica_bodies() -> dict[str, tuple[type, bool]]:
    """Each route's body model with this replica's configured limits (the defaults
    outside a replica), for /openapi.json."""
    try:
        ingress: Any = serve.get_replica_context().servable_object
    except RayServeException:
        ingress = None
    wire = ingress.api.wire if ingress is not None else DEFAULT
    return {**api_bodies(wire), **ADMIN_BODIES}


def _replica_hidden() -> frozenset[str]:
    """The admin paths when this replica does not serve them (off, or on their port)."""
    try:
        ingress: Any = serve.get_replica_context().servable_object
    except RayServeException:
        return frozenset()
    return frozenset() if ingress is None or ingress.admin.served else ADMIN_PATHS


# before @serve.ingress, which freezes (pickles) the app as it is at that moment: what
# the routes and /openapi.json need of a replica, they ask the replica for
fastapi_app.include_router(api_router(_replica_api))
fastapi_app.include_router(admin_router(_replica_admin))
install_openapi(fastapi_app, _replica_bodies, _replica_hidden)


@serve.deployment(
    name="nextbest",
    logging_config={"enable_access_log": False},
    health_check_period_s=10,
)
@serve.ingress(fastapi_app)
class Ingress:
    """Stateless ingress replica: the channels' and admin routes over Ray handles to
    every shard actor."""

    def __init__(self, config: Config) -> None:
        self.config = config
        router = ShardRouter(config)
        self.api = Api(config, router)
        self.router, self.ident = self.api.router, self.api.ident
        self._sweeper: asyncio.Task[None] | None = None  # finishes merges left unfinished
        with contextlib.suppress(RuntimeError):  # (no loop running: the health check starts it)
            self._start_sweep()
        served = on_channel_port(config)
        self.admin = AdminAccess(config, router.supervisor, served)  # (admin_router's)
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
