"""Every shard of a deployment addressed together, and the one way to switch what they
all serve: a model, a catalog or a context table.

Hazard: a customer's decisions must not depend on which shard owns them, so a change
reaches every shard or none; and a shard that restarts in the middle of a change must
come back serving what the others serve.

Protocol (the supervisor runs one change at a time):

1. stage: every shard checks the change and prepares it, serving nothing new yet;
2. if any shard refuses, abort on every shard and answer the first refusal;
3. store the change (registry, catalog store, context store): from here on a shard
   that (re)starts loads it;
4. commit: every shard serves it from its next decision on.

Guarantees: a refusal switches no shard and stores nothing. Once step 3 is done every
shard ends up serving the change: one that misses its commit (it died) loads it at its
restart, so a failed commit is logged, not answered.

A fleet also grows and shrinks (actors/slots.py moves the slots): a shard started by
`grow` loads what is stored (models, catalog, context tables) before it answers, so it
serves what the others serve before it takes a slot; `shrink` stops the last shards
gracefully (a snapshot, then gone; their directories stay on disk) once they own no slot.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from actors.calls import Call, Refusal, refused, run_calls
from actors.shard import Shard

__all__ = ["Fleet", "LocalFleet", "stage_all"]

log = logging.getLogger("nextbest.actors")


class Fleet(Protocol):
    """The shards of a deployment, addressed together (remote.RayFleet, LocalFleet)."""

    def __len__(self) -> int: ...

    def stage(self, calls: Sequence[Call]) -> list[Any]:
        """Run each request-path call on every shard; the answers, call by call and
        shard by shard in each call. A refusal is the error value, returned, not raised."""
        ...

    def abort(self, method: str, *args: Any) -> None:
        """Drop what `method`'s stage prepared, on every shard."""
        ...

    def commit(self, method: str, *args: Any) -> None:
        """Serve what was staged, on every shard; a shard that fails is logged (it loads
        the stored state when it restarts) and does not stop the others."""
        ...

    def ask(self, method: str, *args: Any) -> list[Any]:
        """Every shard's answer to a plain (not request-path) method."""
        ...

    def status(self) -> list[dict[str, Any]]:
        """Every shard's status; `{"shard": i, "ready": False}` for one not answering."""
        ...

    def endpoints(self) -> list[str | None]:
        """Where each shard serves its customers itself; None for one without a port of
        its own or not answering within a second (a client sends those to the ingress)."""
        ...

    def call_on(self, i: int, method: str, *args: Any) -> Any:
        """One request-path call on shard `i`: its answer, a refusal as the error value.
        Raises when the shard cannot answer now (restarting, gone, timed out)."""
        ...

    def grow(self, n: int) -> None:
        """Start shards len..n-1 and return once each answers ready."""
        ...

    def shrink(self, n: int) -> None:
        """Stop shards n.. (the last first): a snapshot, then gone. Their directories stay
        on disk; the caller has moved every slot away from them first."""
        ...

    def node_of(self, i: int) -> str | None:
        """The node shard `i` runs on (None: not answering)."""
        ...


def stage_all(fleet: Fleet, calls: Sequence[Call], abort: Call) -> tuple[list[Any], Refusal | None]:
    """Steps 1 and 2: stage `calls` on every shard; if any refuses, run `abort` on every
    shard. Returns what the shards staged, and the first refusal or None."""
    staged = fleet.stage(calls)
    refusals = [a for a in staged if refused(a)]
    if refusals:
        method, args = abort
        fleet.abort(method, *args)
        return staged, refusals[0]
    return staged, None


class LocalFleet:
    """Shards in this process (plain `Shard` objects), called as the shard actors are:
    staging calls through the request path (errors as answers), the rest directly.
    `factory(i)` makes shard `i` when the fleet grows (None: it cannot grow)."""

    NODE = "local"  # every shard runs here

    def __init__(
        self, shards: Sequence[Shard], factory: Callable[[int], Shard] | None = None
    ) -> None:
        self.shards = list(shards)
        self.factory = factory

    def __len__(self) -> int:
        return len(self.shards)

    def stage(self, calls: Sequence[Call]) -> list[Any]:
        return [run_calls(s, [(m, a)])[0] for m, a in calls for s in self.shards]

    def abort(self, method: str, *args: Any) -> None:
        self.ask(method, *args)

    def commit(self, method: str, *args: Any) -> None:
        for i, s in enumerate(self.shards):
            try:
                getattr(s, method)(*args)
            except Exception as e:  # noqa: BLE001 - as a shard actor's failure: logged
                log.error("shard %d: %s failed (%s); it loads the stored state", i, method, e)

    def ask(self, method: str, *args: Any) -> list[Any]:
        return [getattr(s, method)(*args) for s in self.shards]

    def status(self) -> list[dict[str, Any]]:
        return [s.status() for s in self.shards]

    def endpoints(self) -> list[str | None]:
        return [None for _ in self.shards]  # in-process shards have no port of their own

    def call_on(self, i: int, method: str, *args: Any) -> Any:
        return run_calls(self.shards[i], [(method, args)])[0]

    def grow(self, n: int) -> None:
        factory = self.factory
        if n > len(self.shards) and factory is None:
            msg = "this fleet has no shard factory: it cannot grow"
            raise ValueError(msg)
        while len(self.shards) < n and factory is not None:
            self.shards.append(factory(len(self.shards)))

    def shrink(self, n: int) -> None:
        while len(self.shards) > n:  # the last first, as RayFleet does
            self.shards.pop().stop()

    def node_of(self, i: int) -> str | None:
        return self.NODE if 0 <= i < len(self.shards) else None
