"""Let a replacement ingress replica take its port back at once (Ray Serve 2.60).

The hazard: in direct-ingress mode each replica binds its port itself, without
SO_REUSEADDR. When a replica dies under load, its side of every connection it was
serving lingers in TIME_WAIT for a minute, so the replacement's bind fails with
EADDRINUSE. Serve then *blocks* that port for the controller's lifetime, and with one
port per replica (`port … port + ingress_replicas`) no replica can start again: the
ingress never comes back (seen in `tests/integration/test_failures.py`).

The fix: the replica binds with SO_REUSEADDR (and SO_REUSEPORT, which Serve sets
together with it), as every other server does. TIME_WAIT no longer blocks a bind, and a
replica that replaces one still draining shares the port with it until it is gone.
Serve calls `start_asgi_http_server(..., enable_so_reuseport=False)` from
`ray.serve._private.replica`; this module wraps that name there, once per process, when
`serving.app` is imported (which every ingress replica does before it binds).
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["reuse_ports"]

log = logging.getLogger("nextbest.serving")


def reuse_ports() -> bool:
    """Make Serve's direct-ingress replicas bind with SO_REUSEADDR; False (logged) when
    this Ray has no such hook, where a killed replica may not get its port back."""
    try:
        from ray.serve._private import replica
    except ImportError:
        return False
    start = getattr(replica, "start_asgi_http_server", None)
    if start is None:
        log.warning("Ray Serve has no start_asgi_http_server: replica ports are bound as is")
        return False
    if getattr(start, "_nextbest_reuse", False):
        return True

    async def start_reusing(*args: Any, **kwargs: Any) -> Any:
        kwargs["enable_so_reuseport"] = True
        return await start(*args, **kwargs)

    start_reusing._nextbest_reuse = True  # type: ignore[attr-defined]
    replica.start_asgi_http_server = start_reusing
    return True
