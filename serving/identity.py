"""Identity at the ingress: identifiers resolved to customers, merged customers followed
to their survivors, links made by events, and the three-step merge.

An identifier is `<kind>:<value>` for a kind in `identity.kinds` (e.g.
`cookie_id:abc`). Its link lives on the shard that owns the identifier's slot, so no
central store is needed. An identifier without a link is its own anonymous profile;
the first event that links it to a customer (e.g. a login) merges that profile into the
customer's.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any

from actors.remote import ShardRouter
from decisioning.config import Config

__all__ = ["Identities", "is_error"]

MAX_HOPS = 4  # merges of merges followed at most this deep


def is_error(result: Any, code: str | None = None) -> bool:
    if not (isinstance(result, dict) and "error" in result and len(result) == 1):
        return False
    return code is None or result["error"]["code"] == code


class Identities:
    def __init__(self, config: Config, router: ShardRouter) -> None:
        self.kinds = frozenset(config.identity.kinds)
        self.links = {k: tuple(v) for k, v in config.identity.links.items()}
        self.router = router

    def is_alias(self, customer_id: str) -> bool:
        kind, sep, _ = customer_id.partition(":")
        return bool(sep) and kind in self.kinds

    async def canonical(self, customer_id: str) -> str:
        """The customer an identifier is linked to, or the identifier itself (its own
        anonymous profile); a customer id as it is."""
        if not self.kinds or not self.is_alias(customer_id):
            return customer_id
        linked = await self.router.call(self.router.shard_of(customer_id), "resolve", customer_id)
        return linked if isinstance(linked, str) else customer_id

    async def call(
        self, customer_id: str, method: str, args_of: Callable[[str], tuple[Any, ...]]
    ) -> tuple[Any, str]:
        """`method(*args_of(customer_id))` on the customer's shard, following merges (a
        shard answers `moved` for a merged customer, before applying anything)."""
        result: Any = None
        for _ in range(MAX_HOPS):
            result = await self.router.call(
                self.router.shard_of(customer_id), method, *args_of(customer_id)
            )
            if not is_error(result, "moved"):
                return result, customer_id
            customer_id = result["error"]["target"]
        return result, customer_id

    async def follow(self, customer_id: str) -> str:
        """Where a (maybe merged) customer lives now."""
        for _ in range(MAX_HOPS):
            info = await self.router.call(
                self.router.shard_of(customer_id), "identity_of", customer_id
            )
            if not isinstance(info, dict) or not info.get("merged_into"):
                return customer_id
            customer_id = info["merged_into"]
        return customer_id

    def linked_by(self, events: list[dict[str, Any]]) -> list[tuple[str, str]]:
        """(identifier, customer) pairs the applied events link, per identity.links."""
        out = []
        for e in events:
            for kind in self.links.get(e["type"], ()):
                value = (e.get("properties") or {}).get(kind)
                if isinstance(value, str | int) and not isinstance(value, bool) and value != "":
                    alias = f"{kind}:{value}"
                    if alias != e["customer_id"]:
                        out.append((alias, e["customer_id"]))
        return out

    async def link(self, alias: str, customer_id: str) -> dict[str, Any]:
        """Link; the first link of an identifier merges its anonymous profile."""
        result = await self.router.call(self.router.shard_of(alias), "link", alias, customer_id)
        if is_error(result):
            return result  # type: ignore[no-any-return]
        if result["previous"] is None:
            merged = await self.merge(customer_id, alias, reason="link")
            if is_error(merged):
                return merged
        return result  # type: ignore[no-any-return]

    async def merge(self, survivor: str, merged: str, reason: str = "merge") -> dict[str, Any]:
        """Fold `merged` into `survivor`: (1) freeze — `merged` forwards to `survivor`
        from now on and hands over its state; (2) absorb — the survivor's shard folds it
        in, once per merge id; (3) drop — the merged row goes. Each step is durable
        before the next; a retry after a crash repeats them without double counting."""
        survivor = await self.follow(await self.canonical(survivor))
        merged = await self.follow(merged)
        if merged == survivor:
            return {
                "changed": False,
                "survivor": survivor,
                "merged": merged,
                "reason": "already one customer",
            }
        merge_id = hashlib.sha256(f"{merged}\0{survivor}".encode()).hexdigest()[:24]
        frozen = await self.router.call(self.router.shard_of(merged), "freeze", merged, survivor)
        if is_error(frozen):
            return frozen  # type: ignore[no-any-return]
        absorbed, survivor = await self.call(survivor, "absorb", lambda c: (c, merge_id, frozen))
        if is_error(absorbed):
            return absorbed  # type: ignore[no-any-return]
        dropped = await self.router.call(self.router.shard_of(merged), "drop_merged", merged)
        if is_error(dropped):
            return dropped  # type: ignore[no-any-return]
        if self.is_alias(merged):  # an identifier merged in: it is linked from now on
            await self.router.call(self.router.shard_of(merged), "link", merged, survivor)
        entry = {
            "ts": time.time(),
            "merge_id": merge_id,
            "survivor": survivor,
            "merged": merged,
            "reason": reason,
            "had_profile": frozen["known"],
        }
        await self.router.supervisor_call("audit_identity", entry)
        return {"changed": True, **entry}

    async def describe(self, key: str) -> dict[str, Any]:
        """What every shard knows of an id or identifier."""
        shards = range(len(self.router.shards))
        infos = await self.router.call_all([(s, "identity_of", key) for s in shards])
        info: dict[str, Any] = {"id": key, "linked_to": None, "merged_into": None, "aliases": []}
        for i in infos:
            if isinstance(i, dict) and "error" not in i:
                info["linked_to"] = info["linked_to"] or i["linked_to"]
                info["merged_into"] = info["merged_into"] or i["merged_into"]
                info["aliases"] += i["aliases"]
        start = info["linked_to"] or key
        info["customer_id"] = await self.follow(start)
        info["aliases"] = sorted(info["aliases"])
        return info

    async def forget(self, customer_id: str) -> None:
        """Erasure: links to and from the customer and its forward pointers, on every
        shard, and its audit entries."""
        shards = range(len(self.router.shards))
        await self.router.call_all([(s, "forget_identity", customer_id) for s in shards])
        await self.router.supervisor_call("scrub_identity_audit", customer_id)
