"""The `auth` section: API keys (by their sha256) and scopes, the admin API switch, and
the *name* of the environment variable holding the model signing key (the key itself is
read at the edge: see `decisioning.config.secrets`)."""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import BeforeValidator, Field, model_validator

from decisioning.config.fields import Ident, StrictModel, json_object

__all__ = ["SCOPES", "ApiKeySpec", "AuthSpec", "Scope"]


Scope = Literal[
    "events:write",
    "decide",
    "profiles:read",
    "profiles:erase",
    "outbound",
    "context:write",
    "identities:write",
    "admin",
]
SCOPES: tuple[str, ...] = get_args(Scope)


class ApiKeySpec(StrictModel):
    """A client's API key, by the sha256 of the key (the key itself is never stored)."""

    name: Ident = Field(description="Who holds the key (never the key itself).")
    sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$",
        description="Hex sha256 of the key; `nextbest keys new` makes a key and prints this.",
    )
    scopes: list[Scope] = Field(
        description="events:write (events, outcomes), decide, profiles:read, profiles:erase, "
        "admin (models, status)."
    )


class AuthSpec(StrictModel):
    """Who may call the API; every field can be set by NEXTBEST_AUTH_<FIELD>."""

    enabled: bool = Field(
        True,
        description="false lets every request in; only for a closed network, and the server "
        "says so at start.",
    )
    keys: Annotated[list[ApiKeySpec], BeforeValidator(json_object)] = Field(
        default_factory=list,
        description="The API keys (as JSON in NEXTBEST_AUTH_KEYS); names must be unique.",
    )
    admin_api: bool = Field(
        True, description="false: the admin routes (models, status) are not served at all."
    )
    model_key_env: str | None = Field(
        None,
        pattern=r"^[A-Z_][A-Z0-9_]*$",
        description="Name of the environment variable holding the HMAC-SHA256 key models "
        "are signed with; when set, a model without a valid signature is refused.",
    )

    @model_validator(mode="after")
    def _unique(self) -> AuthSpec:
        names = [k.name for k in self.keys]
        hashes = [k.sha256 for k in self.keys]
        if len(set(names)) != len(names) or len(set(hashes)) != len(hashes):
            raise ValueError("API key names and keys must be unique")
        return self
