"""`Config`: the whole config file, one typed section per concern, checked across
sections once every section is valid (see `decisioning.config.checks`)."""

from __future__ import annotations

from pydantic import Field, model_validator

from decisioning.config.auth import AuthSpec
from decisioning.config.catalog import ActionSpec
from decisioning.config.checks import CROSS_CHECKS
from decisioning.config.context import ContextFieldSpec, ContextTableSpec
from decisioning.config.delivery import DeliverySpec, TriggerSpec
from decisioning.config.fields import Ident, StrictModel
from decisioning.config.identity import IdentitySpec
from decisioning.config.logs import LogsSpec
from decisioning.config.policy import DecisioningSpec
from decisioning.config.profile import ProfileSpec
from decisioning.config.server import ServerSpec

__all__ = ["Config"]


class Config(StrictModel):
    """The whole nextbest config file."""

    channels: list[Ident] = Field(min_length=1, description="Known channels.")
    profile: ProfileSpec = Field(default_factory=ProfileSpec, description="Profile schema.")
    context: list[ContextFieldSpec] = Field(
        default_factory=list, description="Context fields usable as model features."
    )
    actions: list[ActionSpec] = Field(min_length=1, description="The action catalog.")
    decisioning: DecisioningSpec = Field(
        default_factory=DecisioningSpec, description="Arbitration settings."
    )
    server: ServerSpec = Field(default_factory=ServerSpec, description="Server settings.")
    auth: AuthSpec = Field(default_factory=AuthSpec, description="API keys and scopes.")
    logs: LogsSpec = Field(default_factory=LogsSpec, description="Decision and outcome logs.")
    triggers: list[TriggerSpec] = Field(
        default_factory=list, description="Event triggers (part of the catalog)."
    )
    context_tables: dict[Ident, ContextTableSpec] = Field(
        default_factory=dict, description="External context tables (see README)."
    )
    delivery: DeliverySpec = Field(
        default_factory=DeliverySpec, description="Outbound queue and sinks."
    )
    identity: IdentitySpec = Field(
        default_factory=IdentitySpec, description="Identifiers and how events link them."
    )

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        for check in CROSS_CHECKS:
            check(self)
        return self
