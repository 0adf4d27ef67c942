"""A transport stand-in for identity tests: the real `Identities` over real in-process
`Shard`s and the real identity audit log.

Each call runs the way `ShardActor.call` runs it (request methods only, core errors
returned as data, the WAL flushed before the answer), after a yield to the event loop as
a remote call would, so concurrent callers interleave between steps. A test can make a
call fail as a restarting shard does (`ShardUnavailable`), before it runs or after it ran
and was made durable (the answer lost), and can restart a shard from its directory.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actors.audit import IdentityAudit
from actors.calls import REQUEST_METHODS, ShardUnavailable, error_answer
from actors.shard import Shard
from decisioning.config import Config
from decisioning.errors import NextbestError
from decisioning.profile.slots import contiguous_map, slot_of
from serving.identity import Identities
from tests.unit.decisioning.policy.test_decide import Clock

SUPERVISOR = -1


@dataclass
class Fault:
    shard: int | None  # None: any shard; SUPERVISOR: the supervisor
    method: str
    after: bool  # the call ran (durably); only its answer is lost
    times: int


class LocalRouter:
    """What `Identities` and `serving.events` use of `actors.router.Router`."""

    def __init__(self, config: Config, shards: int, directory: Path) -> None:
        self.config = config
        self.directory = directory
        self.clock = Clock()
        self.slot_map = contiguous_map(shards)
        self.shards = [self._open(i) for i in range(shards)]
        self.audit = IdentityAudit(str(directory / "audit" / "identity.jsonl"))
        self.faults: list[Fault] = []
        self.log: list[tuple[int, str]] = []  # every call that ran: (shard, method)

    def _open(self, i: int) -> Shard:
        return Shard(i, self.config, clock=self.clock, log_dir=str(self.directory / f"s{i}"))

    def restart(self, i: int) -> None:
        """The shard's process goes; a new one recovers from its snapshot and WAL."""
        self.shards[i].close()
        self.shards[i] = self._open(i)

    def shard_of(self, customer_id: str) -> int:
        return self.slot_map[slot_of(customer_id)]

    def fail(
        self, method: str, shard: int | None = None, *, after: bool = False, times: int = 1
    ) -> None:
        """The next `times` calls of `method` (on `shard`) fail as an unavailable shard."""
        self.faults.append(Fault(shard, method, after, times))

    def _fault(self, shard: int, method: str) -> Fault | None:
        for f in self.faults:
            if f.method == method and f.shard in (None, shard) and f.times > 0:
                f.times -= 1
                return f
        return None

    def _run(self, shard: int, method: str, args: tuple[Any, ...]) -> Any:
        fault = self._fault(shard, method)
        if fault is not None and not fault.after:
            raise ShardUnavailable(f"shard {shard} is unavailable (injected)")
        assert method in REQUEST_METHODS, method
        s = self.shards[shard]
        try:
            result = getattr(s, method)(*args)
        except NextbestError as e:
            result = error_answer(e)
        s.flush()
        self.log.append((shard, method))
        if fault is not None:
            raise ShardUnavailable(f"shard {shard} answered nothing (injected)")
        return result

    async def call(self, shard: int, method: str, *args: Any) -> Any:
        await asyncio.sleep(0)  # a yield, as a remote call makes: others run meanwhile
        return self._run(shard, method, args)

    async def call_all(self, calls: list[tuple[int, str, Any]], settle: bool = False) -> list[Any]:
        async def one(s: int, m: str, a: Any) -> Any:
            try:
                return await self.call(s, m, a)
            except ShardUnavailable as e:
                if not settle:  # (settle: the error is that call's answer)
                    raise
                return e

        return list(await asyncio.gather(*(one(s, m, a) for s, m, a in calls)))

    async def supervisor_call(self, method: str, *args: Any) -> Any:
        await asyncio.sleep(0)
        fault = self._fault(SUPERVISOR, method)
        if fault is not None and not fault.after:
            raise ShardUnavailable("the supervisor is unavailable (injected)")
        do = {
            "audit_identity": "append",
            "identity_audit": "entries",
            "scrub_identity_audit": "scrub",
        }[method]
        result = getattr(self.audit, do)(*args)
        if fault is not None:
            raise ShardUnavailable("the supervisor answered nothing (injected)")
        return result

    def forward_cycles(self) -> list[str]:
        """Ids whose forward pointers, over every shard, lead back to themselves."""
        forwards = {m: t for s in self.shards for m, t in s.forwards.items()}
        bad = []
        for start in forwards:
            seen, cur = {start}, start
            while cur in forwards:
                cur = forwards[cur]
                if cur in seen:
                    bad.append(start)
                    break
                seen.add(cur)
        return bad

    def close(self) -> None:
        for s in self.shards:
            s.close()


def fast(config: Config) -> Config:
    """`config` without fsync: a test's "crash" closes the shard (written, not synced)."""
    return config.model_copy(update={"server": config.server.model_copy(update={"fsync": "none"})})


def identities(config: Config, shards: int, directory: Path) -> tuple[Identities, LocalRouter]:
    router = LocalRouter(config, shards, directory)
    return Identities(config, router), router
