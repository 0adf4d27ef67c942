"""Bodies on the wire: msgpack (the default: smaller, faster to parse on both sides) or
JSON. An answer is decoded by its own Content-Type, whatever was asked: an error from
something in front of the server may come as text."""

from __future__ import annotations

import json
from typing import Any

import msgpack

__all__ = ["JSON", "MSGPACK", "decode", "encode", "headers"]

JSON = "application/json"
MSGPACK = "application/msgpack"


def headers(use_msgpack: bool, api_key: str | None) -> dict[str, str]:
    """The headers every request of a client carries."""
    media = MSGPACK if use_msgpack else JSON
    out = {"content-type": media, "accept": media, "user-agent": "nextbest-client"}
    if api_key:
        out["authorization"] = f"Bearer {api_key}"
    return out


def encode(value: Any, use_msgpack: bool) -> bytes:
    if use_msgpack:
        return bytes(msgpack.packb(value, use_bin_type=True))
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()


def decode(content: bytes, content_type: str | None) -> Any:
    """The answer's value; its text when it is neither msgpack nor JSON (or is broken)."""
    if not content:
        return None
    ctype = (content_type or "").split(";")[0].strip().lower()
    try:
        if "msgpack" in ctype:
            return msgpack.unpackb(content, raw=False)
        if ctype == JSON or ctype.endswith("+json"):
            return json.loads(content)
    except (ValueError, msgpack.UnpackException):
        pass
    return content.decode("utf-8", "replace")
