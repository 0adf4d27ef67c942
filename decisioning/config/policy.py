"""The `decisioning` section: how candidates are arbitrated (thresholds, levers, context
weights, exploration, consent, contact caps, group rules and outbound channel choice)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from decisioning.config.fields import Duration, StrictModel

__all__ = [
    "OUTBOUND",
    "ChannelCapSpec",
    "ContextWeightSpec",
    "DecisioningSpec",
    "ExplorationSpec",
    "GroupCapSpec",
    "GroupRulesSpec",
    "OutboundSpec",
]


class ChannelCapSpec(StrictModel):
    """At most so many contacts (decisions that showed an action) per customer."""

    per_day: int | None = Field(None, ge=0, description="In any 24 hours.")
    per_week: int | None = Field(None, ge=0, description="In any 7 days.")


class GroupCapSpec(StrictModel):
    """At most `count` actions of a group shown to a customer within a window."""

    count: int = Field(ge=0, description="How many.")
    within: Duration = Field(description="The window (e.g. 7d).")


class ContextWeightSpec(StrictModel):
    """A multiplier applied to the priority of every candidate for which `when` holds."""

    when: str = Field(description="Expression over context, profile and action fields.")
    weight: float = Field(ge=0, allow_inf_nan=False, description="Multiplier.")


class ExplorationSpec(StrictModel):
    """Exploration of the first position (see decisioning/policy/exploration.py)."""

    policy: Literal["none", "epsilon_greedy", "thompson"] = Field(
        "none", description="none: always the highest priority first."
    )
    epsilon: float = Field(0.05, gt=0, le=1, description="epsilon_greedy: share of random picks.")
    strength: float = Field(
        100.0, gt=0, description="thompson: pseudo-observations behind each propensity."
    )
    draws: int = Field(
        256, ge=16, le=100_000, description="thompson: draws to estimate the logged probability."
    )


class GroupRulesSpec(StrictModel):
    """Rules every action of a group must pass too (checked before the action's own)."""

    eligibility: str | None = Field(None, description="May this customer get the group at all.")
    applicability: str | None = Field(None, description="Does the group make sense now.")
    suitability: str | None = Field(None, description="Is the group good for the customer.")


OUTBOUND = "outbound"  # the channel name that asks for an outbound decision


class OutboundSpec(StrictModel):
    """Channel choice for outbound decisions (`"channel": "outbound"` on /v1/decide)."""

    channels: list[str] = Field(
        default_factory=list, description="Channels an outbound decision may use, in order."
    )
    costs: dict[str, Annotated[float, Field(ge=0, allow_inf_nan=False)]] = Field(
        default_factory=dict, description="Cost of a contact per channel (priority units)."
    )
    rules: dict[str, str] = Field(
        default_factory=dict,
        description="Per channel, an expression an action must meet to go on it in an "
        "outbound decision (e.g. call_center: 'action.value >= 500').",
    )
    preference_attribute: str | None = Field(
        None, description="A categorical profile attribute naming the customer's preferred channel."
    )


class DecisioningSpec(StrictModel):
    """Arbitration settings."""

    do_nothing_threshold: float = Field(
        0.0,
        ge=0,
        allow_inf_nan=False,
        description="Actions whose priority is below it are "
        "dropped; when none is left the answer is [] (do nothing).",
    )
    default_limit: int = Field(1, ge=1, le=100, description="Actions returned by default.")
    max_limit: int = Field(20, ge=1, le=100, description="Largest `limit` a request may ask.")
    default_propensity: float = Field(
        0.0, ge=0, le=1, description="Propensity of an action whose model is not loaded."
    )
    context_weights: list[ContextWeightSpec] = Field(
        default_factory=list, description="Context weights, multiplied when they apply."
    )
    recent_decisions: int = Field(
        10, ge=0, le=1000, description="Decisions kept per customer for the profile view."
    )
    exploration: ExplorationSpec = Field(
        default_factory=ExplorationSpec, description="Exploration of the first position."
    )
    consent: dict[str, Literal["opt_in", "opt_out", "none"]] = Field(
        default_factory=dict,
        description="Consent per channel: opt_in (only with a recorded yes), opt_out "
        "(unless a recorded no; the default for a channel not listed), none (not needed).",
    )
    mandatory_ignores_consent: bool = Field(
        False, description="Mandatory actions go without consent (they never do by default)."
    )
    do_nothing_value: float | str = Field(
        0.0,
        description="The priority of doing nothing, a number or an expression over profile, "
        "consent and context (e.g. '0.02 * profile.clv'): it competes in arbitration, and "
        "only actions above it are shown.",
    )
    outbound: OutboundSpec = Field(
        default_factory=OutboundSpec, description="Channel choice for outbound decisions."
    )
    channel_caps: dict[str, ChannelCapSpec] = Field(
        default_factory=dict, description="Contacts per customer per channel (contact policy)."
    )
    group_caps: dict[str, GroupCapSpec] = Field(
        default_factory=dict, description="Actions of a group shown per customer in a window."
    )
    groups: dict[str, GroupRulesSpec] = Field(
        default_factory=dict, description="Eligibility, applicability, suitability per group."
    )
    max_per_group: int | None = Field(
        None, ge=1, description="Diversity: at most this many actions of one group in an answer."
    )
    group_levers: dict[str, Annotated[float, Field(ge=0, allow_inf_nan=False)]] = Field(
        default_factory=dict, description="Lever per action group, times the action's lever."
    )
    issue_levers: dict[str, Annotated[float, Field(ge=0, allow_inf_nan=False)]] = Field(
        default_factory=dict, description="Lever per business issue, times the action's lever."
    )
