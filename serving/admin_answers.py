"""What the admin routes answer (models, catalog, status), as pydantic models for the
OpenAPI document; never run on the request path (see `serving/answers.py`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from decisioning.config import Config
from decisioning.stores.catalogs import CATALOG_KEYS
from serving.answers import Absent, ContextLoaded, Out

__all__ = [
    "CatalogApplied",
    "CatalogOut",
    "Deployed",
    "ModelStatsOut",
    "ModelsOut",
    "MoveProgress",
    "RolledOut",
    "ShardsOut",
    "StatusOut",
]


class Challenger(Out):
    version: str
    share: float
    shadow: bool


class ShardModels(Out):
    shard: int
    models: dict[str, str] | None = Field(description="null: the shard is not answering.")
    challengers: dict[str, Challenger] | None


class ModelsOut(Out):
    shards: list[ShardModels]


class Deployed(Out):
    deployed: str = Field(description="name@version")
    shards: int


class AliasesOut(Out):
    champion: int | None
    challenger: int | None
    share: float
    shadow: bool
    previous: list[int]


class RolledOut(AliasesOut):
    model: str
    shards: int


class VersionStats(Out):
    version: str
    alias: Literal["champion", "challenger", "shadow"] | None
    decisions: int
    impression: int
    click: int
    accept: int
    reject: int
    convert: int
    accept_rate: float | None


class ModelStats(Out):
    aliases: AliasesOut
    versions: list[VersionStats]


class ModelStatsOut(Out):
    models: dict[str, ModelStats]


CatalogOut: type[BaseModel] = create_model(  # the catalog sections as the config has them
    "CatalogOut",
    __config__=ConfigDict(extra="forbid", json_schema_serialization_defaults_required=True),
    version=(str, ...),
    **{k: (Config.model_fields[k].annotation, ...) for k in CATALOG_KEYS},  # type: ignore[call-overload]
)


class CatalogApplied(Out):
    version: str
    changed: bool
    rolled_back: bool | Absent = None
    shards: int


class Nothing(Out):
    """{}: not yet (no snapshot written, nothing recovered)."""


class Snapshot(Out):
    profiles: int
    seconds: float
    path: str


class Recovery(Out):
    generation: int
    restarts: int
    snapshot_profiles: int
    wal_records: int
    dropped_bytes: int
    seconds: float
    snapshot_s: float
    replay_s: float


class LogWriteError(Out):
    message: str = Field(description="Why the last write failed.")
    since: float = Field(description="When writes began to fail (unix seconds).")
    retries: int = Field(description="Attempts since; each waits longer (up to 30 s).")
    rows_waiting: int = Field(description="Rows kept for the next attempt (none dropped).")


class LogStatus(Out):
    rows: int
    outcomes: int
    files: int
    rewrites: int
    write_failures: int = Field(description="Failed write attempts, each retried.")
    unwritable_rows: int = Field(description="Rows no table could be built from (logged).")
    buffered: int
    write_error: LogWriteError | None = Field(
        description="The write that fails now, if one does (null once a write succeeds)."
    )


class SinkStatus(Out):
    delivered: int
    failed_attempts: int
    last_error: str | None
    retry_in_s: float


class OutboundStatus(Out):
    backlog: int
    max_backlog: int
    leased: int
    by_channel: dict[str, int]
    oldest_s: float | None
    timers: int
    next_due_s: float | None
    sinks: dict[str, SinkStatus] | Absent = Field(None, description="Per channel with a sink.")


class ShardStatus(Out):
    shard: int
    customers: int
    slots: int = Field(description="Slots the slot map gives this shard (of 16384).")
    slot_epoch: int = Field(description="The epoch of the slot map it holds (0: none).")
    endpoint: str | None = Field(
        None,
        description="Where it serves its own customers (server.shard_port; null: no port).",
    )
    frozen: list[int] | None = Field(
        description="[first, last] slot frozen here while it moves to another shard."
    )
    models: dict[str, str]
    challengers: dict[str, Challenger]
    variant_stats: dict[str, dict[str, int]]
    scorers: dict[str, Literal["native", "lightgbm"]]
    refused_models: dict[str, str] = Field(
        description="Deployed models this shard refused at its start (version: why); it "
        "serves without them."
    )
    catalog_version: str
    state_bytes: int
    durable: bool
    fenced: bool
    wal_bytes: int
    last_snapshot_s_ago: float
    snapshotting: bool
    last_snapshot: Snapshot | Nothing
    recovery: Recovery | Nothing
    logs: LogStatus | None
    outbound: OutboundStatus
    context_tables: dict[str, ContextLoaded]
    events: int
    decisions: int
    decisions_repeated: int = Field(
        description="Retried decides answered again with the decision recorded under their "
        "request_id."
    )
    outcomes: int
    duplicates: int
    erasures: int
    triggers_fired: int
    messages_queued: int
    messages_acked: int
    trigger_errors: int


class NotAnswering(Out):
    shard: int
    ready: Literal[False]


class StatusOut(Out):
    shards: list[ShardStatus | NotAnswering]


class ShardSlots(Out):
    shard: int
    ranges: list[tuple[int, int]] = Field(description="Slot ranges it owns: [first, last].")
    slots: int
    profiles: int | None = Field(description="null: the shard is not answering.")
    node: str | None = Field(description="The Ray node it runs on (null: not answering).")
    ready: bool


class MoveProgress(Out):
    operation: str | None = Field(
        description="'scale 1->3', 'move 0-99 -> 1' or 'rebalance' (null: a migration left "
        "by a stopped supervisor, being settled)."
    )
    state: Literal["running", "done", "failed"]
    target: str | None = Field(description="What was asked: '3 shards', 'slots 0-99 to 1'.")
    slots_total: int
    slots_moved: int
    profiles_moved: int
    profiles_per_s: float
    elapsed_s: float
    eta_s: float | None
    error: str | None


class ShardsOut(Out):
    epoch: int = Field(description="The slot map's epoch: it grows by one at every change.")
    shards: list[ShardSlots]
    moving: MoveProgress | None = Field(description="The last or running slot move.")
