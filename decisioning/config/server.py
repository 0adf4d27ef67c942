"""The `server` section: where and how the server runs (ports, shards, limits on
requests, durability); every field can be set by NEXTBEST_<FIELD>."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, model_validator

from decisioning.config.fields import StrictModel, json_object

__all__ = ["ServerSpec"]


class ServerSpec(StrictModel):
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
    max_batch: int = Field(
        1000, ge=1, description="Largest batch accepted: events, outcomes or decide requests."
    )
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
    shard_port: int | None = Field(
        0,
        ge=0,
        le=65535,
        description="Each shard also serves the channels' API on a port of its own, so a "
        "request sent to its customer's owner (the Python client routes by slot with GET "
        "/v1/cluster/slots) is answered in the shard's process, with no hop: 0 picks a free "
        "port per shard, N gives shard i port N+i, null turns the owner ports off.",
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
        description="Event ids (and outcome keys) each shard remembers to drop retried "
        "duplicates; as many decide request ids, each with its answer (about 1 KB).",
    )
    state_dir: str | None = Field(
        None,
        description="Where shards keep their WAL and snapshots (<state_dir>/<shard>): a local "
        "or mounted POSIX path, shared by every node on a cluster (NFS, EFS, Filestore) so a "
        "shard can come back on another node. Default <data_dir>/shards; must be set when "
        "data_dir is an object store URI.",
    )
    shard_resources: Annotated[dict[str, float], BeforeValidator(json_object)] = Field(
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
