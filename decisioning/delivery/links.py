"""Open links: a token in an outbound message that lets the message decide its content
when it is opened (send-time recomputation), without an API key.

The token is the credential for one thing only: a decision for one customer on one
channel, until it expires. It is AES-256-GCM sealed (the customer id inside is neither
readable nor changeable) with a key derived from the secret in the environment variable
`delivery.link_key_env`, which each process resolves at its edge (`Secrets.link_key`,
decisioning/config/secrets.py); without that variable there are no open links.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass

import msgpack
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from decisioning.errors import InvalidInput

__all__ = ["LinkError", "OpenLink", "open_link", "seal_link"]

_AAD = b"nextbest-open-v1"
MAX_TOKEN = 1024


class LinkError(InvalidInput):
    """A token that is not ours, damaged, or expired (`code`: invalid_link, link_expired)."""

    code = "invalid_link"


@dataclass(frozen=True, slots=True)
class OpenLink:
    customer_id: str
    channel: str
    placement: str | None
    message_id: str
    expires: float


def seal_link(key: bytes, link: OpenLink) -> str:
    """A token for `link`, sealed with `key` under a fresh nonce."""
    nonce = os.urandom(12)
    data = msgpack.packb(
        [link.customer_id, link.channel, link.placement, link.message_id, link.expires]
    )
    sealed = AESGCM(key).encrypt(nonce, data, _AAD)
    return base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=").decode()


def open_link(key: bytes, token: str, now: float) -> OpenLink:
    """The link a token seals, if `key` sealed it and it has not expired at `now`."""
    if len(token) > MAX_TOKEN:
        raise LinkError("not an open link", field="token")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = AESGCM(key).decrypt(raw[:12], raw[12:], _AAD)
        customer_id, channel, placement, message_id, expires = msgpack.unpackb(data)
    except (ValueError, InvalidTag, msgpack.UnpackException, TypeError):
        raise LinkError(
            "not an open link (or not one of this deployment's)", field="token"
        ) from None
    if now >= expires:
        raise LinkError("this link has expired", field="token", code="link_expired")
    return OpenLink(customer_id, channel, placement, message_id, float(expires))
