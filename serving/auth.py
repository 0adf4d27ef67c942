"""API keys and scopes: who may call which route.

A client sends its key as `Authorization: Bearer <key>` (or `X-API-Key: <key>`). The
config holds only each key's sha256; the presented key is hashed and compared with every
configured hash in constant time (`hmac.compare_digest`, no early exit). A missing or
unknown key is 401, a known key without the route's scope 403. Keys are never logged or
echoed back.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from decisioning.config import AuthSpec
from serving.wire import WireError

__all__ = ["KeyRing", "new_key", "sha256_hex"]

KEY_PREFIX = "nb_"


def new_key() -> str:
    """A fresh random API key (256 bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def sha256_hex(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class KeyRing:
    """The configured keys; `check` raises WireError(401/403) or returns the key's name."""

    def __init__(self, spec: AuthSpec) -> None:
        self.enabled = spec.enabled
        self.keys = [(bytes.fromhex(k.sha256), k.name, frozenset(k.scopes)) for k in spec.keys]

    def check(self, headers: object, scope: str | None) -> str | None:
        """`headers`: a mapping with lower-case `.get` (Starlette's Headers); `scope`
        None: a key with any scope will do."""
        if not self.enabled:
            return None
        get = headers.get  # type: ignore[attr-defined]
        auth = get("authorization") or ""
        key = auth[7:].strip() if auth[:7].lower() == "bearer " else (get("x-api-key") or "")
        if not key:
            raise WireError(
                401,
                "unauthenticated",
                "an API key is required: Authorization: Bearer <key> (or X-API-Key: <key>)",
            )
        digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
        found: tuple[str, frozenset[Any]] | None = None
        for known, name, scopes in self.keys:  # every one, whatever matched before
            if hmac.compare_digest(digest, known):
                found = (name, scopes)
        if found is None:
            raise WireError(401, "unauthenticated", "unknown API key")
        name, scopes = found
        if scope is None and not scopes:
            raise WireError(403, "forbidden", "this API key has no scope")
        if scope is not None and scope not in scopes:
            raise WireError(403, "forbidden", f"this API key lacks the scope {scope!r}")
        return name
