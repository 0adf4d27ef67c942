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
from collections.abc import Sequence
from typing import Any

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, GetTimeoutError, RayActorError

from actors.calls import Call, ShardUnavailable
from actors.deployed import shard_dir
from actors.rollout import warm_native
from actors.router import Router, Unreachable
from actors.shard_actor import SUPERVISOR, ShardActor
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
    """The shard actors as a `fleet.Fleet`: created (or found by name) and awaited."""

    def __init__(self, config: Config) -> None:
        actor_cls = ray.remote(ShardActor)
        self.shards: list[Any] = [
            actor_cls.options(
                name=f"shard-{i}",
                namespace=config.server.namespace,
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
        self.actors = RayFleet(config)
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
    """A shard actor's handle as a `router.ShardLink`; a Ray failure is `Unreachable`."""

    def __init__(self, actor: Any, name: str, namespace: str) -> None:
        self.actor = actor
        self.name, self.namespace = name, namespace

    async def call_many(self, calls: list[Call]) -> list[Any]:
        try:
            return await self.actor.call_many.remote(calls)
        except UNAVAILABLE as e:
            raise Unreachable(type(e).__name__) from e

    async def ready(self) -> None:
        """A call to a restarting actor waits in Ray until its __init__ is done."""
        try:
            await self.actor.ready.remote()
        except UNAVAILABLE as e:
            if isinstance(e, ActorDiedError):  # stopped for good: maybe started anew
                with contextlib.suppress(ValueError):
                    self.actor = ray.get_actor(self.name, namespace=self.namespace)
            raise Unreachable(type(e).__name__) from e


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
