"""Start and stop nextbest on Ray: local embedded Ray unless RAY_ADDRESS is set."""

from __future__ import annotations

import logging
import os
from typing import Any

import ray
from ray import serve

from actors.remote import ensure_supervisor, shutdown_cluster
from decisioning.config import Config
from serving.app import build_app

__all__ = ["APP_NAME", "start", "start_ray", "stop"]

log = logging.getLogger("nextbest")
APP_NAME = "nextbest"


def start_ray(num_cpus: int = 2, object_store_mb: int = 256) -> bool:
    """Connect to RAY_ADDRESS, or start a small local Ray; True if we started it."""
    if ray.is_initialized():
        return False
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
        return False
    ray.init(
        num_cpus=num_cpus,
        object_store_memory=object_store_mb * 1024 * 1024,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=True,
        logging_level=logging.WARNING,
    )
    return True


def start(config: Config) -> str:
    """Create the shards, deploy the Serve app, and return the URL it listens on."""
    ensure_supervisor(config)
    serve.start(
        http_options={"host": config.server.host, "port": config.server.port},
        logging_config={"enable_access_log": False, "log_level": "WARNING"},
    )
    serve.run(build_app(config), name=APP_NAME, route_prefix="/", blocking=False)
    return f"http://{config.server.host}:{config.server.port}"


def stop(config: Config) -> None:
    """Remove the app, the shards and the supervisor; leave Ray itself to the caller."""
    try:
        serve.delete(APP_NAME)
    except Exception as e:  # noqa: BLE001 - shutting down: report and go on
        log.warning("serve.delete: %s", e)
    shutdown_cluster(config)
    serve.shutdown()


def status(config: Config) -> list[dict[str, Any]]:
    sup = ray.get_actor("supervisor", namespace=config.server.namespace)
    return list(ray.get(sup.status.remote()))
