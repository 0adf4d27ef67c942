"""Context: request fields models may use (`context` section), and the external tables
looked up by key in rules (`context_tables` section)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from decisioning.config.fields import Ident, StrictModel

__all__ = ["ContextFieldSpec", "ContextTableSpec"]


class ContextFieldSpec(StrictModel):
    """A request context field that models may use as feature `context_<name>`."""

    name: Ident = Field(description="Context key.")
    type: Literal["numeric", "categorical"] = Field(description="Numeric or categorical.")
    values: list[str] | None = Field(None, description="Allowed values if categorical.")
    lookup: str | None = Field(
        None,
        description="An expression that fills the field when the request does not give it, "
        "e.g. context.weather[profile.region].temp_c: a context table joined into the "
        "model's features (and visible to rules as context.<name>).",
    )


class ContextTableSpec(StrictModel):
    """A table that is not per customer (weather per zip code, store stock, campaign
    calendar), pushed or loaded at runtime and looked up in rules by key:
    `context.<table>[<key expression>].<column>`."""

    key: str = Field(min_length=1, max_length=64, description="The key column.")
    columns: dict[Ident, Literal["numeric", "categorical"]] = Field(
        min_length=1, description="The looked-up columns and their types."
    )
    max_rows: int = Field(1_000_000, ge=1, description="Larger loads are refused.")
