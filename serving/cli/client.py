"""The CLI's one HTTP client: where it calls (the channels' port, or the admin port for
admin calls), with which API key and certificate, and what a refusal or an unreachable
server says. Every command that talks to a running server calls through here."""

from __future__ import annotations

import os
import ssl
from typing import Any

import httpx

from decisioning.config import Config
from serving.cli.common import fail

__all__ = ["Unreachable", "call", "client_opts", "demo_key_path", "headers", "request", "url"]


class Unreachable(Exception):
    """The server could not be reached at `base` (the message says why)."""

    def __init__(self, base: str, error: httpx.HTTPError) -> None:
        super().__init__(f"cannot reach the server at {base}: {error}")


def url(config: Config, given: str | None, admin: bool = False) -> str:
    """The URL the CLI calls: the channels' port, or for admin calls the admin port
    when there is one; a wildcard bind address is called on localhost."""
    s = config.server
    scheme = "https" if s.tls_certfile else "http"
    host, port = (s.admin_host, s.admin_port) if admin and s.admin_port else (s.host, s.port)
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return given or f"{scheme}://{host}:{port}"


def demo_key_path(config: Config) -> str | None:
    """Where `serve --demo` keeps its all-scopes demo key (a local data dir only)."""
    root = config.server.data_dir.removeprefix("file://")
    return None if "://" in root else os.path.join(root, "demo-api-key")


def headers(config: Config) -> dict[str, str]:
    """The API key of the CLI's own calls: NEXTBEST_API_KEY, else the demo key if any."""
    key = os.environ.get("NEXTBEST_API_KEY")
    path = demo_key_path(config)
    if not key and path and os.path.exists(path):
        with open(path) as f:
            key = f.read().strip()
    return {"authorization": f"Bearer {key}"} if key else {}


def client_opts(config: Config) -> dict[str, Any]:
    """httpx options of the CLI's own calls: its API key, and with TLS the configured
    certificate as the one to trust (a self-signed one works)."""
    opts: dict[str, Any] = {"headers": headers(config)}
    if config.server.tls_certfile:
        opts["verify"] = ssl.create_default_context(cafile=config.server.tls_certfile)
    return opts


def request(
    cfg: Config,
    given: str | None,
    method: str,
    path: str,
    *,
    admin: bool = False,
    timeout: float = 30,
    extra_headers: dict[str, str] | None = None,
    **body: Any,
) -> httpx.Response:
    """One call to the server (`body`: httpx's json= or content=), whatever it answers;
    Unreachable when it cannot be made."""
    base = url(cfg, given, admin=admin)
    opts = client_opts(cfg)
    opts["headers"] = {**opts["headers"], **(extra_headers or {})}
    try:
        return httpx.request(method, f"{base}{path}", timeout=timeout, **opts, **body)
    except httpx.HTTPError as e:
        raise Unreachable(base, e) from None


def call(
    cfg: Config,
    given: str | None,
    method: str,
    path: str,
    *,
    failed: str | None = None,
    **how: Any,
) -> Any:
    """`request`'s JSON answer, or exit 1 saying why it was refused or could not be made
    (`failed`: what a refusal says first, with the body's start, instead of `refused`
    with the error's message)."""
    try:
        r = request(cfg, given, method, path, **how)
    except Unreachable as e:
        raise fail(str(e)) from None
    if r.status_code != 200:
        if failed is not None:
            raise fail(f"{failed} ({r.status_code}): {r.text[:300]}")
        raise fail(f"refused ({r.status_code}): {r.json().get('error', {}).get('message')}")
    return r.json()


def admin_post(cfg: Config, given: str | None, path: str, body: dict[str, Any]) -> Any:
    """An admin POST (a rollout, a catalog rollback), which may take minutes."""
    return call(cfg, given, "POST", path, admin=True, timeout=300, json=body)
