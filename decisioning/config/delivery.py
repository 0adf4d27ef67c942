"""Triggers (`triggers` section: when an event decides for a channel on its own) and
the `delivery` section: the outbound queue, its sinks per channel, and open links."""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator, Field, model_validator

from decisioning.config.fields import Duration, Ident, StrictModel, json_object

__all__ = ["DeliverySpec", "ParquetSinkSpec", "SinkSpec", "TriggerSpec", "WebhookSinkSpec"]


def _listed(value: object) -> object:
    """One name or a list of names."""
    return [value] if isinstance(value, str) else value


EventTypes = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=64)]], BeforeValidator(_listed)
]


class TriggerSpec(StrictModel):
    """When an event happens (or is not followed by another in time) and a condition
    holds, decide for a channel and queue what is chosen for delivery."""

    id: Ident = Field(description="Stable trigger id (in the queued message and the logs).")
    event: EventTypes = Field(
        min_length=1, description="Event type(s) that fire or arm it (one or a list)."
    )
    when: str | None = Field(
        None,
        description="Condition at the moment of the event, after it is applied "
        "(rule language; also event.x for the event's properties).",
    )
    crossing: bool = Field(
        False,
        description="Fire only when `when` turns true with this event (it was false "
        "before): a score or count crossing a threshold fires once per crossing.",
    )
    not_followed_by: EventTypes = Field(
        default_factory=list,
        description="Arm a timer instead of firing: these event types before it is due "
        "cancel it; otherwise it fires `within` after the (latest) triggering event.",
    )
    within: Duration | None = Field(None, description="The wait of not_followed_by (e.g. 30m).")
    channel: str = Field(
        description="The channel to decide for, or 'outbound' to let "
        "decisioning.outbound choose it."
    )
    placement: str | None = Field(None, description="Placement passed to the decision.")
    description: str = Field("", description="Free text for people.")

    @model_validator(mode="after")
    def _shape(self) -> TriggerSpec:
        if bool(self.not_followed_by) != (self.within is not None):
            raise ValueError(f"trigger {self.id!r}: not_followed_by and within go together")
        if self.crossing and (self.when is None or self.not_followed_by):
            raise ValueError(f"trigger {self.id!r}: crossing needs `when` and no not_followed_by")
        return self


class WebhookSinkSpec(StrictModel):
    """POST each queued message as JSON, with `Idempotency-Key: <decision_id>`."""

    url: Annotated[str, Field(pattern=r"^https?://")] = Field(description="Where to POST.")
    timeout_s: float = Field(5.0, gt=0, le=120, description="Per request.")
    token_env: str | None = Field(
        None, description="Environment variable whose value is sent as a Bearer token."
    )


class ParquetSinkSpec(StrictModel):
    """Write queued messages to Parquet files (one per delivered batch)."""

    path: str = Field(description="Directory (local path or pyarrow filesystem URI).")


class SinkSpec(StrictModel):
    """Exactly one way to deliver a channel's messages."""

    webhook: WebhookSinkSpec | None = Field(None, description="HTTP POST per message.")
    parquet: ParquetSinkSpec | None = Field(None, description="Parquet files.")

    @model_validator(mode="after")
    def _one(self) -> SinkSpec:
        if (self.webhook is None) == (self.parquet is None):
            raise ValueError("a sink is either webhook or parquet")
        return self


class DeliverySpec(StrictModel):
    """The outbound queue and how its messages leave (see README, Triggers)."""

    sinks: Annotated[dict[str, SinkSpec], BeforeValidator(json_object)] = Field(
        default_factory=dict,
        description="Per channel; a channel without a sink is pulled with GET /v1/outbound.",
    )
    max_backlog: int = Field(
        100_000,
        ge=1,
        description="Undelivered messages per shard; when full, events that would fire a "
        "trigger get 503 outbound_full and due timers wait.",
    )
    lease_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="A message handed out and not acked within this "
        "is handed out again (at-least-once).",
    )
    batch: int = Field(100, ge=1, le=1000, description="Messages per delivery attempt.")
    retry_max_s: float = Field(
        60.0, gt=0, description="Longest wait between attempts of a failing sink."
    )
    tick_s: float = Field(0.5, gt=0, le=60, description="How often due timers are checked.")
    link_key_env: str | None = Field(
        None,
        pattern=r"^[A-Z_][A-Z0-9_]*$",
        description="Environment variable holding the secret that seals open links; when "
        "set, each message carries an `open_token` for GET /v1/open/{token}.",
    )
    link_ttl: Duration = Field(
        30 * 86400.0, description="How long an open link decides (e.g. 30d)."
    )
