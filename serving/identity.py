"""Identity at the ingress: identifiers resolved to customers, merged customers followed
to their survivors, links made by events, and the merge protocol's steps in order.

An identifier is `<kind>:<value>` for a kind in `identity.kinds` (e.g.
`cookie_id:abc`). Its link lives on the shard that owns the identifier's slot, so no
central store is needed. An identifier without a link is its own anonymous profile;
the first event that links it to a customer (e.g. a login) merges that profile into the
customer's. The protocol, and why forward pointers never form a cycle, is in
decisioning/profile/identity.py; every step is idempotent, so a merge left half done is finished
by whoever comes next: a retry, the identifier's next link or resolution, or `sweep`.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

from actors.messages import (
    Absorb,
    Cancelled,
    CancelMerge,
    Compress,
    DropMerged,
    ForgetIdentity,
    Freeze,
    Frozen,
    IdentityInfo,
    IdentityOf,
    Link,
    Linked,
    MergedInto,
    Pin,
    Resolve,
    Resolved,
    Settle,
    Unfinished,
    UnfinishedMerges,
    Unpin,
)
from actors.remote import ShardUnavailable
from decisioning.config import Config
from decisioning.errors import AlreadyMerged, NextbestError
from decisioning.profile import Event
from serving.errors import error_of, http_error, is_error, ok
from serving.fanout import MAX_HOPS, Fanout, Router

__all__ = ["MAX_HOPS", "Identities", "Router", "is_error"]

log = logging.getLogger("nextbest.identity")
MAX_CHAIN = 10_000  # a longer chain of forward pointers would be a bug (a cycle)
STALE_PIN_S = 60.0  # a merge attempt holding its pin this long is called off by the sweep


def _already_merged(merged: str, target: str) -> AlreadyMerged:
    err = AlreadyMerged(merged, target)
    err.field = "merged"  # type: ignore[attr-defined]  # (the body's field at fault)
    return err


def _one(survivor: str, merged: str) -> dict[str, Any]:
    return {
        "changed": False,
        "survivor": survivor,
        "merged": merged,
        "reason": "already one customer",
    }


class Identities:
    """Identifiers, merges and links over the shards (see the module docstring)."""

    def __init__(self, config: Config, router: Router) -> None:
        self.kinds = frozenset(config.identity.kinds)
        self.links = {k: tuple(v) for k, v in config.identity.links.items()}
        self.sweep_s = config.identity.sweep_s
        self.router = router
        self.fanout = Fanout(router, self.root)

    def is_alias(self, customer_id: str) -> bool:
        kind, sep, _ = customer_id.partition(":")
        return bool(sep) and kind in self.kinds

    async def _at(self, key: str, method: str, message: Any) -> Any:
        """`method(message)` on the shard that owns `key`."""
        return await self.router.call(self.router.shard_of(key), method, message)

    async def canonical(self, customer_id: str) -> str:
        """The customer an identifier is linked to, or the identifier itself (its own
        anonymous profile); a customer id as it is. A merge its link still owes is
        finished first."""
        if not self.kinds or not self.is_alias(customer_id):
            return customer_id
        resolved: Resolved = ok(await self._at(customer_id, "resolve", Resolve(customer_id)))
        if resolved.owed:
            await self._finish_quietly(customer_id)
        return resolved.customer_id or customer_id

    async def root(self, customer_id: str) -> str:
        """Where a (maybe merged) customer lives now: the end of its chain of merges. A
        longer chain than one hop is shortened on the way (each pointer to the end)."""
        path: list[tuple[str, str]] = []
        current = customer_id
        while (
            target := ok(await self._at(current, "merged_into", MergedInto(current)))
        ) is not None:
            path.append((current, target))
            current = target
            if len(path) > MAX_CHAIN:
                raise RuntimeError(f"forward pointers from {customer_id} do not end")
        for merged, expected in path[:-1]:
            await self._at(merged, "compress", Compress(merged, expected, current))
        return current

    async def call(
        self, customer_id: str, method: str, message_of: Callable[[str], Any]
    ) -> tuple[Any, str]:
        """`method(message_of(customer_id))` on the customer's shard, following merges (a
        shard answers `moved` for a merged customer, before applying anything)."""
        return await self.fanout.follow_one(customer_id, method, message_of)

    def linked_by(self, events: list[Event]) -> list[tuple[str, str]]:
        """(identifier, customer) pairs the applied events link, per identity.links."""
        out = []
        for e in events:
            for kind in self.links.get(e.type, ()):
                value = e.properties.get(kind)
                if isinstance(value, str | int) and not isinstance(value, bool) and value != "":
                    alias = f"{kind}:{value}"
                    if alias != e.customer_id:
                        out.append((alias, e.customer_id))
        return out

    async def link(self, alias: str, customer_id: str) -> dict[str, Any] | None:
        """Link; the first link of an identifier also merges its anonymous profile. None
        when done, else what stopped it ({code, message}): once the link is recorded its
        merge is owed durably and finishes later (next link, resolution, or sweep)."""
        try:
            linked: Linked = ok(await self._at(alias, "link", Link(alias, customer_id)))
            if linked.owed is not None:
                merged = await self.finish(alias)
                err = error_of(merged)
                if err is not None:
                    wire = http_error(err)
                    return {"code": wire.code, "message": wire.message}
        except ShardUnavailable as e:
            return {"code": e.code, "message": str(e)}
        return None

    async def merge(self, survivor: str, merged: str) -> dict[str, Any] | NextbestError:
        """Fold `merged` into `survivor` (POST /v1/identities/merge). The survivor is
        followed to where it lives now. `merged` must be a live profile: one merged
        already (an identifier: linked) is refused with `already_merged`, unless it is
        one customer with the survivor already (then nothing changes, or a merge of the
        two left unfinished is finished)."""
        survivor = await self.root(await self.canonical(survivor))
        info: IdentityInfo = ok(await self._at(merged, "identity_of", IdentityOf(merged, False)))
        went = info.merged_into or info.linked_to
        if went is not None:
            target = await self.root(went)
            if target != survivor:
                return _already_merged(merged, target)
            if info.owed is None:
                return _one(survivor, merged)
            return await self.finish(merged)
        if merged == survivor:
            return _one(survivor, merged)
        return await self._attempt(survivor, merged, "merge")

    async def finish(self, merged: str) -> dict[str, Any] | NextbestError:
        """Finish the merge owed for `merged`, if one is (any caller, any time, as often
        as it likes: every step is idempotent)."""
        info: IdentityInfo = ok(await self._at(merged, "identity_of", IdentityOf(merged, False)))
        owed = info.owed
        if owed is None:
            return {"changed": False, "merged": merged, "reason": "nothing owed"}
        survivor = info.merged_into or owed.survivor
        done = await self._attempt(survivor, merged, owed.reason)
        if isinstance(done, dict) and done["reason"] == "already one customer":  # (itself)
            ok(await self._at(merged, "settle", Settle(merged)))
        return done

    async def _pin(self, survivor: str, token: str, merged: str) -> tuple[Any, str]:
        """Step 1: pin the survivor, following it while it is merged away (into
        `merged` itself, even: then the two are one customer already)."""
        return await self.fanout.follow_one(
            await self.root(survivor),
            "pin",
            lambda s: Pin(s, token, merged),
            stop=lambda s: _one(s, merged) if s == merged else None,
        )

    async def _attempt(
        self, survivor: str, merged: str, reason: str
    ) -> dict[str, Any] | NextbestError:
        """One attempt at the protocol's steps (decisioning/profile/identity.py). The pin is let
        go when the attempt is refused before freezing or done; after a freeze that did
        not finish it stays, so the survivor stays put for whoever finishes the merge."""
        token = secrets.token_hex(8)
        pinned, survivor = await self._pin(survivor, token, merged)
        if pinned is not True:
            return pinned  # type: ignore[no-any-return]
        frozen = await self._at(merged, "freeze", Freeze(merged, survivor, token, reason))
        if is_error(frozen):  # refused: nothing was frozen by this attempt
            await self._at(survivor, "unpin", Unpin(survivor, token))
            return frozen  # type: ignore[no-any-return]
        f: Frozen = frozen
        entry = {
            "ts": time.time(),
            "merge_id": f.merge_id,
            "survivor": survivor,
            "merged": merged,
            "reason": f.reason,
            "had_profile": f.known,
        }
        if not f.done:
            assert f.merge_id is not None  # (a merge to fold has its id)
            fold = Absorb(survivor, f.merge_id, f.state, f.contacts)
            absorbed = await self._at(survivor, "absorb", fold)
            if is_error(absorbed):
                return absorbed  # type: ignore[no-any-return]
            await self.router.supervisor_call("audit_identity", entry)
            dropped = await self._at(
                merged, "drop_merged", DropMerged(merged, self.is_alias(merged))
            )
            if is_error(dropped):
                return dropped  # type: ignore[no-any-return]
        await self._at(survivor, "unpin", Unpin(survivor, token))
        return {"changed": not f.done, **entry}

    async def _finish_quietly(self, merged: str) -> None:
        done: Any
        try:
            done = await self.finish(merged)
        except ShardUnavailable as e:
            done = e
        if is_error(done):
            log.warning("the merge of %s is still unfinished: %s", merged, done)

    async def _reap(self, survivor: str, merged: str, token: str) -> None:
        """A pin held too long: call its attempt off (or, if it froze, finish the merge),
        and only then let the pin go."""
        r: Cancelled = ok(
            await self._at(merged, "cancel_merge", CancelMerge(merged, survivor, token))
        )
        if r.frozen and r.owed and is_error(await self.finish(merged)):
            return
        await self._at(survivor, "unpin", Unpin(survivor, token))

    async def sweep(self, stale_s: float = STALE_PIN_S) -> int:
        """Finish the merges left unfinished on every shard, and call off attempts whose
        pins are older than `stale_s`; returns how many were found."""
        found = await self.fanout.everywhere("unfinished_merges", UnfinishedMerges(stale_s))
        n = 0
        for items in found:
            item: Unfinished
            for item in [] if is_error(items) else items:
                n += 1
                try:
                    if item.kind == "owed":
                        await self._finish_quietly(item.merged)
                    else:
                        assert item.token is not None  # (a pin has its attempt's token)
                        await self._reap(item.survivor, item.merged, item.token)
                except ShardUnavailable as e:
                    log.warning("identity sweep: %s", e)
        return n

    async def sweep_forever(self) -> None:
        """`sweep` every `identity.sweep_s` seconds (an ingress replica runs this)."""
        while True:
            await asyncio.sleep(self.sweep_s)
            try:
                await self.sweep()
            except Exception:  # noqa: BLE001 - the next round tries again
                log.exception("identity sweep failed")

    async def describe(self, key: str) -> dict[str, Any]:
        """What every shard knows of an id or identifier."""
        infos = await self.fanout.everywhere("identity_of", IdentityOf(key))
        info: dict[str, Any] = {"id": key, "linked_to": None, "merged_into": None, "aliases": []}
        i: IdentityInfo
        for i in infos:
            if not is_error(i):
                info["linked_to"] = info["linked_to"] or i.linked_to
                info["merged_into"] = info["merged_into"] or i.merged_into
                info["aliases"] += i.aliases
        start = info["linked_to"] or key
        info["customer_id"] = await self.root(start)
        info["aliases"] = sorted(info["aliases"])
        return info

    async def forget(self, *customer_ids: str) -> None:
        """Erasure: links to and from each customer, its forward pointers and merges in
        flight, on every shard, and its audit entries; then the same for every id that
        was merged into one of them (the same person), down the whole tree of merges."""
        todo, done = list(dict.fromkeys(customer_ids)), set()
        while todo:
            c = todo.pop(0)
            done.add(c)
            merged = await self.fanout.everywhere("forget_identity", ForgetIdentity(c))
            todo += [m for ids in merged for m in ok(ids) if m not in done and m not in todo]
            await self.router.supervisor_call("scrub_identity_audit", c)
