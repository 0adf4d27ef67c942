"""The Ray edges of nextbest's actors: the supervisor actor over its shard actors, and
the handles an ingress replica holds (with actors/shard_actor.py, the only modules in
actors/ that call Ray, as Ray Serve's controller_actor_class.py does for its controller).

Shard actors are named (`shard-<i>`), detached and restarted by Ray when they die; a
restarted shard reloads what is deployed before it answers. The supervisor (named
`supervisor`) creates the shards; the plain `Supervisor` owns the slot -> shard map and
every change of what the shards serve. A Ray failure reaching a shard or the supervisor
becomes `ShardUnavailable` (503) at the ingress.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, GetTimeoutError, RayActorError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from actors.calls import Call, ShardUnavailable
from actors.deployed import shard_dir, slot_store
from actors.rollout import warm_native
from actors.router import Router, Unreachable
from actors.shard_actor import SUPERVISOR, ShardActor
from actors.slots import MAX_SHARDS
from actors.supervisor import Supervisor
from decisioning.config import Config

__all__ = [
    "RayFleet",
    "RayShardLink",
    "ShardActor",
    "ShardRouter",
    "ShardUnavailable",
    "Supervisor",
    "SupervisorActor",
    "SupervisorClient",
    "ensure_supervisor",
    "shard_dir",
    "shutdown_cluster",
]

log = logging.getLogger("nextbest.actors")
UNAVAILABLE = (RayActorError, ActorDiedError, ActorUnavailableError, GetTimeoutError)


class RayFleet:
    """The shard actors as a `fleet.Fleet`: created (or found by name) and awaited.
    `shards`: how many run (the stored slot map's count; None: the config's)."""

    CALL_TIMEOUT_S = 120.0  # one slot-move call (a freeze of 1024 slots' profiles)

    def __init__(self, config: Config, shards: int | None = None) -> None:
        self.config = config
        self.actor_cls = ray.remote(ShardActor)
        n = config.server.shards if shards is None else shards
        self.shards: list[Any] = [self._start(i) for i in range(n)]
        self._reap(n)
        self._wait_for_shards(range(n))

    def _start(self, i: int, placement: Any = "SPREAD") -> Any:
        """Shard actor `i`, created or found by its name."""
        return self.actor_cls.options(
            name=f"shard-{i}",
            namespace=self.config.server.namespace,
            lifetime="detached",
            get_if_exists=True,
            max_restarts=-1,
            max_task_retries=0,
            num_cpus=0,
            resources=self.config.server.shard_resources or None,
            scheduling_strategy=placement,
        ).remote(i, self.config)

    def _reap(self, n: int) -> None:
        """Stop shards running past the stored count: a supervisor died in the middle of
        a shrink or a grow, or a deployment before this one left them. They own no slot.
        Every name up to the most shards there can be is looked at (one missing in the
        middle does not hide the rest)."""
        for i in range(n, MAX_SHARDS):
            actor = self._running(i)
            if actor is not None:
                log.warning(
                    "supervisor: shard %d runs but the slot map has %d shards; stopping it", i, n
                )
                self._stop_one(i, actor)

    def _running(self, i: int) -> Any:
        try:
            return ray.get_actor(f"shard-{i}", namespace=self.config.server.namespace)
        except ValueError:
            return None

    def _wait_for_shards(self, which: range, timeout: float = 600.0) -> None:
        """Until every shard of `which` answers. A restarted supervisor (its node was
        lost) may find shards that are themselves restarting: it waits for them instead
        of failing its own start (which Ray would retry in a loop)."""
        deadline = time.monotonic() + timeout
        for i in which:
            shard = self.shards[i]
            while True:
                try:
                    ray.get(shard.ready.remote(), timeout=max(1.0, deadline - time.monotonic()))
                    break
                except (ActorUnavailableError, GetTimeoutError):
                    if time.monotonic() > deadline:
                        raise
                    log.warning("supervisor: shard %d is restarting; waiting for it", i)
                    time.sleep(0.5)

    def _stop_one(self, i: int, actor: Any) -> None:
        """Graceful stop of one shard (a snapshot, so a later start restores it fast),
        then the actor is killed for good (Ray does not restart it)."""
        try:
            ray.get(actor.stop.remote(), timeout=300)
        except Exception as e:  # noqa: BLE001 - stopping: the WAL has everything
            log.error("shard %d: no snapshot at stop (%s); its WAL has everything", i, e)
        ray.kill(actor, no_restart=True)

    def __len__(self) -> int:
        return len(self.shards)

    def stage(self, calls: Sequence[Call]) -> list[Any]:
        refs = []
        for method, args in calls:
            shared = [ray.put(a) for a in args]  # one copy in the object store for all
            refs += [s.call.remote(method, *shared) for s in self.shards]
        return list(ray.get(refs))

    def abort(self, method: str, *args: Any) -> None:
        self.ask(method, *args)

    def commit(self, method: str, *args: Any) -> None:
        refs = [getattr(s, method).remote(*args) for s in self.shards]
        for i, ref in enumerate(refs):
            try:
                ray.get(ref, timeout=60)
            except Exception as e:  # noqa: BLE001 - it restarts with the stored state
                log.error("shard %d: %s failed (%s); it loads the stored state", i, method, e)

    def ask(self, method: str, *args: Any) -> list[Any]:
        return list(ray.get([getattr(s, method).remote(*args) for s in self.shards]))

    def status(self) -> list[dict[str, Any]]:
        out = []
        for i, s in enumerate(self.shards):
            try:
                out.append(ray.get(s.status.remote(), timeout=5))
            except UNAVAILABLE:
                out.append({"shard": i, "ready": False})
        return out

    def endpoints(self, timeout: float = 1.0) -> list[str | None]:
        refs = [s.endpoint.remote() for s in self.shards]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout)
        answered = set(ready)
        out: list[str | None] = []
        for ref in refs:
            try:
                out.append(ray.get(ref) if ref in answered else None)
            except UNAVAILABLE:
                out.append(None)
        return out

    def call_on(self, i: int, method: str, *args: Any) -> Any:
        try:
            return ray.get(self.shards[i].call.remote(method, *args), timeout=self.CALL_TIMEOUT_S)
        except UNAVAILABLE as e:
            raise ShardUnavailable(f"shard {i} did not answer {method} ({type(e).__name__})") from e

    def grow(self, n: int) -> None:
        """Start shards len..n-1, one at a time, each on the node that offers the shard
        resource and runs the fewest shards (a node just added gets the new shards)."""
        for i in range(len(self.shards), n):
            leftover = self._running(i)  # started for another map or config: never adopted
            if leftover is not None:
                log.warning("supervisor: a shard-%d owning no slot still runs; stopping it", i)
                ray.kill(leftover, no_restart=True)
                self._gone(i)
            self.shards.append(self._start(i, self._emptiest_node()))
            self._wait_for_shards(range(i, i + 1))

    def _gone(self, i: int, timeout: float = 30.0) -> None:
        """Until the name shard-i is free again (a killed actor's name is released
        shortly after)."""
        deadline = time.monotonic() + timeout
        while self._running(i) is not None and time.monotonic() < deadline:
            time.sleep(0.1)

    def _emptiest_node(self) -> Any:
        """Soft affinity to the alive node with the shard resources that runs the fewest
        of our shards (soft: if it dies, Ray restarts the shard elsewhere); SPREAD when
        there is no choice to make."""
        wanted = self.config.server.shard_resources or {}
        nodes = [
            n["NodeID"]
            for n in ray.nodes()
            if n.get("Alive")
            and all(n.get("Resources", {}).get(k, 0.0) >= v for k, v in wanted.items())
        ]
        if len(nodes) < 2:
            return "SPREAD"
        load = Counter(self.node_of(i) for i in range(len(self.shards)))
        best = min(nodes, key=lambda node: (load.get(node, 0), node))
        return NodeAffinitySchedulingStrategy(best, soft=True)

    def shrink(self, n: int) -> None:
        while len(self.shards) > n:  # the last first: those left are always a prefix
            self._stop_one(len(self.shards) - 1, self.shards.pop())

    def node_of(self, i: int) -> str | None:
        shards = self.shards  # (a shrink in the mover's thread may shorten it meanwhile)
        if i >= len(shards):
            return None
        try:
            return str(ray.get(shards[i].node_id.remote(), timeout=5))
        except UNAVAILABLE:
            return None

    def stop(self) -> None:
        """Snapshot every shard (graceful stop: the next start restores them), then stop."""
        snaps = [s.stop.remote() for s in self.shards]
        for i, ref in enumerate(snaps):
            try:
                ray.get(ref, timeout=300)
            except Exception as e:  # noqa: BLE001 - stopping: the WAL has everything
                log.error("shard %d: no snapshot at stop (%s); its WAL has everything", i, e)
        for s in self.shards:
            ray.kill(s, no_restart=True)


class SupervisorActor(Supervisor):
    """The `Supervisor` as the named `supervisor` actor, over the shard actors."""

    def __init__(self, config: Config) -> None:
        warm_native(config)  # first: shards (re)starting find native code ready
        # the stored map (saved now if there is none: shards start with it) says how
        # many shards run, whatever the config says since
        slot_map = slot_store(config).initial(config.server.shards)
        self.actors = RayFleet(config, slot_map.shards)
        super().__init__(config, self.actors)

    def pid(self) -> int:
        """The supervisor's process id (ops and failure tests)."""
        return os.getpid()

    def stop_shards(self) -> None:
        """Snapshot every shard, then stop them (graceful stop)."""
        self.actors.stop()


def ensure_supervisor(config: Config, timeout: float = 120.0) -> Any:
    """Get the running supervisor or start it (and its shards); waits until ready."""
    actor: Any = (
        ray.remote(SupervisorActor)
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


class RayShardLink:
    """A shard actor's handle as a `router.ShardLink`; a Ray failure is `Unreachable`.
    `actor` None: found by name at the first call (a shard's own port builds links to
    shards that may not have started yet)."""

    def __init__(self, actor: Any, name: str, namespace: str) -> None:
        self.actor = actor
        self.name, self.namespace = name, namespace

    def _handle(self) -> Any:
        if self.actor is None:
            try:
                self.actor = ray.get_actor(self.name, namespace=self.namespace)
            except ValueError:
                raise Unreachable(f"no actor {self.name} runs") from None
        return self.actor

    async def call_many(self, calls: list[Call]) -> list[Any]:
        try:
            return await self._handle().call_many.remote(calls)
        except UNAVAILABLE as e:
            raise Unreachable(type(e).__name__) from e

    async def ready(self) -> None:
        """A call to a restarting actor waits in Ray until its __init__ is done."""
        try:
            await self._handle().ready.remote()
        except UNAVAILABLE as e:
            if isinstance(e, ActorDiedError):  # stopped for good: maybe started anew
                with contextlib.suppress(ValueError):
                    self.actor = ray.get_actor(self.name, namespace=self.namespace)
            raise Unreachable(type(e).__name__) from e


class SupervisorClient:
    """Calls to the supervisor from an ingress replica, the admin server or a shard's own
    port: found again by name after a stop (or at the first call when `actor` is None),
    503 `supervisor_unavailable` while Ray restarts it."""

    def __init__(self, config: Config, actor: Any = None) -> None:
        self.namespace = config.server.namespace
        self.actor = actor

    async def call(self, method: str, *args: Any) -> Any:
        try:
            if self.actor is None:
                self.actor = ray.get_actor(SUPERVISOR, namespace=self.namespace)
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


class ShardRouter(Router):
    """The router of an ingress replica, over the running deployment's actors (started
    if none runs)."""

    supervisor: SupervisorClient

    def __init__(self, config: Config) -> None:
        actor = ensure_supervisor(config)
        names, owners, epoch = ray.get(actor.layout.remote())
        ns = config.server.namespace

        def link_of(i: int) -> RayShardLink:
            name = f"shard-{i}"
            return RayShardLink(ray.get_actor(name, namespace=ns), name, ns)

        links = [link_of(i) for i in range(len(names))]
        client = SupervisorClient(config, actor)
        super().__init__(config, client, list(owners), links, epoch, link_of)
