"""The `actions` section: the action catalog, each action with its rules, value, levers,
volume budget and contact policy (what may change at runtime with the catalog)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from decisioning.config.fields import Duration, Ident, StrictModel

__all__ = ["ActionSpec", "BudgetSpec", "OutcomeKind", "SuppressSpec"]


OutcomeKind = Literal["impression", "click", "accept", "reject", "convert"]


class SuppressSpec(StrictModel):
    """Suppress an action for a customer after `count` outcomes of a kind in a window."""

    outcome: OutcomeKind = Field(description="The outcome that counts.")
    count: int = Field(1, ge=1, description="How many of them trigger the suppression.")
    within: Duration = Field(description="...within this window (e.g. 7d).")
    for_: Duration | None = Field(
        None, alias="for", description="How long it lasts from the last of them (default: within)."
    )

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class BudgetSpec(StrictModel):
    """A volume budget across all customers (see decisioning/policy/budgets.py)."""

    per_day: int = Field(ge=0, description="At most this many shown per UTC day, in total.")


class ActionSpec(StrictModel):
    """One entry of the action catalog: an offer, message or service action."""

    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")] = Field(
        description="Stable action id."
    )
    group: Ident = Field(description="Group/category, e.g. cards, loans, retention.")
    channels: list[str] = Field(min_length=1, description="Channels it can be delivered on.")
    value: float | str = Field(
        1.0, description="Business value: a number or an expression (rule language)."
    )
    eligibility: str | None = Field(
        None, description="May this customer get this action at all (an expression)."
    )
    applicability: str | None = Field(
        None, description="Does it make sense now, in this context (an expression)."
    )
    suitability: str | None = Field(
        None, description="Is it good for the customer (an expression)."
    )
    start: datetime | None = Field(None, description="Not offered before this time.")
    end: datetime | None = Field(None, description="Not offered from this time on.")
    lever: float = Field(1.0, ge=0, allow_inf_nan=False, description="Business lever weight.")
    model: str | None = Field(
        None, description="Name of the model that scores it; none = default_propensity."
    )
    description: str = Field("", description="Free text for people.")
    issue: Ident | None = Field(
        None, description="Business issue it serves (e.g. grow, retain), for issue levers."
    )
    budget: BudgetSpec | None = Field(
        None, description="Volume budget across all customers, e.g. {per_day: 10000}."
    )
    suppress: list[SuppressSpec] = Field(
        default_factory=list,
        description="Contact policy: e.g. [{outcome: reject, count: 1, within: 30d}] — not "
        "again for 30 days after a reject.",
    )
    mandatory: bool = Field(
        False,
        description="A service or mandatory message (e.g. a fraud alert): it may go to a "
        "customer without marketing consent when decisioning.mandatory_ignores_consent.",
    )
