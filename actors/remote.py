"""Every Ray call of nextbest's actors lives here: shard actors, supervisor, router.

Shard actors are named (`shard-<i>`), detached and restarted by Ray when they die; a
restarted shard reloads the deployed models from the registry before it answers. The
supervisor (named `supervisor`) creates the shards and owns the slot -> shard map.
Errors from the core come back as data (`{"error": {...}}`), not as Ray exceptions, so
the request path never pays for a remote traceback on bad input.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Awaitable
from typing import Any, NoReturn

import pyarrow as pa
import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, GetTimeoutError, RayActorError

from actors.audit import IdentityAudit
from actors.delivery import DeliveryLoop, make_sink
from actors.shard import OUTCOMES, Shard, decision_slot
from decisioning.config import Config, Secrets
from decisioning.errors import AlreadyMerged, ModelError, Moved, NextbestError, NotFound
from decisioning.journal.fencing import Fenced
from decisioning.journal.wal import StorageFailed
from decisioning.policy.budgets import budgets_of, chunk_size, day_of
from decisioning.policy.context import check_table, table_version
from decisioning.policy.scoring import (
    ModelBundle,
    ModelManifest,
    check_signature,
    compile_native,
    native_tag,
)
from decisioning.profile.slots import contiguous_map, slot_of
from decisioning.stores.catalogs import CatalogStore, catalog_of, version_of, with_catalog
from decisioning.stores.context import ContextStore
from decisioning.stores.decision_log import DecisionLog, logs_root
from decisioning.stores.ledger import LedgerStore
from decisioning.stores.registry import Registry

__all__ = [
    "ShardUnavailable",
    "ShardRouter",
    "SupervisorClient",
    "ensure_supervisor",
    "shutdown_cluster",
]

log = logging.getLogger("nextbest.actors")
SUPERVISOR = "supervisor"
UNAVAILABLE = (RayActorError, ActorDiedError, ActorUnavailableError, GetTimeoutError)
STORAGE_EXIT = 75  # a shard's exit status when its log failed (EX_TEMPFAIL)


class ShardUnavailable(Exception):
    """The request cannot be served now; retry later (503 + Retry-After). `code` says why:

    - `shard_unavailable`: the customer's shard is restarting (loading its snapshot and
      log) or gone;
    - `shard_timeout`: it did not answer within `request_timeout_s`;
    - `overloaded`: this ingress replica already waits on `max_ongoing_requests`;
    - `supervisor_unavailable`: status, models and deploys wait for a restarting supervisor;
    - `merge_in_progress`: merges are moving the customer right now.
    """

    def __init__(self, message: str, code: str = "shard_unavailable") -> None:
        super().__init__(message)
        self.code = code


def _error(e: NextbestError) -> dict[str, Any]:
    return {
        "error": {
            "type": type(e).__name__,
            "code": getattr(e, "code", "error"),
            "message": getattr(e, "message", str(e)),
            "field": getattr(e, "field", None),
            **(
                {"customer": e.customer, "target": e.target}
                if isinstance(e, Moved | AlreadyMerged)
                else {}
            ),
            **({"moved": e.moved} if isinstance(e, Moved) else {}),
        }
    }


def _fenced(e: Fenced) -> dict[str, Any]:
    return {
        "error": {"type": "Fenced", "code": "shard_unavailable", "message": str(e), "field": None}
    }


_REQUEST_METHODS = frozenset(
    (
        "apply_events",
        "decide",
        "tick",
        "resolve",
        "link",
        "merged_into",
        "pin",
        "unpin",
        "freeze",
        "absorb",
        "drop_merged",
        "cancel_merge",
        "settle",
        "compress",
        "unfinished_merges",
        "identity_of",
        "forget_identity",
        "lease_outbound",
        "ack_outbound",
        "release_outbound",
        "outbound_status",
        "check_outcomes",
        "record_outcomes",
        "get_profile",
        "erase_profile",
        "stage_model",
        "stage_catalog",
        "stage_context",
    )
)


class ShardActor(Shard):
    """A Shard as a Ray actor: loads deployed models at (re)start, returns errors as data."""

    def __init__(self, shard_id: int, config: Config) -> None:
        registry = Registry(config.server.data_dir)
        tag = native_tag() if config.server.scorer == "native" else None
        bundles, challengers = [], []
        for name in registry.names():
            try:
                aliases = registry.aliases(name)
                if aliases.champion is not None:
                    bundles.append(registry.read(name, aliases.champion, tag))
                if aliases.challenger is not None:
                    bundle = registry.read(name, aliases.challenger, tag)
                    challengers.append((bundle, aliases.share, aliases.shadow))
            except ModelError as e:
                log.error("shard %d: deployed model %s refused at start: %s", shard_id, name, e)
        current = CatalogStore(config.server.data_dir).current()
        if current is not None:  # applied at runtime: it survives restarts
            try:
                config = with_catalog(config, current[1], f"catalog {current[0]}")
            except NextbestError as e:
                log.error(
                    "shard %d: the current catalog is refused, using the file's: %s", shard_id, e
                )
        tables = []
        store = ContextStore(config.server.data_dir)
        for name, version in store.current().items():  # pushed at runtime: kept across restarts
            if name in config.context_tables:
                try:
                    tables.append((name, version, store.load(name, version)))
                except (OSError, NextbestError) as e:
                    log.error("shard %d: context table %s not loaded: %s", shard_id, name, e)
        backoff = 0.5
        while True:  # crash-only: a start waits for a disk it cannot write to yet
            logs = None
            if config.logs.enabled:
                root = logs_root(config.server.data_dir, config.logs)
                logs = DecisionLog(root, shard_id, config.logs)
            try:
                super().__init__(
                    shard_id,
                    config,
                    bundles,
                    log_dir=shard_dir(config, shard_id),
                    logs=logs,
                    challengers=challengers,
                )
                break
            except (StorageFailed, OSError) as e:
                if logs is not None:
                    logs.close()
                log.error(
                    "shard %d: cannot recover its state dir (%s); retrying in %.1fs "
                    "(its customers get 503 meanwhile)",
                    shard_id,
                    e,
                    backoff,
                )
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
        for name, version, table in tables:
            try:
                self.stage_context(name, version, table)
                self.commit_context(name)
            except NextbestError as e:
                log.error("shard %d: context table %s refused: %s", shard_id, name, e)

    def ready(self) -> bool:
        if not hasattr(self, "_refiller"):  # budgets may come later, with a catalog
            self._refiller = threading.Thread(
                target=self._refill_budgets, name="budget-refill", daemon=True
            )
            self._refiller.start()
            self._start_background()
        return True

    def _start_background(self) -> None:
        """The ticker (fires due trigger timers) and one delivery loop per channel with a
        sink; both reach the shard only through this actor's handle, so every change
        still runs on the actor's thread, logged and flushed like a request."""
        me = ray.get_runtime_context().current_actor

        def call(method: str, *args: Any) -> Any:
            return ray.get(me.call.remote(method, *args), timeout=60)

        def tick() -> None:
            while True:
                time.sleep(self.config.delivery.tick_s)
                if not self.timers.due:  # (a read of a dict size: safe from this thread)
                    continue
                try:
                    call("tick")
                except Exception as e:  # noqa: BLE001 - restarting: the next tick retries
                    log.warning("shard %d: tick failed: %s", self.shard_id, e)

        threading.Thread(target=tick, name="trigger-ticker", daemon=True).start()
        d = self.config.delivery
        self.deliveries: dict[str, DeliveryLoop] = {}
        for channel, spec in d.sinks.items():
            try:
                sink = make_sink(spec, self.shard_id)
            except ValueError as e:
                log.error("shard %d: no delivery on %s: %s", self.shard_id, channel, e)
                continue
            loop = DeliveryLoop(channel, sink, call, d.batch, d.retry_max_s)
            self.deliveries[channel] = loop
            threading.Thread(target=loop.run, name=f"deliver-{channel}", daemon=True).start()

    def outbound_status(self) -> dict[str, Any]:
        out = super().outbound_status()
        loops = getattr(self, "deliveries", {})
        out["sinks"] = {ch: dict(loop.stats) for ch, loop in loops.items()}
        return out

    def _refill_budgets(self) -> None:
        """Keep this shard's share of every budgeted action topped up, in the background
        (a decision never waits for it); until the first grant arrives, budgeted actions
        are not candidates here."""
        ns = self.config.server.namespace
        shards = self.config.server.shards
        supervisor = None
        while True:
            if not self.budgets:
                time.sleep(0.5)
                continue
            try:
                supervisor = supervisor or ray.get_actor(SUPERVISOR, namespace=ns)
                budgets = dict(self.budgets)  # the catalog may change meanwhile
                lease = supervisor.lease

                def ask(action: str, day: str, want: int, lease: Any = lease) -> int:
                    return int(ray.get(lease.remote(action, day, want), timeout=10))

                self.allotments.refill(
                    budgets, day_of(self.clock()), lambda b: chunk_size(b, shards), ask
                )
            except Exception as e:  # noqa: BLE001 - restarting supervisor: try again soon
                log.warning("shard %d: budget refill failed (%s); retrying", self.shard_id, e)
                supervisor = None
                time.sleep(2.0)
            time.sleep(0.2)

    def pid(self) -> int:
        """The worker process id (ops and failure tests)."""
        return os.getpid()

    def node_id(self) -> str:
        """The Ray node this instance runs on (ops and failure tests)."""
        return str(ray.get_runtime_context().get_node_id())

    def _run(self, method: str, args: tuple[Any, ...]) -> Any:
        if method not in _REQUEST_METHODS:
            raise ValueError(f"not a request method: {method}")
        try:
            return getattr(self, method)(*args)
        except NextbestError as e:
            return _error(e)

    def call(self, method: str, *args: Any) -> Any:
        """Run one of the request-path methods; a core error comes back as a dict.
        What it applied is in the WAL (and fsynced per policy) before it returns."""
        return self.call_many([(method, args)])[0]

    def call_many(self, calls: list[tuple[str, tuple[Any, ...]]]) -> list[Any]:
        """Several request-path calls in one actor task, in order (see _Coalescer); one
        WAL commit for all of them before any answer goes out (group commit). A shard
        fenced out by a newer instance of itself answers nothing (503 at the ingress)."""
        try:
            if self.owner is not None:
                self.owner.check()
            results = [self._run(method, args) for method, args in calls]
            self.flush()
        except Fenced as e:
            return [_fenced(e)] * len(calls)
        except StorageFailed as e:
            self._crash(e)
        return results

    def _crash(self, e: StorageFailed) -> NoReturn:
        """The log could not be written: this call answers nothing (its callers get
        503 and retry), and the process exits, so Ray restarts the shard from what is
        on disk; memory may hold changes the log does not, which must never be served."""
        log.critical(
            "shard %d: the write-ahead log failed (%s): nothing of this call is "
            "acknowledged; restarting from disk",
            self.shard_id,
            e,
        )
        for handler in logging.getLogger().handlers:
            with contextlib.suppress(Exception):
                handler.flush()
        os._exit(STORAGE_EXIT)


class Supervisor:
    """Creates the shard actors, owns the slot map, rolls models out to every shard."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.namespace = config.server.namespace
        self.slot_map = contiguous_map(config.server.shards)
        self.deploying = threading.Lock()  # one rollout at a time; status stays answerable
        self.leasing = threading.Lock()  # budget grants, one at a time
        self.ledger = LedgerStore.at(config.server.data_dir)
        root = config.server.data_dir.removeprefix("file://")
        self.audit = IdentityAudit(os.path.join(root, "audit", "identity.jsonl"))
        registry = Registry(config.server.data_dir)
        for name in registry.names():  # shards (re)starting find native code ready
            with contextlib.suppress(ModelError):
                if (version := registry.deployed(name)) is not None:
                    self._native(registry.read(name, version))
        actor_cls = ray.remote(ShardActor)
        self.shards = [
            actor_cls.options(
                name=f"shard-{i}",
                namespace=self.namespace,
                lifetime="detached",
                get_if_exists=True,
                max_restarts=-1,
                max_task_retries=0,
                num_cpus=0,
                resources=config.server.shard_resources or None,
                scheduling_strategy="SPREAD",
            ).remote(i, config)
            for i in range(config.server.shards)
        ]
        self._wait_for_shards()

    def _wait_for_shards(self, timeout: float = 600.0) -> None:
        """Until every shard answers. A restarted supervisor (its node was lost) may find
        shards that are themselves restarting: it waits for them instead of failing its
        own start (which Ray would retry in a loop)."""
        deadline = time.monotonic() + timeout
        for i, shard in enumerate(self.shards):
            while True:
                try:
                    ray.get(shard.ready.remote(), timeout=max(1.0, deadline - time.monotonic()))
                    break
                except (ActorUnavailableError, GetTimeoutError):
                    if time.monotonic() > deadline:
                        raise
                    log.warning("supervisor: shard %d is restarting; waiting for it", i)
                    time.sleep(0.5)

    def ready(self) -> bool:
        return True

    def pid(self) -> int:
        """The supervisor's process id (ops and failure tests)."""
        return os.getpid()

    def layout(self) -> tuple[list[str], list[int]]:
        """Shard actor names and the slot -> shard map."""
        return [f"shard-{i}" for i in range(len(self.shards))], self.slot_map

    def deploy_model(self, manifest: dict[str, Any], model_text: str) -> dict[str, Any]:
        """Stage a model on every shard; only if all accept it, register and serve it.

        If any shard refuses it, no shard switches, the registry is untouched, and the
        returned error says why.
        """
        with self.deploying:
            return self._deploy(manifest, model_text)

    def _deploy(self, manifest: dict[str, Any], model_text: str) -> dict[str, Any]:
        try:
            bundle = ModelBundle.verified(ModelManifest.from_dict(manifest), model_text)
            check_signature(bundle.manifest, Secrets.resolve(self.config, os.environ).model_key())
        except NextbestError as e:
            return _error(e)
        name = bundle.manifest.name
        native = self._native(bundle)
        _, refused = self._stage_everywhere(
            ("stage_model", manifest, model_text, native), ("abort_model", name)
        )
        if refused is not None:
            return refused
        registry = Registry(self.config.server.data_dir)
        try:
            m = registry.register(bundle)
        except ModelError as e:
            ray.get([s.abort_model.remote(name) for s in self.shards])
            return _error(e)
        registry.set_deployed(m.name, m.version)  # first: a shard restarting now loads it
        self._commit_everywhere("commit_model", name)
        return {"deployed": m.ref, "shards": len(self.shards)}

    def roll_out(
        self,
        name: str,
        op: str,
        version: int | None = None,
        share: float = 0.0,
        shadow: bool = False,
    ) -> dict[str, Any]:
        """promote (a version, default the challenger), rollback (to the champion before),
        or split (a challenger for a share of customers, or in shadow; no version: end
        it). Every shard stages what changes, then all switch; the aliases are written
        last. If any shard refuses, none switches and the aliases stay."""
        with self.deploying:
            registry = Registry(self.config.server.data_dir)
            if not registry.versions(name):
                return _error(
                    NotFound(f"no model named {name!r} in the registry", code="unknown_model")
                )
            before = registry.aliases(name)
            try:
                if op == "promote":
                    after = before.promote(version)
                elif op == "rollback":
                    after = before.rollback()
                else:
                    after = before.split(version, share, shadow)
                for v in (after.champion, after.challenger):
                    if v is not None and v not in registry.versions(name):
                        raise ModelError(f"{name}@{v} is not in the registry")
                stage: list[tuple[ModelBundle, str, float, bool]] = []
                if after.champion != before.champion and after.champion is not None:
                    stage.append((registry.read(name, after.champion), "champion", 0.0, False))
                challenger_changed = (after.challenger, after.share, after.shadow) != (
                    before.challenger,
                    before.share,
                    before.shadow,
                )
                if challenger_changed and after.challenger is not None:
                    bundle = registry.read(name, after.challenger)
                    stage.append((bundle, "challenger", after.share, after.shadow))
            except NextbestError as e:
                return _error(e)
            calls = []
            for bundle, role, part, shadowed in stage:
                native = self._native(bundle)
                m = bundle.manifest.to_dict()
                calls += [
                    s.call.remote("stage_model", m, bundle.model_text, native, role, part, shadowed)
                    for s in self.shards
                ]
            refused = [r for r in ray.get(calls) if isinstance(r, dict)]
            if refused:
                ray.get([s.abort_model.remote(name) for s in self.shards])
                return refused[0]
            if challenger_changed and after.challenger is None:
                ray.get([s.stage_no_challenger.remote(name) for s in self.shards])
            registry.set_aliases(name, after)  # first: a shard restarting now loads them
            self._commit_everywhere("commit_model", name)
            return {"model": name, **after.to_dict(), "shards": len(self.shards)}

    def catalog(self) -> dict[str, Any]:
        """The catalog the shards serve: its version and sections."""
        current = CatalogStore(self.config.server.data_dir).current()
        if current is not None:
            return {"version": current[0], **current[1]}
        return {"version": version_of(self.config), **catalog_of(self.config)}

    def apply_catalog(self, catalog: dict[str, Any] | None) -> dict[str, Any]:
        """Stage `catalog` (None: the one before the current) on every shard, store it as
        current, then switch all. If any shard refuses, none switches and nothing is
        stored. What is stored is the catalog as served (merged with the settings it
        does not give), so a restarted shard serves exactly the same."""
        with self.deploying:
            store = CatalogStore(self.config.server.data_dir)
            serving = self._serving_config()
            base = self.catalog()
            rollback = catalog is None
            try:
                if catalog is None:
                    _, catalog = store.previous()
                full = catalog_of(with_catalog(serving, catalog))  # checked once, here
            except NextbestError as e:
                return _error(e)
            staged, refused = self._stage_everywhere(("stage_catalog", full), ("abort_catalog",))
            if refused is not None:
                return refused
            version = staged[0]
            base_version = base.pop("version")
            if version == base_version:
                ray.get([s.abort_catalog.remote() for s in self.shards])
                return {"version": version, "changed": False, "shards": len(self.shards)}
            store.remember(base_version, base)
            if rollback:
                store.rolled_back(version)
            else:
                store.save(version, full, base_version)
            self._commit_everywhere("commit_catalog")  # a shard restarting now loads it
            return {
                "version": version,
                "changed": True,
                "rolled_back": rollback,
                "shards": len(self.shards),
            }

    def audit_identity(self, entry: dict[str, Any]) -> bool:
        """Append a merge to the identity audit log, once per merge id."""
        return self.audit.append(entry)

    def identity_audit(self, customer_id: str | None = None) -> list[dict[str, Any]]:
        return self.audit.entries(customer_id)

    def scrub_identity_audit(self, customer_id: str) -> int:
        """Erasure: the customer's entries out of the audit log."""
        return self.audit.scrub(customer_id)

    def context_tables(self) -> dict[str, Any]:
        """Each configured table and the version every shard serves (null: not loaded)."""
        per_shard = ray.get([s.context_status.remote() for s in self.shards])
        return {
            name: {
                "key": spec.key,
                "columns": dict(spec.columns),
                "shards": [st.get(name) for st in per_shard],
            }
            for name, spec in self.config.context_tables.items()
        }

    def put_context(self, name: str, table: pa.Table) -> dict[str, Any]:
        """Check a table version, store it, broadcast it through the object store (one
        copy, every shard reads it), stage it on every shard, then switch all. If any
        shard refuses, none switches and nothing is stored as current."""
        spec = self.config.context_tables.get(name)
        if spec is None:
            known = ", ".join(sorted(self.config.context_tables)) or "none configured"
            return _error(
                NotFound(f"unknown context table {name!r} (known: {known})", code="unknown_table")
            )
        with self.deploying:
            try:
                checked = check_table(name, spec, table)
            except NextbestError as e:
                return _error(e)
            version = table_version(checked)
            ref = ray.put(checked)
            _, refused = self._stage_everywhere(
                ("stage_context", name, version, ref), ("abort_context", name)
            )
            if refused is not None:
                return refused
            ContextStore(self.config.server.data_dir).save(name, checked, version)
            self._commit_everywhere("commit_context", name)
            return {
                "table": name,
                "version": version,
                "rows": checked.num_rows,
                "shards": len(self.shards),
            }

    def _stage_everywhere(
        self, stage: tuple[Any, ...], abort: tuple[Any, ...]
    ) -> tuple[list[Any], dict[str, Any] | None]:
        """Run a stage call (method, *args) on every shard; if any refuses (an error
        dict), run the abort call (method, *args) on every shard and return the first
        refusal. Returns what each shard staged, and the refusal or None."""
        staged = ray.get([s.call.remote(*stage) for s in self.shards])
        refused = [r for r in staged if isinstance(r, dict)]
        if refused:
            method, *args = abort
            ray.get([getattr(s, method).remote(*args) for s in self.shards])
            return staged, refused[0]
        return staged, None

    def _commit_everywhere(self, method: str, *args: Any) -> None:
        """Switch every shard to what it staged. The new state is stored before this, so
        a shard that died since staging comes back with it; one failed commit does not
        stop the others."""
        refs = [getattr(s, method).remote(*args) for s in self.shards]
        for i, ref in enumerate(refs):
            try:
                ray.get(ref, timeout=60)
            except Exception as e:  # noqa: BLE001 - it restarts with the stored state
                log.error("shard %d: %s failed (%s); it loads the stored state", i, method, e)

    def lease(self, action_id: str, day: str, want: int) -> int:
        """Grant a shard up to `want` more of `day`'s budget of `action_id` (0 when it
        is granted out, the day is forgotten, or the action has no budget); the grant is
        durable before it is answered (decisioning/stores/ledger.py)."""
        with self.leasing:
            budget = budgets_of(self._serving_config()).get(action_id)
            if budget is None:
                return 0
            return self.ledger.grant(action_id, day, want, budget)

    def _serving_config(self) -> Config:
        current = CatalogStore(self.config.server.data_dir).current()
        return self.config if current is None else with_catalog(self.config, current[1])

    def model_stats(self) -> dict[str, Any]:
        """Per model version: its alias, decisions and outcomes, summed over the shards
        (since each shard started; the decision logs hold the whole history)."""
        registry = Registry(self.config.server.data_dir)
        totals: dict[str, dict[str, int]] = {}
        for st in self.status():
            for ref, counts in (st.get("variant_stats") or {}).items():
                t = totals.setdefault(ref, {})
                for k, n in counts.items():
                    t[k] = t.get(k, 0) + n
        out: dict[str, Any] = {}
        for name in registry.names():
            a = registry.aliases(name)
            role = {a.champion: "champion", a.challenger: "shadow" if a.shadow else "challenger"}
            versions = []
            for ref, counts in sorted(totals.items()):
                model, _, v = ref.partition("@")
                if model != name:
                    continue
                shown, accepted = counts.get("impression", 0), counts.get("accept", 0)
                versions.append(
                    {
                        "version": ref,
                        "alias": role.get(int(v)),
                        "decisions": counts.get("decisions", 0),
                        **{k: counts.get(k, 0) for k in OUTCOMES},
                        "accept_rate": accepted / shown if shown else None,
                    }
                )
            out[name] = {"aliases": a.to_dict(), "versions": versions}
        return out

    def _native(self, bundle: ModelBundle) -> bytes | None:
        """The model's native code for this CPU kind: from the registry, else compiled now.

        Shards on nodes of another CPU kind find none for theirs and score with LightGBM
        (they log it); `nextbest status` shows each shard's scorer.
        """
        tag = native_tag() if self.config.server.scorer == "native" else None
        if tag is None:
            return None
        registry = Registry(self.config.server.data_dir)
        sha = bundle.manifest.sha256
        native = registry.read_native(sha, tag)
        if native is None:
            started = time.perf_counter()
            try:
                native = compile_native(bundle.model_text)
            except Exception as e:  # noqa: BLE001 - scoring falls back to LightGBM
                log.warning("%s: native compilation failed: %s", bundle.manifest.ref, e)
                return None
            registry.write_native(sha, tag, native)
            log.warning(
                "%s: compiled to native code in %.1fs",
                bundle.manifest.ref,
                time.perf_counter() - started,
            )
        return native

    def status(self) -> list[dict[str, Any]]:
        out = []
        for i, s in enumerate(self.shards):
            try:
                out.append(ray.get(s.status.remote(), timeout=5))
            except UNAVAILABLE:
                out.append({"shard": i, "ready": False})
        return out

    def stop_shards(self) -> None:
        """Snapshot every shard (graceful stop: the next start restores them), then stop."""
        snaps = [s.stop.remote() for s in self.shards]
        for i, ref in enumerate(snaps):
            try:
                ray.get(ref, timeout=300)
            except Exception as e:  # noqa: BLE001 - stopping: the WAL has everything
                log.error("shard %d: no snapshot at stop (%s); its WAL has everything", i, e)
        for s in self.shards:
            ray.kill(s, no_restart=True)


def shard_dir(config: Config, shard_id: int) -> str | None:
    """Where a shard keeps its WAL and snapshots (None: `durable: false`); the config
    has checked that it is a POSIX path."""
    s = config.server
    if not s.durable:
        return None
    if s.state_dir is not None:
        return os.path.join(s.state_dir.removeprefix("file://"), str(shard_id))
    return os.path.join(s.data_dir.removeprefix("file://"), "shards", str(shard_id))


def ensure_supervisor(config: Config, timeout: float = 120.0) -> Any:
    """Get the running supervisor or start it (and its shards); waits until ready."""
    actor = (
        ray.remote(Supervisor)
        .options(
            name=SUPERVISOR,
            namespace=config.server.namespace,
            lifetime="detached",
            get_if_exists=True,
            max_restarts=-1,
            max_concurrency=4,
            num_cpus=0,
        )
        .remote(config)
    )
    ray.get(actor.ready.remote(), timeout=timeout)
    return actor


def shutdown_cluster(config: Config) -> None:
    """Stop the supervisor and every shard of this deployment (named, detached actors)."""
    try:
        sup = ray.get_actor(SUPERVISOR, namespace=config.server.namespace)
    except ValueError:
        return
    with contextlib.suppress(*UNAVAILABLE):
        ray.get(sup.stop_shards.remote(), timeout=330)  # snapshots of big shards take a while
    ray.kill(sup, no_restart=True)


class _Coalescer:
    """At most one call in flight to a shard; requests that arrive meanwhile go together.

    A shard actor runs one task at a time anyway, so nothing waits longer than it would
    in the actor's queue, while N concurrent requests cost one actor hop instead of N.

    Each request waits at most `timeout` seconds. One still queued here when its time is
    up is never sent (so never applied); one already sent may have been applied, which a
    retry with the same event_id makes harmless. When the shard dies, every waiter gets
    `shard_unavailable` at once, and so does every request until a probe finds the shard
    answering again (restarted by Ray and done with its recovery).
    """

    def __init__(self, actor: Any, index: int, name: str, namespace: str, timeout: float) -> None:
        self.actor = actor
        self.index = index
        self.name, self.namespace = name, namespace
        self.timeout = timeout
        self.pending: list[tuple[str, tuple[Any, ...], asyncio.Future[Any]]] = []
        self.flushing = False
        self.probe: asyncio.Future[None] | None = None

    async def submit(self, method: str, args: tuple[Any, ...]) -> Any:
        if self.probe is not None:
            raise ShardUnavailable(
                f"shard {self.index} is restarting (it answers once its state is recovered)"
            )
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        item = (method, args, fut)
        self.pending.append(item)
        if not self.flushing:
            self.flushing = True
            asyncio.ensure_future(self._flush())
        timer = loop.call_later(self.timeout, self._expire, item)  # cheaper than wait_for
        try:
            return await fut
        finally:
            timer.cancel()

    def _expire(self, item: tuple[str, tuple[Any, ...], asyncio.Future[Any]]) -> None:
        fut = item[2]
        if fut.done():
            return
        for i, queued in enumerate(self.pending):
            if queued is item:  # not sent yet: it never will be
                del self.pending[i]
                break
        fut.set_exception(
            ShardUnavailable(
                f"shard {self.index} did not answer within {self.timeout:g}s", "shard_timeout"
            )
        )

    async def _flush(self) -> None:
        try:
            while self.pending:
                batch, self.pending = self.pending, []
                try:
                    results = await self.actor.call_many.remote([(m, a) for m, a, _ in batch])
                except UNAVAILABLE as e:
                    err = ShardUnavailable(f"shard {self.index} is unavailable: {type(e).__name__}")
                    batch, self.pending = batch + self.pending, []
                    for _, _, fut in batch:
                        if not fut.done():
                            fut.set_exception(err)
                    if self.probe is None:
                        self.probe = asyncio.ensure_future(self._wait_until_back())
                    continue
                except Exception as e:  # noqa: BLE001 - hand every waiter its error
                    for _, _, fut in batch:
                        if not fut.done():
                            fut.set_exception(e)
                    continue
                for (_, _, fut), result in zip(batch, results, strict=True):
                    if not fut.done():
                        fut.set_result(result)
        finally:
            self.flushing = False

    async def _wait_until_back(self) -> None:
        """Until the shard answers again; a call to a restarting actor waits in Ray until
        the new instance has finished __init__ (its recovery)."""
        try:
            while True:
                try:
                    await self.actor.ready.remote()
                    return
                except UNAVAILABLE as e:
                    if isinstance(e, ActorDiedError):  # stopped for good: maybe started anew
                        with contextlib.suppress(ValueError):
                            self.actor = ray.get_actor(self.name, namespace=self.namespace)
                    await asyncio.sleep(0.2)
        finally:
            self.probe = None
            log.warning("shard %d answers again", self.index)


class ShardRouter:
    """Used by ingress replicas: customer -> slot -> shard handle, and the calls."""

    def __init__(self, config: Config) -> None:
        self.config = config
        supervisor = ensure_supervisor(config)
        self.supervisor = SupervisorClient(config, supervisor)
        names, self.slot_map = ray.get(supervisor.layout.remote())
        ns = config.server.namespace
        self.shards = [ray.get_actor(n, namespace=ns) for n in names]
        timeout = config.server.request_timeout_s
        self.coalescers = [
            _Coalescer(a, i, n, ns, timeout)
            for i, (a, n) in enumerate(zip(self.shards, names, strict=True))
        ]
        self.max_ongoing = config.server.max_ongoing_requests
        self.ongoing = 0  # calls waiting on shards, over every route of this replica

    def shard_of(self, customer_id: str) -> int:
        return self.slot_map[slot_of(customer_id)]

    def shard_of_decision(self, decision_id: str) -> int:
        return self.slot_map[decision_slot(decision_id)]

    def admit(self, n: int = 1) -> None:
        """Shed a request up front, whole: never a part of a batch sent and a part not.
        Routes call it before they read the body too, so shedding costs little."""
        if self.ongoing + n > self.max_ongoing:
            raise ShardUnavailable(
                f"overloaded: {self.ongoing} calls already wait on shards here", "overloaded"
            )

    async def _call(self, shard: int, method: str, args: tuple[Any, ...]) -> Any:
        self.ongoing += 1
        try:
            return await self.coalescers[shard].submit(method, args)
        finally:
            self.ongoing -= 1

    async def call(self, shard: int, method: str, *args: Any) -> Any:
        self.admit(1)
        return await self._call(shard, method, args)

    async def call_all(self, calls: list[tuple[int, str, Any]]) -> list[Any]:
        """One call per shard, concurrently. A timeout or restart of one shard can leave
        the others' parts applied: the 503 says so, and a retry with the same event ids
        counts each event once."""
        self.admit(len(calls))
        aws: list[Awaitable[Any]] = [self._call(shard, m, (arg,)) for shard, m, arg in calls]
        return list(await asyncio.gather(*aws))

    async def supervisor_call(self, method: str, *args: Any) -> Any:
        return await self.supervisor.call(method, *args)


class SupervisorClient:
    """Calls to the supervisor from an ingress replica or the admin server: found again
    by name after a stop, 503 `supervisor_unavailable` while Ray restarts it."""

    def __init__(self, config: Config, actor: Any) -> None:
        self.namespace = config.server.namespace
        self.actor = actor

    async def call(self, method: str, *args: Any) -> Any:
        try:
            try:
                return await getattr(self.actor, method).remote(*args)
            except ActorDiedError:  # stopped for good: a new one may run under the same name
                self.actor = ray.get_actor(SUPERVISOR, namespace=self.namespace)
                return await getattr(self.actor, method).remote(*args)
        except (*UNAVAILABLE, ValueError) as e:  # restarting (its node was lost), or gone
            raise ShardUnavailable(
                f"the supervisor is unavailable ({type(e).__name__}); it is restarted by Ray",
                "supervisor_unavailable",
            ) from None
