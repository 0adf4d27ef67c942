"""The `profile` section: what each customer's live profile holds (attributes set by
`profile_update` events, aggregates computed from events as they arrive), and how far an
event's timestamp may stray from the server's clock."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from decisioning.config.fields import Duration, Ident, Scalar, StrictModel

__all__ = ["AggregateKind", "AggregateSpec", "AttributeSpec", "ProfileSpec"]


class AttributeSpec(StrictModel):
    """A customer attribute set by `profile_update` events."""

    name: Ident = Field(description="Attribute name; also its feature name.")
    type: Literal["numeric", "categorical"] = Field(description="Numeric or categorical.")
    values: list[str] | None = Field(
        None, description="The allowed values of a categorical attribute, in code order."
    )

    @model_validator(mode="after")
    def _values_for_categorical(self) -> AttributeSpec:
        if self.type == "categorical" and not self.values:
            raise ValueError("a categorical attribute needs 'values'")
        if self.type == "numeric" and self.values is not None:
            raise ValueError("'values' is only for categorical attributes")
        return self


AggregateKind = Literal["count", "sum", "min", "max", "last", "time_since", "decayed_count"]
_NEEDS_PROPERTY = {"sum", "min", "max", "last"}


class AggregateSpec(StrictModel):
    """A feature computed from events as they arrive, optionally over a sliding window."""

    name: Ident = Field(description="Feature name.")
    kind: AggregateKind = Field(description="What is computed from the matching events.")
    event: str = Field(min_length=1, description="Event type that feeds it.")
    property: str | None = Field(
        None, description="Numeric event property to aggregate (sum, min, max, last)."
    )
    where: dict[str, Scalar] | None = Field(
        None, description="Only events whose properties equal all of these values count."
    )
    window: Duration | None = Field(
        None, description="Sliding window such as '1h', '24h', '7d', '30d'; absent = all time."
    )
    buckets: int = Field(
        6,
        ge=1,
        le=64,
        description="Windowed aggregates keep this many time buckets; the window slides "
        "by window/buckets, so expiry is exact to that granularity.",
    )
    half_life: Duration | None = Field(None, description="Half-life of a decayed_count.")

    @model_validator(mode="after")
    def _check_kind(self) -> AggregateSpec:
        if self.kind in _NEEDS_PROPERTY and not self.property:
            raise ValueError(f"a {self.kind} aggregate needs 'property'")
        if self.kind == "decayed_count" and self.half_life is None:
            raise ValueError("a decayed_count needs 'half_life'")
        if self.kind != "decayed_count" and self.half_life is not None:
            raise ValueError("'half_life' is only for decayed_count")
        if self.kind in ("time_since", "decayed_count") and self.window is not None:
            raise ValueError(f"a {self.kind} aggregate takes no 'window'")
        return self


class ProfileSpec(StrictModel):
    """What each customer's live profile holds."""

    attributes: list[AttributeSpec] = Field(default_factory=list, description="Attributes.")
    aggregates: list[AggregateSpec] = Field(default_factory=list, description="Aggregates.")
    max_future: Duration = Field(
        300.0,
        description="How far ahead of the server's clock an event's ts may be (clock skew); "
        "later events are refused, as they would move window clocks on and empty windows.",
    )
    max_age: Duration = Field(
        400 * 86400.0,
        gt=0,
        description="How far back an event's ts may be; older events are refused (raise it "
        "for backfills).",
    )
