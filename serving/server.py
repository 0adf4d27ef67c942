"""Start and stop nextbest on Ray: local embedded Ray unless RAY_ADDRESS is set."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import httpx
import psutil
import ray
from ray import serve

from actors.deployed import slot_store
from actors.remote import ensure_supervisor, shutdown_cluster
from decisioning.config import Config
from serving.admin import ensure_admin, stop_admin
from serving.app import build_app

__all__ = [
    "APP_NAME",
    "PortInUse",
    "http_options",
    "proxy_port",
    "serve_env",
    "start",
    "start_ray",
    "stop",
]

log = logging.getLogger("nextbest")
APP_NAME = "nextbest"
SERVE_NAMESPACE = "serve"
PORT_WAIT_S = 15.0  # how long a start waits for a port a dying process still holds
STOP_WAIT_S = 60.0  # how long a stop waits for its processes to be gone


class PortInUse(RuntimeError):
    """A port nextbest must listen on is taken (the message names it and its holder)."""


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
        address="local",  # never another user's `ray start` cluster found on this machine
        num_cpus=num_cpus,
        object_store_memory=object_store_mb * 1024 * 1024,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=True,
        logging_level=logging.WARNING,
    )
    return True


def start(config: Config, moving: Callable[[dict[str, Any]], None] | None = None) -> str:
    """Create the shards, deploy the Serve app, and return the URL once it answers.

    A data dir written with another shard count than `server.shards` is brought to that
    count first, slots and their state moved while nothing is served yet (`moving` is
    given the progress of the move, about twice a second).

    On a fresh Serve (no controller yet) whose nodes are all this machine, the ports are
    checked first: a port still held by a process that is exiting (a stop just before)
    is waited for, briefly; one that stays taken is a `PortInUse` naming its holder,
    never a Serve traceback.
    """
    # Serve's INFO lines name its proxy port, not the one channels use: keep them out
    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    if not _serve_running() and _all_nodes_here():
        _wait_for_ports(config, PORT_WAIT_S)
    slot_store(config).load()  # a map it cannot read: SlotMapError, before anything starts
    supervisor = ensure_supervisor(config)
    _scale_to(supervisor, config.server.shards, moving)
    if config.server.admin_port is not None:
        ensure_admin(config)
    serve.start(
        http_options=http_options(config),
        logging_config={"enable_access_log": False, "log_level": "WARNING"},
    )
    try:
        serve.run(build_app(config), name=APP_NAME, route_prefix="/", blocking=False)
    except RuntimeError as e:
        if "port" in str(e).lower():  # NoAvailablePortError, "port already in use"
            taken = _taken(config)
            raise PortInUse(
                f"Serve could not bind nextbest's port: {_describe(taken) or e}"
            ) from None
        raise
    s = config.server
    scheme = "https" if s.tls_certfile else "http"
    url = f"{scheme}://{s.host}:{s.port}"
    _wait_until_answering(url, verify=not s.tls_certfile)  # our own port: any cert will do
    return url


def _scale_to(
    supervisor: Any, shards: int, moving: Callable[[dict[str, Any]], None] | None
) -> None:
    """Move slots until `shards` shards own them (a no-op when they do already)."""
    names, _, _ = ray.get(supervisor.layout.remote())
    if len(names) == shards:
        return
    log.warning("the data dir has %d shards, the config %d: moving slots", len(names), shards)
    progress = ray.get(supervisor.start_scale.remote(shards))
    if isinstance(progress, BaseException):
        raise progress
    while progress["state"] == "running":
        if moving is not None:
            moving(progress)
        time.sleep(0.5)
        progress = ray.get(supervisor.move_progress.remote())
    if moving is not None:
        moving(progress)
    if progress["state"] == "failed":
        raise RuntimeError(f"moving slots to {shards} shards failed: {progress['error']}")


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


def stop(config: Config, keep_serve: bool = False) -> None:
    """Remove the app, the admin server, the shards and the supervisor; leave Ray itself
    to the caller. Returns once every actor it stopped is gone and, on this machine,
    its ports are free again, so a start right after it finds them free.

    `keep_serve` leaves Serve's controller and proxy running for the next start (the
    integration tests start one server per module, back to back, on the same ports).
    """
    serving = _serve_running()
    try:
        serve.delete(APP_NAME)
    except Exception as e:  # noqa: BLE001 - shutting down: report and go on
        log.warning("serve.delete: %s", e)
    stop_admin(config)
    shutdown_cluster(config)
    if not keep_serve:
        serve.shutdown()
    deadline = time.monotonic() + STOP_WAIT_S
    while left := _running(config.server.namespace, everything_of_serve=not keep_serve):
        if time.monotonic() > deadline:
            log.warning("stop: still running after %.0fs: %s", STOP_WAIT_S, ", ".join(left))
            break
        time.sleep(0.1)
    if serving and not keep_serve and _all_nodes_here():  # its replicas and proxy may
        try:  # still be closing them
            _wait_for_ports(config, max(1.0, deadline - time.monotonic()))
        except PortInUse as e:
            log.warning("stop: %s", e)


def _running(namespace: str, everything_of_serve: bool) -> list[str]:
    """Named actors still alive of this deployment: its own, and its Serve replicas (or
    every Serve actor, when Serve itself was shut down)."""
    return [
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["namespace"] == namespace
        or (
            a["namespace"] == SERVE_NAMESPACE
            and (everything_of_serve or ("REPLICA" in a["name"] and APP_NAME in a["name"]))
        )
    ]


def _ports(config: Config) -> list[int]:
    """The ports nextbest listens on: the direct-ingress range and Serve's proxy."""
    s = config.server
    direct = [] if s.serving_path == "proxy" else list(range(s.port, s.port + s.ingress_replicas))
    return [*direct, proxy_port(config)]


def _free(host: str, port: int) -> bool:
    """Whether a server could bind `port` now (as uvicorn does, with SO_REUSEADDR)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _taken(config: Config) -> list[int]:
    return [p for p in _ports(config) if not _free(config.server.host, p)]


def _describe(ports: list[int]) -> str:
    """'port 8000 (held by pid 123: uvicorn …)' for each port, as far as we can see."""
    holders: dict[int, str] = {}
    with contextlib.suppress(psutil.Error, OSError):
        for c in psutil.net_connections(kind="tcp"):
            if c.laddr and c.laddr.port in ports and c.status == psutil.CONN_LISTEN and c.pid:
                with contextlib.suppress(psutil.Error):
                    cmd = " ".join(psutil.Process(c.pid).cmdline())[:120]
                    holders[c.laddr.port] = f"held by pid {c.pid}: {cmd}"
    return ", ".join(f"port {p} ({holders.get(p, 'held by another process')})" for p in ports)


def _wait_for_ports(config: Config, timeout: float) -> None:
    """Until every port nextbest listens on is free; PortInUse after `timeout`."""
    deadline = time.monotonic() + timeout
    while taken := _taken(config):
        if time.monotonic() > deadline:
            raise PortInUse(
                f"{_describe(taken)} on {config.server.host} is taken: stop that process, "
                "or give nextbest other ports (server.port, server.proxy_port)"
            )
        time.sleep(0.1)


def _serve_running() -> bool:
    """A Serve controller already runs in this Ray cluster (then a start updates it)."""
    names = ray.util.list_named_actors(all_namespaces=True)
    return any(a["namespace"] == SERVE_NAMESPACE and "CONTROLLER" in a["name"] for a in names)


def _all_nodes_here() -> bool:
    """Every live Ray node runs on this machine (so its ports are ours to check)."""
    local = {a.address for addrs in psutil.net_if_addrs().values() for a in addrs}
    nodes = {n["NodeManagerAddress"] for n in ray.nodes() if n.get("Alive")}
    return bool(nodes) and nodes <= local | {"127.0.0.1", "localhost"}
