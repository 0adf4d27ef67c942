"""What the channels' routes answer, as pydantic models for the OpenAPI document (the
admin routes' are in `serving/admin_answers.py`; `serving/openapi.py` says which route
answers which, and with which error statuses).

The routes build their answers as plain dicts (from the shards' and the supervisor's
results) and `reply` encodes them as they are: these models are never run on the request
path. They describe the bodies exactly (no unknown key, `additionalProperties` only
where the keys are the deployment's own: attributes, aggregates, channels, tables,
model names), so schemathesis and the unit tests catch any drift between code and
document.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel
from pydantic.json_schema import SkipJsonSchema

__all__ = [
    "Absent",
    "Accepted",
    "ClusterSlots",
    "Acked",
    "ContextLoaded",
    "ContextPut",
    "ContextTables",
    "DecisionOut",
    "DecisionsOut",
    "Erased",
    "ErrorOut",
    "Health",
    "IdentityOut",
    "MergeOut",
    "OpenedOut",
    "OutboundOut",
    "Out",
    "ProfileOut",
    "Readiness",
    "RequestError",
]

Absent = SkipJsonSchema[None]  # a key that may be left out, but is never null
DECISION_ID = r"^d-[0-9a-f]{4}-[0-9a-f]{16}$"


class Out(BaseModel):
    """An answer body: exactly these keys."""

    model_config = ConfigDict(extra="forbid")


class ErrorDetail(Out):
    code: str = Field(description="Machine-readable, e.g. invalid_field, shard_unavailable.")
    message: str = Field(description="For people.")
    field: str | Absent = Field(None, description="The field at fault, e.g. [2].ts.")


class ErrorOut(Out):
    """Every error: 4xx and 503 (with Retry-After) alike."""

    error: ErrorDetail


class ChosenAction(Out):
    action_id: str
    group: str
    channel: str
    propensity: float
    value: float
    priority: float = Field(description="propensity × value × weight × lever.")
    model_version: str | None = Field(description="name@version that scored it, if any.")


class Removed(Out):
    """A candidate that was not eligible (consent, contact policy, a rule)."""

    action_id: str
    eligible: Literal[False]
    stage: str | Absent = None
    rule: str
    values: dict[str, Any] | Absent = Field(None, description="What the rule read.")


class Scored(Out):
    """An eligible candidate, chosen or not (`why_not`)."""

    action_id: str
    eligible: Literal[True]
    propensity: float
    value: float
    weight: float
    lever: float
    priority: float
    chosen: bool
    why_not: str | Absent = None


class DoNothing(Out):
    """Doing nothing, which competes with every action."""

    action_id: None
    do_nothing: Literal[True]
    eligible: Literal[True]
    priority: float
    chosen: bool
    contact_cost: float | Absent = None


class ChannelOption(Out):
    action_id: str | None
    priority: float | None
    cost: float
    net: float | None


class ChannelChoice(Out):
    channel: str
    reason: Literal["preferred", "best net priority", "nothing goes anywhere"]
    channels: dict[str, ChannelOption]


class DecisionOut(Out):
    """A decision: the chosen actions, best first (none: do nothing)."""

    decision_id: str = Field(pattern=DECISION_ID)
    customer_id: str
    ts: float
    channel: str
    placement: str | None
    model_version: str | None = Field(description="The versions that scored, comma-separated.")
    actions: list[ChosenAction]
    variant: Literal["champion", "challenger", "explore"]
    explanation: list[Removed | Scored | DoNothing] | Absent = Field(
        None, description="With explain: every candidate and why it won or lost."
    )
    channel_choice: ChannelChoice | Absent = Field(
        None, description='Channel "outbound": how the channel was chosen.'
    )


class RequestError(ErrorOut):
    """A request of a batch that was refused: the error, and the HTTP status POST
    /v1/decide would have answered it with."""

    status: int = Field(ge=400, le=599, description="The status /v1/decide would answer.")


class DecisionsOut(Out):
    """POST /v1/decide/batch: one result per request, in the requests' order."""

    results: list[DecisionOut | RequestError]


class OpenedOut(DecisionOut):
    message_id: str = Field(pattern=DECISION_ID, description="The message opened.")


class Accepted(Out):
    accepted: int = Field(ge=0, description="Items accepted (retried duplicates count once).")


class Acked(Out):
    acked: int = Field(ge=0)


class OutboundMessage(Out):
    id: str = Field(pattern=DECISION_ID)
    open_token: str | None = Field(description="For GET /v1/open/{token}; null: links off.")
    idempotency_key: str
    customer_id: str
    channel: str
    trigger: str
    queued_at: float
    actions: list[ChosenAction]
    decision: DecisionOut


class OutboundOut(Out):
    messages: list[OutboundMessage]
    lease_s: float


class RecentDecision(Out):
    decision_id: str = Field(pattern=DECISION_ID)
    ts: float
    channel: str
    placement: str | None
    actions: list[str]
    model_version: str | None


class ProfileOut(Out):
    customer_id: str
    known: bool
    attributes: dict[str, str | float | None]
    aggregates: dict[str, float | None]
    consent: dict[str, bool | None]
    recent_decisions: list[RecentDecision]
    shard: int


class Erased(Out):
    customer_id: str
    erased: bool
    decisions_removed: int = Field(ge=0)


class MergeEntry(Out):
    ts: float
    merge_id: str
    survivor: str
    merged: str
    reason: Literal["merge", "link"]
    had_profile: bool


class Merged(MergeEntry):
    changed: Literal[True]


class AlreadyOne(Out):
    changed: Literal[False]
    survivor: str
    merged: str
    reason: str


class MergeOut(RootModel[Merged | AlreadyOne]):
    pass


class IdentityOut(Out):
    id: str
    linked_to: str | None
    merged_into: str | None
    aliases: list[str]
    customer_id: str
    merges: list[MergeEntry]


class ContextLoaded(Out):
    version: str
    rows: int = Field(ge=0)
    loaded_at: float


class ContextTable(Out):
    key: str
    columns: dict[str, Literal["numeric", "categorical"]]
    shards: list[ContextLoaded | None] = Field(description="Per shard; null: none loaded.")


class ContextTables(RootModel[dict[str, ContextTable]]):
    pass


class ContextPut(Out):
    table: str
    version: str
    rows: int = Field(ge=0)
    shards: int


class ShardEndpoint(Out):
    shard: int
    endpoint: str | None = Field(
        description="Where the shard serves its customers itself (server.shard_port); null: "
        "no port of its own, or not answering now (send its customers to the ingress)."
    )


class ClusterSlots(Out):
    epoch: int = Field(description="The slot map's epoch: it grows by one at every change.")
    slots: list[tuple[int, int, int]] = Field(
        description="[first slot, last slot, shard] for every range, in slot order; a "
        "customer's slot is xxh3_64(utf-8 of its NFC id) % 16384."
    )
    shards: list[ShardEndpoint]


class Health(Out):
    status: Literal["ok"]


class Readiness(Out):
    ready: bool = Field(description="Every shard answers (503 when not).")
    shards: int
