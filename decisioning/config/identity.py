"""The `identity` section: identifier kinds besides the customer id, which event
properties link them, and how often unfinished merges are swept."""

from __future__ import annotations

from pydantic import Field

from decisioning.config.fields import Ident, StrictModel

__all__ = ["IdentitySpec"]


class IdentitySpec(StrictModel):
    """Identifiers besides the customer id (see README, Identity)."""

    kinds: list[Ident] = Field(
        default_factory=list,
        description="Identifier kinds, e.g. [email_hash, device_id, cookie_id, phone_hash]: "
        "'<kind>:<value>' may stand wherever a customer id goes.",
    )
    links: dict[str, list[Ident]] = Field(
        default_factory=dict,
        description="Per event type, the properties naming identifiers that the event "
        "links to its customer, e.g. {login: [cookie_id, device_id]}.",
    )
    sweep_s: float = Field(
        5.0,
        ge=0,
        le=3600,
        description="Every this many seconds each ingress replica finishes merges left "
        "unfinished (e.g. a login's merge cut short by a shard restart); 0: no sweep (they "
        "still finish at the identifier's next link or resolution).",
    )
