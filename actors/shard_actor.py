"""A `Shard` as a Ray actor: the Ray glue around the plain class (an edge module).

It starts from what is deployed (actors/deployed.py), waits for a disk it cannot write
yet, runs its background threads (budget refills, trigger ticks, delivery) through its
own handle so every change still runs on the actor's thread, answers request-path calls
in batches (actors/calls.py), serves its own customers on a port of its own once it has
recovered (serving/owner.py; an async actor, so the port's requests run on its event
loop between Ray's calls, one at a time) and exits when its log cannot be written
(crash-only: Ray restarts it from what is on disk).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import os
import threading
import time
from typing import Any, NoReturn

import ray

from actors.calls import Call, run_calls
from actors.delivery import DeliveryLoop, make_sink
from actors.deployed import Deployed, install_tables, load_deployed, load_slot_map, shard_dir
from actors.shard import Shard
from decisioning.config import Config
from decisioning.journal.wal import StorageFailed
from decisioning.policy.budgets import chunk_size, day_of
from decisioning.profile.slots import SlotMap
from decisioning.stores.decision_log import DecisionLog, logs_root
from decisioning.stores.slotmap import SlotMapError

__all__ = ["STORAGE_EXIT", "SUPERVISOR", "ShardActor"]

log = logging.getLogger("nextbest.actors")
SUPERVISOR = "supervisor"  # the supervisor actor's name
STORAGE_EXIT = 75  # a shard's exit status when its log failed (EX_TEMPFAIL)


class ShardActor(Shard):
    """A Shard as a Ray actor: loads deployed models at (re)start, returns errors as data."""

    def __init__(self, shard_id: int, config: Config) -> None:
        deployed = load_deployed(shard_id, config)
        self._start_shard(shard_id, deployed)
        install_tables(self, deployed.tables)
        if ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None:
            # started, or restarted by Ray: its port and background threads open as soon
            # as this __init__ returns, not at the first call someone happens to make
            me = ray.get_runtime_context().current_actor
            threading.Thread(target=lambda: ray.get(me.ready.remote()), daemon=True).start()

    def _start_shard(self, shard_id: int, deployed: Deployed) -> None:
        """The plain shard's start (its snapshot and WAL); crash-only: a start waits for a
        disk it cannot write to yet."""
        config = deployed.config
        backoff = 0.5
        while True:
            logs = None
            if config.logs.enabled:
                root = logs_root(config.server.data_dir, config.logs)
                logs = DecisionLog(root, shard_id, config.logs)
            try:
                super().__init__(
                    shard_id,
                    config,
                    deployed.bundles,
                    log_dir=shard_dir(config, shard_id),
                    logs=logs,
                    challengers=deployed.challengers,
                    slot_map=load_slot_map(config),  # the slots it serves, as stored
                )
                return
            except (StorageFailed, OSError, SlotMapError) as e:
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

    async def ready(self) -> bool:
        """True once recovered; the first call starts the background threads and the
        shard's own port (an async method: the actor runs on one event loop, its plain
        methods one at a time on it, and the port's requests between them)."""
        if not hasattr(self, "_refiller"):  # the first call: started (and recovered)
            _freeze_startup_objects()
            # budgets may come later, with a catalog
            self._refiller = threading.Thread(
                target=self._refill_budgets, name="budget-refill", daemon=True
            )
            self._refiller.start()
            self._start_background()
            self._owner: Any = None
            if self.config.server.shard_port is not None:
                await self._open_port()
        return True

    async def _open_port(self) -> None:
        from serving.owner import OwnerPort  # (the HTTP edge; only when a port is wanted)

        slot_map = self.ownership.map or SlotMap.contiguous(self.config.server.shards)

        def owner_of(slot: int) -> tuple[int, int]:
            current = self.ownership.map
            return (self.shard_id, 0) if current is None else (current.owners[slot], current.epoch)

        self._owner = OwnerPort(self.config, self.shard_id, slot_map, self.call_many, owner_of)
        await self._owner.start()

    def endpoint(self) -> str | None:
        """Where this shard serves its customers itself (None: no port of its own)."""
        owner = getattr(self, "_owner", None)
        return None if owner is None else owner.endpoint

    def status(self) -> dict[str, Any]:
        return {**super().status(), "endpoint": self.endpoint()}

    async def stop(self) -> dict[str, Any]:  # type: ignore[override]
        """Graceful stop: the own port drains first, then the last snapshot."""
        owner = getattr(self, "_owner", None)
        if owner is not None:
            await owner.stop()
        return super().stop()

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
        supervisor: Any = None
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

                # cut for the shards that own slots now (slots move: the count changes)
                chunk = functools.partial(chunk_size, shards=self._serving_shards())
                self.allotments.refill(budgets, day_of(self.clock()), chunk, ask)
            except Exception as e:  # noqa: BLE001 - restarting supervisor: try again soon
                log.warning("shard %d: budget refill failed (%s); retrying", self.shard_id, e)
                supervisor = None
                time.sleep(2.0)
            time.sleep(0.2)

    def _serving_shards(self) -> int:
        """How many shards own slots now: a budget is cut into chunks for that many."""
        slot_map = self.ownership.map
        return len(set(slot_map.owners)) if slot_map is not None else self.config.server.shards

    def pid(self) -> int:
        """The worker process id (ops and failure tests)."""
        return os.getpid()

    def node_id(self) -> str:
        """The Ray node this instance runs on (ops and failure tests)."""
        return str(ray.get_runtime_context().get_node_id())

    def call(self, method: str, *args: Any) -> Any:
        """Run one of the request-path methods; a core error comes back as its value.
        What it applied is in the WAL (and fsynced per policy) before it returns."""
        return self.call_many([(method, args)])[0]

    def call_many(self, calls: list[Call]) -> list[Any]:
        """Several request-path calls in one actor task, in order (see router.Coalescer);
        one WAL commit for all of them before any answer goes out (group commit). A shard
        fenced out by a newer instance of itself answers nothing (503 at the ingress)."""
        try:
            return run_calls(self, calls)
        except StorageFailed as e:
            self._crash(e)

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


def _freeze_startup_objects() -> None:
    """Move what the start made (modules, Ray's own objects, config, models, catalog,
    recovered state) out of the garbage collector's sight: it lives as long as the
    process, and a full collection scans every object it tracks on the thread that
    answers requests (~210,000 objects, 140-430 ms on the 2-core bench machine). Ray
    Serve does the same for each replica (RAY_SERVE_FREEZE_GC_ON_STARTUP). The price:
    a cycle among these objects that becomes garbage later (a model a deploy replaced)
    is never collected; once per process, bounded by what the start loaded."""
    gc.collect()
    gc.freeze()
