"""Start and stop nextbest on Ray: local embedded Ray unless RAY_ADDRESS is set."""

from __future__ import annotations

import logging
import os
import time

import httpx
import ray
from ray import serve

from actors.remote import ensure_supervisor, shutdown_cluster
from decisioning.config import Config
from serving.admin import ensure_admin, stop_admin
from serving.app import build_app

__all__ = ["APP_NAME", "http_options", "proxy_port", "serve_env", "start", "start_ray", "stop"]

log = logging.getLogger("nextbest")
APP_NAME = "nextbest"


def serve_env(config: Config) -> dict[str, str]:
    """Environment Ray must start with for the configured serving path.

    In direct mode the ingress replica serves HTTP itself on `port` (Serve's direct
    ingress, part of RAY_SERVE_THROUGHPUT_OPTIMIZED); a cluster started elsewhere
    (RAY_ADDRESS) needs the same variables on `ray start` (see cluster.yaml). Port
    quarantine exists to protect HAProxy's server list; without HAProxy it would keep a
    restarted ingress replica off `port` for minutes, so it is off.
    """
    s = config.server
    if s.serving_path == "proxy":
        return {}
    return {
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
        "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(s.port),
        "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(s.port + s.ingress_replicas),
        "RAY_SERVE_PORT_QUARANTINE_S": "0",
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": f"{s.drain_s:g}",
    }


def proxy_port(config: Config) -> int:
    """Where Serve's own HTTP proxy listens: `port` itself in proxy mode."""
    s = config.server
    if s.serving_path == "proxy":
        return s.port
    return s.proxy_port or s.port + 100


def start_ray(config: Config, num_cpus: int = 2, object_store_mb: int = 256) -> bool:
    """Connect to RAY_ADDRESS, or start a small local Ray; True if we started it."""
    if ray.is_initialized():
        return False
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
        return False
    for key, value in serve_env(config).items():
        os.environ.setdefault(key, value)  # inherited by every Ray process started here
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
    """Create the shards, deploy the Serve app, and return the URL once it answers."""
    # Serve's INFO lines name its proxy port, not the one channels use: keep them out
    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    ensure_supervisor(config)
    if config.server.admin_port is not None:
        ensure_admin(config)
    serve.start(
        http_options=http_options(config),
        logging_config={"enable_access_log": False, "log_level": "WARNING"},
    )
    serve.run(build_app(config), name=APP_NAME, route_prefix="/", blocking=False)
    s = config.server
    scheme = "https" if s.tls_certfile else "http"
    url = f"{scheme}://{s.host}:{s.port}"
    _wait_until_answering(url, verify=not s.tls_certfile)  # our own port: any cert will do
    return url


def http_options(config: Config) -> dict[str, object]:
    """Serve's HTTP options: where to listen and, with a certificate, TLS (the direct
    ingress replica uses the same options, so it serves HTTPS itself)."""
    s = config.server
    options: dict[str, object] = {"host": s.host, "port": proxy_port(config)}
    if s.tls_certfile and s.tls_keyfile:
        options |= {"ssl_certfile": s.tls_certfile, "ssl_keyfile": s.tls_keyfile}
    return options


def _wait_until_answering(url: str, timeout: float = 60.0, verify: bool = True) -> None:
    """serve.run returns before a direct-ingress replica has bound its port: wait for it."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=2, verify=verify).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"nextbest did not answer on {url} within {timeout:.0f}s")
        time.sleep(0.1)


def stop(config: Config) -> None:
    """Remove the app, the admin server, the shards and the supervisor; leave Ray itself
    to the caller."""
    try:
        serve.delete(APP_NAME)
    except Exception as e:  # noqa: BLE001 - shutting down: report and go on
        log.warning("serve.delete: %s", e)
    stop_admin(config)
    shutdown_cluster(config)
    serve.shutdown()
