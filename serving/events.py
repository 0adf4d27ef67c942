"""Events at the ingress: identifiers resolved to their customers, each shard's part of
a batch sent to it, merged customers followed, and the links the events make.

Once a shard has applied events the answer says so, whatever happens to the links that
follow: a link or merge that could not finish is listed in `links_pending` (its merge is
owed durably on the identifier's shard and finishes later), never turned into an error
for events that were in fact applied.
"""

from __future__ import annotations

from typing import Any

from actors.remote import ShardUnavailable
from serving.identity import MAX_HOPS, Identities, is_error
from serving.responses import raise_for

__all__ = ["apply_events", "ingest"]


async def apply_events(ident: Identities, wires: list[dict[str, Any]]) -> int:
    """Apply checked events: identifiers resolved to their customers, merged customers
    followed to where they went (a shard applies nothing of a batch that names a merged
    customer: it answers `moved` with all of them, and that part goes again). Rewrites
    each event's customer_id to the customer it was applied to."""
    router = ident.router
    if ident.kinds:
        aliases = {w["customer_id"] for w in wires if ident.is_alias(w["customer_id"])}
        resolved = {a: await ident.canonical(a) for a in aliases}
        for w in wires:
            w["customer_id"] = resolved.get(w["customer_id"], w["customer_id"])
    pending: dict[int, list[dict[str, Any]]] = {}
    for w in wires:
        pending.setdefault(router.shard_of(w["customer_id"]), []).append(w)
    accepted = 0
    for _ in range(MAX_HOPS + 1):
        calls = list(pending.items())
        results = await router.call_all([(s, "apply_events", evs) for s, evs in calls])
        pending = {}
        for (_, evs), r in zip(calls, results, strict=True):
            if is_error(r, "moved"):
                err = r["error"]
                moved = err.get("moved") or {err["customer"]: err["target"]}
                roots = {gone: await ident.root(gone) for gone in moved}  # (and shortened)
                for w in evs:
                    w["customer_id"] = roots.get(w["customer_id"], w["customer_id"])
                    pending.setdefault(router.shard_of(w["customer_id"]), []).append(w)
            else:
                raise_for(r)
                accepted += r
        if not pending:
            return accepted
    raise ShardUnavailable("merges are moving these customers right now", "merge_in_progress")


async def ingest(ident: Identities, wires: list[dict[str, Any]]) -> dict[str, Any]:
    """POST /v1/events after validation: `{"accepted": n}`, plus `links_pending` when a
    link the events make could not finish."""
    accepted = await apply_events(ident, wires)
    pending = []
    for alias, customer in ident.linked_by(wires):  # e.g. a login
        err = await ident.link(alias, customer)
        if err is not None:
            pending.append({"identifier": alias, "customer_id": customer, "error": err})
    return {"accepted": accepted, **({"links_pending": pending} if pending else {})}
