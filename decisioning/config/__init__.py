"""The typed config tree: profile schema, catalog, decisioning and server settings.

Loaded once at the edge (see `decisioning.config.loader.load_config`); the core receives these
objects and never reads environment variables itself.
"""

from __future__ import annotations

import json
import os
import re
from datetime import datetime
from typing import Annotated, Literal, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from decisioning.errors import ModelIntegrityError

__all__ = [
    "ActionSpec",
    "AggregateSpec",
    "AttributeSpec",
    "Config",
    "ContextFieldSpec",
    "ContextWeightSpec",
    "DecisioningSpec",
    "ProfileSpec",
    "ServerSpec",
    "parse_duration",
]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_IDENT = r"^[a-z][a-z0-9_]{0,62}$"


def parse_duration(value: object) -> float:
    """'90s', '15m', '24h', '7d', '2w' or a number of seconds -> seconds (float)."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '24h'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    else:
        raise ValueError(f"{value!r} is not a duration (examples: '90s', '15m', '24h', '7d')")
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


def _json_object(value: object) -> object:
    """A mapping given as JSON text (environment overrides) is parsed; the rest as is."""
    return json.loads(value) if isinstance(value, str) else value


Ident = Annotated[str, Field(pattern=_IDENT)]
Scalar = str | int | float | bool


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AttributeSpec(_Model):
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


class AggregateSpec(_Model):
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


class ProfileSpec(_Model):
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


class ContextFieldSpec(_Model):
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


OutcomeKind = Literal["impression", "click", "accept", "reject", "convert"]


class SuppressSpec(_Model):
    """Suppress an action for a customer after `count` outcomes of a kind in a window."""

    outcome: OutcomeKind = Field(description="The outcome that counts.")
    count: int = Field(1, ge=1, description="How many of them trigger the suppression.")
    within: Duration = Field(description="...within this window (e.g. 7d).")
    for_: Duration | None = Field(
        None, alias="for", description="How long it lasts from the last of them (default: within)."
    )

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ChannelCapSpec(_Model):
    """At most so many contacts (decisions that showed an action) per customer."""

    per_day: int | None = Field(None, ge=0, description="In any 24 hours.")
    per_week: int | None = Field(None, ge=0, description="In any 7 days.")


class GroupCapSpec(_Model):
    """At most `count` actions of a group shown to a customer within a window."""

    count: int = Field(ge=0, description="How many.")
    within: Duration = Field(description="The window (e.g. 7d).")


class BudgetSpec(_Model):
    """A volume budget across all customers (see decisioning/policy/budgets.py)."""

    per_day: int = Field(ge=0, description="At most this many shown per UTC day, in total.")


class ActionSpec(_Model):
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


class ContextWeightSpec(_Model):
    """A multiplier applied to the priority of every candidate for which `when` holds."""

    when: str = Field(description="Expression over context, profile and action fields.")
    weight: float = Field(ge=0, allow_inf_nan=False, description="Multiplier.")


class ExplorationSpec(_Model):
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


class GroupRulesSpec(_Model):
    """Rules every action of a group must pass too (checked before the action's own)."""

    eligibility: str | None = Field(None, description="May this customer get the group at all.")
    applicability: str | None = Field(None, description="Does the group make sense now.")
    suitability: str | None = Field(None, description="Is the group good for the customer.")


OUTBOUND = "outbound"  # the channel name that asks for an outbound decision


class OutboundSpec(_Model):
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


class DecisioningSpec(_Model):
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


class ServerSpec(_Model):
    """Where and how the server runs; every field can be set by NEXTBEST_<FIELD>."""

    host: str = Field("127.0.0.1", description="HTTP bind address.")
    port: int = Field(8000, ge=1, le=65535, description="HTTP port channels call.")
    serving_path: Literal["direct", "proxy"] = Field(
        "direct",
        description="direct: Serve's throughput-optimized direct ingress, the ingress replica "
        "listens on `port` itself (about 10x the default proxy's throughput); proxy: Serve's "
        "default HTTP proxy listens on `port`.",
    )
    proxy_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="In direct mode, where Serve's own (slower) proxy listens; default port + 100.",
    )
    shards: int = Field(2, ge=1, le=16384, description="Number of shard actors.")
    data_dir: str = Field("data", description="Data dir: model registry, logs, snapshots.")
    ingress_replicas: int = Field(1, ge=1, description="Serve ingress replicas.")
    drain_s: float = Field(
        2.0,
        ge=0,
        le=600,
        description="Direct mode: seconds a stopping ingress replica keeps serving (Serve's "
        "default is 30, for load balancers to notice); raise it behind a load balancer.",
    )
    max_ongoing_requests: int = Field(
        1024,
        ge=1,
        description="Requests an ingress replica keeps waiting on shards at once; beyond it "
        "answers 503 `overloaded` with Retry-After at once instead of queueing without bound.",
    )
    max_queued_requests: int = Field(
        256,
        ge=1,
        description="Requests Serve holds for an ingress replica too busy to take them in; "
        "beyond it Serve itself answers 503 with Retry-After (plain text).",
    )
    request_timeout_s: float = Field(
        2.0,
        gt=0,
        le=600,
        description="Longest a request waits for its shard; then 503 `shard_timeout` with "
        "Retry-After (events of a timed-out request may have been applied: retry them with "
        "the same event_id and they count once).",
    )
    scorer: Literal["native", "lightgbm"] = Field(
        "native",
        description="native: models compiled to machine code with lleaves (same propensities, "
        "about 5x faster; compiled once per model at deploy, checked against LightGBM on "
        "load, LightGBM where that fails); lightgbm: always Booster.predict.",
    )
    max_batch: int = Field(1000, ge=1, description="Largest event batch accepted.")
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Largest request body.")
    max_context_bytes: int = Field(
        64 << 20, ge=1024, description="Largest context table body (PUT /v1/context/{table})."
    )
    tls_certfile: str | None = Field(
        None,
        description="PEM certificate (chain) for HTTPS on `port`; with tls_keyfile. Serve's own "
        "SSL options, so the ingress replica itself speaks TLS.",
    )
    tls_keyfile: str | None = Field(None, description="PEM private key for tls_certfile.")
    admin_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="Serve the admin API (models, status) on this port only, apart from the "
        "channels' port (which then answers 404 for it); unset: on `port`, with the admin scope.",
    )
    admin_host: str = Field(
        "127.0.0.1",
        description="Bind address of the admin port: keep it on localhost or a private network.",
    )
    max_id_length: int = Field(
        128, ge=8, le=1024, description="Longest customer or event id (characters, after NFC)."
    )
    max_string_length: int = Field(
        256, ge=8, le=65536, description="Longest string value in properties and context."
    )
    max_properties: int = Field(
        64, ge=1, le=4096, description="Most keys in an event's properties or a context."
    )
    max_abs_number: float = Field(
        1e15,
        gt=0,
        le=1e30,
        description="Largest magnitude of a number in properties or context (profiles hold "
        "float32; larger values would turn into infinity).",
    )
    max_depth: int = Field(
        8, ge=4, le=64, description="Deepest nesting of arrays and objects in a request body."
    )
    namespace: str = Field("nextbest", description="Ray namespace of the named actors.")
    durable: bool = Field(
        True,
        description="Write-ahead log and snapshots under <data_dir>/shards/<i> (a local or "
        "shared POSIX path); false keeps state in memory only.",
    )
    fsync: Literal["always", "batch", "none"] = Field(
        "batch",
        description="always: fsync each record; batch: one fsync per shard call, before its "
        "answers (group commit); none: leave it to the OS (a lost machine can lose the "
        "last ~30 s; a killed process loses nothing in every mode).",
    )
    snapshot_every_s: float = Field(
        600.0, gt=0, description="Snapshot a shard that changed at least this often."
    )
    snapshot_wal_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="...or as soon as its log grows past this."
    )
    idempotency_keys: int = Field(
        1_000_000,
        ge=0,
        description="Event ids (and outcome keys) each shard remembers to drop retried duplicates.",
    )
    state_dir: str | None = Field(
        None,
        description="Where shards keep their WAL and snapshots (<state_dir>/<shard>): a local "
        "or mounted POSIX path, shared by every node on a cluster (NFS, EFS, Filestore) so a "
        "shard can come back on another node. Default <data_dir>/shards; must be set when "
        "data_dir is an object store URI.",
    )
    shard_resources: Annotated[dict[str, float], BeforeValidator(_json_object)] = Field(
        default_factory=dict,
        description="Custom Ray resources each shard actor asks for, to keep shards on the "
        'nodes that offer them (e.g. {"nextbest_shard": 0.001} with that resource on the '
        "shard-worker node type); as JSON in NEXTBEST_SHARD_RESOURCES.",
    )

    @model_validator(mode="after")
    def _tls_pair(self) -> ServerSpec:
        if (self.tls_certfile is None) != (self.tls_keyfile is None):
            raise ValueError("tls_certfile and tls_keyfile go together")
        return self

    @model_validator(mode="after")
    def _admin_port_apart(self) -> ServerSpec:
        if self.admin_port is None:
            return self
        direct = self.serving_path == "direct"
        taken = {self.port, self.proxy_port or (self.port + 100 if direct else self.port)}
        if direct:
            taken |= set(range(self.port, self.port + self.ingress_replicas + 1))
        if self.admin_port in taken:
            raise ValueError(
                f"admin_port {self.admin_port} is one of the ports Serve listens on "
                f"({', '.join(map(str, sorted(taken)))}): pick another"
            )
        return self

    @model_validator(mode="after")
    def _state_dir_is_a_path(self) -> ServerSpec:
        state = self.state_dir or self.data_dir
        if self.durable and "://" in state.removeprefix("file://"):
            raise ValueError(
                ("state_dir" if self.state_dir else "data_dir (no state_dir)")
                + f" {state!r}: the write-ahead log needs a local or mounted POSIX path "
                "that can append and fsync (NFS/EFS on a cluster), not an object store; "
                "keep data_dir there for the model registry and set state_dir to such a path"
            )
        return self


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


class ApiKeySpec(_Model):
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


class AuthSpec(_Model):
    """Who may call the API; every field can be set by NEXTBEST_AUTH_<FIELD>."""

    enabled: bool = Field(
        True,
        description="false lets every request in; only for a closed network, and the server "
        "says so at start.",
    )
    keys: Annotated[list[ApiKeySpec], BeforeValidator(_json_object)] = Field(
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

    def model_key(self) -> bytes | None:
        """The model signing key, or None when models need no signature. Configured but
        not in the environment: an error (fail closed), not a silent pass."""
        if self.model_key_env is None:
            return None
        value = os.environ.get(self.model_key_env)
        if not value:
            raise ModelIntegrityError(
                f"auth.model_key_env is {self.model_key_env} but it is not set in this "
                "process's environment: no model can be verified"
            )
        return value.encode()

    @model_validator(mode="after")
    def _unique(self) -> AuthSpec:
        names = [k.name for k in self.keys]
        hashes = [k.sha256 for k in self.keys]
        if len(set(names)) != len(names) or len(set(hashes)) != len(hashes):
            raise ValueError("API key names and keys must be unique")
        return self


class LogsSpec(_Model):
    """Decision and outcome logs (Parquet, for training and evaluation); every field can
    be set by NEXTBEST_LOGS_<FIELD>."""

    enabled: bool = Field(True, description="Log every decision and outcome.")
    dir: str | None = Field(
        None,
        description="Where the logs go: a local path or any pyarrow filesystem URI; "
        "default <data_dir>/logs.",
    )
    roll_rows: int = Field(
        50_000, ge=1, description="Candidate rows a shard buffers before writing a file."
    )
    roll_s: float = Field(
        60.0, gt=0, description="...or seconds, whichever comes first (an idle shard too)."
    )
    compression: Literal["zstd", "snappy", "none"] = Field(
        "zstd", description="Parquet compression of the log files."
    )
    max_pending: int = Field(
        4,
        ge=1,
        description="Rolled files waiting for the writer thread; beyond it the shard waits "
        "(bounded memory, nothing dropped).",
    )


def _listed(value: object) -> object:
    """One name or a list of names."""
    return [value] if isinstance(value, str) else value


EventTypes = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=64)]], BeforeValidator(_listed)
]


class TriggerSpec(_Model):
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


class WebhookSinkSpec(_Model):
    """POST each queued message as JSON, with `Idempotency-Key: <decision_id>`."""

    url: Annotated[str, Field(pattern=r"^https?://")] = Field(description="Where to POST.")
    timeout_s: float = Field(5.0, gt=0, le=120, description="Per request.")
    token_env: str | None = Field(
        None, description="Environment variable whose value is sent as a Bearer token."
    )


class ParquetSinkSpec(_Model):
    """Write queued messages to Parquet files (one per delivered batch)."""

    path: str = Field(description="Directory (local path or pyarrow filesystem URI).")


class SinkSpec(_Model):
    """Exactly one way to deliver a channel's messages."""

    webhook: WebhookSinkSpec | None = Field(None, description="HTTP POST per message.")
    parquet: ParquetSinkSpec | None = Field(None, description="Parquet files.")

    @model_validator(mode="after")
    def _one(self) -> SinkSpec:
        if (self.webhook is None) == (self.parquet is None):
            raise ValueError("a sink is either webhook or parquet")
        return self


class DeliverySpec(_Model):
    """The outbound queue and how its messages leave (see README, Triggers)."""

    sinks: Annotated[dict[str, SinkSpec], BeforeValidator(_json_object)] = Field(
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


class ContextTableSpec(_Model):
    """A table that is not per customer (weather per zip code, store stock, campaign
    calendar), pushed or loaded at runtime and looked up in rules by key:
    `context.<table>[<key expression>].<column>`."""

    key: str = Field(min_length=1, max_length=64, description="The key column.")
    columns: dict[Ident, Literal["numeric", "categorical"]] = Field(
        min_length=1, description="The looked-up columns and their types."
    )
    max_rows: int = Field(1_000_000, ge=1, description="Larger loads are refused.")


class IdentitySpec(_Model):
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


class Config(_Model):
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
        seen: dict[str, str] = {}
        names = [("attribute", a.name) for a in self.profile.attributes]
        names += [("aggregate", a.name) for a in self.profile.aggregates]
        for kind, name in names:
            if name in seen:
                raise ValueError(f"feature name {name!r} is used twice ({seen[name]}, {kind})")
            if name.startswith(("consent_", "action_", "context_")) or name == "channel":
                raise ValueError(f"feature name {name!r} uses a reserved prefix")
            seen[name] = kind
        ids = [a.id for a in self.actions]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"duplicate action ids: {', '.join(dupes)}")
        if self.server.admin_port is not None and not self.auth.admin_api:
            raise ValueError(
                "server.admin_port is set but auth.admin_api is false: serve the admin API "
                "on its own port or turn it off, not both"
            )
        groups = {a.group for a in self.actions}
        issues = {a.issue for a in self.actions if a.issue}
        for field, keys, known_keys in (
            ("groups", self.decisioning.groups, groups),
            ("group_caps", self.decisioning.group_caps, groups),
            ("group_levers", self.decisioning.group_levers, groups),
            ("issue_levers", self.decisioning.issue_levers, issues),
        ):
            stray = sorted(set(keys) - known_keys)
            if stray:
                raise ValueError(f"decisioning.{field} names no action's: {', '.join(stray)}")
        if OUTBOUND in self.channels:
            raise ValueError(f"{OUTBOUND!r} is reserved (decide with channel: {OUTBOUND})")
        ob = self.decisioning.outbound
        stray_ch = sorted((set(ob.channels) | set(ob.costs) | set(ob.rules)) - set(self.channels))
        if stray_ch:
            raise ValueError(f"decisioning.outbound names unknown channels: {', '.join(stray_ch)}")
        attrs = {a.name: a for a in self.profile.attributes}
        pref = ob.preference_attribute
        if pref is not None and (pref not in attrs or attrs[pref].type != "categorical"):
            raise ValueError(
                f"decisioning.outbound.preference_attribute {pref!r}: not a "
                "categorical profile attribute"
            )
        tids = [t.id for t in self.triggers]
        dupes = sorted({i for i in tids if tids.count(i) > 1})
        if dupes:
            raise ValueError(f"duplicate trigger ids: {', '.join(dupes)}")
        for t in self.triggers:
            if t.channel == OUTBOUND and not ob.channels:
                raise ValueError(
                    f"trigger {t.id!r} decides outbound, but decisioning.outbound.channels is empty"
                )
            if t.channel != OUTBOUND and t.channel not in self.channels:
                raise ValueError(f"trigger {t.id!r}: unknown channel {t.channel!r}")
        for event, kinds in self.identity.links.items():
            stray_kinds = sorted(set(kinds) - set(self.identity.kinds))
            if stray_kinds:
                raise ValueError(
                    f"identity.links.{event} names unknown identifier kinds: "
                    f"{', '.join(stray_kinds)} (add them to identity.kinds)"
                )
        sunk = sorted(set(self.delivery.sinks) - set(self.channels))
        if sunk:
            raise ValueError(f"delivery.sinks names unknown channels: {', '.join(sunk)}")
        capped = sorted(set(self.decisioning.channel_caps) - set(self.channels))
        if capped:
            raise ValueError(
                f"decisioning.channel_caps names unknown channels: {', '.join(capped)}"
            )
        unknown = sorted(set(self.decisioning.consent) - set(self.channels))
        if unknown:
            raise ValueError(f"decisioning.consent names unknown channels: {', '.join(unknown)}")
        known = set(self.channels)
        for a in self.actions:
            bad = [c for c in a.channels if c not in known]
            if bad:
                raise ValueError(f"action {a.id!r} names unknown channels: {', '.join(bad)}")
        return self
