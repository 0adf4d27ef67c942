"""One shard's identity records, and the merge protocol that keeps forward pointers
acyclic and lets any caller finish a merge that another left half done.

What a shard holds (each for the ids in its own slots):

- `aliases`: identifier -> the customer it was linked to (the newest link wins);
- `forwards`: merged id -> the id it was merged into;
- `owed`: merged id -> (survivor asked, reason, merge id) for a merge that is owed or
  under way and not finished: set by an identifier's first link (its anonymous profile
  is owed to the customer) or by `freeze`; cleared by `settle` (the merged row dropped);
- `pins`: survivor -> {attempt token: (merged, since)} for merges into it in flight;
- `cancelled`: attempt tokens whose freeze must be refused from now on (stale attempts);
- `absorbed`: merge ids folded here (a retried or concurrent absorb folds nothing).

The hazard. A merge moves state between two shards without a lock over both. Two merges
in opposite directions (A into B, B into A) or a merge into a survivor that is merged away
at the same moment would each see a live survivor and leave forward pointers in a cycle
(every request for those ids is then `moved` forever) or a pointer to an id that is
itself merged away, whose state would then be folded twice or lost.

The protocol, for one attempt (token T) at merging M into S:

1. `pin(S, T, M)` on S's shard: refused with Moved when S is merged away (the caller
   follows it to its survivor and pins that). While S holds a pin it is never frozen.
2. `freeze(M, S, T)` on M's shard: M forwards to S from now on and its state is handed
   over. Repeating it returns the same. Refused when M was merged into another id
   (AlreadyMerged), when M is pinned itself (MergeBusy: a merge into M is in flight),
   or when T was cancelled. It records the merge as owed, with its merge id.
3. `absorb` on S's shard folds the state once per merge id.
4. The audit entry is written once per merge id.
5. `settle(M)`: the merged row goes and the merge is no longer owed.
6. `unpin(S, T)`.

Why no cycle can form: a pointer M -> S is only ever created in step 2, while S is
pinned, so at that moment S points nowhere (it was live when pinned and a pinned id is
never frozen); a new pointer into an id that points nowhere closes a cycle only if M is S,
which is refused. Pointers are otherwise only removed (erasure) or moved to the end of
their own chain (`compress`, conditional on the pointer being unchanged), and neither
closes a cycle. Why no merge is folded twice or lost: after step 2 the survivor cannot
move (it stays pinned until step 6), so every finisher folds into the same S under the
same merge id, and `owed` says, durably, that the merge is not finished.

Finishing. An attempt that stops early (a shard restarting, an ingress killed) leaves
`owed` on M's shard and maybe a pin on S's. Any caller may run the steps again: an owed
merge is finished by the next link of the identifier, by the ingress resolving it, and by
a periodic sweep. A pin older than a while whose attempt never froze M is called off:
`cancel(M, S, T)` on M's shard refuses T's freeze from then on (unless M is frozen to S
already, and then the merge is finished instead), and only then is the pin removed.

Every change is returned as a WAL record and applied through `apply`, so replay runs the
very code that made the change.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any, NamedTuple

from decisioning.errors import AlreadyMerged, MergeBusy, Moved

__all__ = ["KEEP_S", "Book", "IDENTITY_RECORDS", "Row", "Unfinished", "merge_id"]

KEEP_S = 86_400.0  # cancelled tokens and absorbed merge ids are kept this long
Row = tuple[str, str, str | None, str | None, str | None, float | None]
Record = tuple[str, list[Any]]
IDENTITY_RECORDS = frozenset(("L", "F", "owe", "pin", "unpin", "cancel", "absorbed"))


def merge_id(merged: str, survivor: str, token: str) -> str:
    """The id of one merge: the same for every finisher (it is taken from the freeze)."""
    return hashlib.sha256(f"{merged}\0{survivor}\0{token}".encode()).hexdigest()[:24]


def _set(d: dict[str, Any], key: str, value: Any) -> None:
    if value is None:
        d.pop(key, None)
    else:
        d[key] = value


def _prune(d: dict[str, float], now: float) -> None:
    for key in [k for k, ts in d.items() if ts < now - KEEP_S]:
        del d[key]


class Unfinished(NamedTuple):
    """A merge owed on this shard (`kind` "owed"), or a pin held too long ("pin", with
    the token of its attempt): what the sweep finishes or calls off."""

    kind: str
    merged: str
    survivor: str
    token: str | None = None


class Book:
    """A shard's identity records; every change goes through `apply` (live and replay)."""

    def __init__(self) -> None:
        self.aliases: dict[str, str] = {}
        self.forwards: dict[str, str] = {}
        self.owed: dict[str, tuple[str, str, str | None]] = {}
        self.pins: dict[str, dict[str, tuple[str, float]]] = {}
        self.cancelled: dict[str, float] = {}
        self.absorbed: dict[str, float] = {}
        self._apply: dict[str, Callable[..., None]] = {
            "L": lambda alias, target: _set(self.aliases, alias, target),
            "F": lambda merged, target: _set(self.forwards, merged, target),
            "owe": self._owe,
            "pin": self._pin,
            "unpin": self._unpin,
            "cancel": self._cancel,
            "absorbed": self._absorbed,
        }

    # -- records -------------------------------------------------------------------------

    def apply(self, record: Record | list[Any]) -> None:
        kind, body = record
        self._apply[kind](*body)

    def _do(self, out: list[Record], kind: str, *body: Any) -> None:
        record = (kind, list(body))
        self.apply(record)
        out.append(record)

    def _owe(self, merged: str, survivor: str | None, reason: str = "", mid: Any = None) -> None:
        _set(self.owed, merged, None if survivor is None else (survivor, reason, mid))

    def _pin(self, survivor: str, token: str, merged: str, ts: float) -> None:
        self.pins.setdefault(survivor, {})[token] = (merged, ts)

    def _unpin(self, survivor: str, token: str) -> None:
        pins = self.pins.get(survivor, {})
        pins.pop(token, None)
        if not pins:
            self.pins.pop(survivor, None)

    def _cancel(self, token: str, ts: float) -> None:
        _prune(self.cancelled, ts)
        self.cancelled[token] = ts

    def _absorbed(self, mid: str, ts: float) -> None:
        _prune(self.absorbed, ts)
        self.absorbed[mid] = ts

    # -- snapshot rows: (kind, key, target, note, token, ts) -----------------------------

    def rows(self) -> list[Row]:
        out: list[Row] = [("alias", a, c, None, None, None) for a, c in self.aliases.items()]
        out += [("forward", m, s, None, None, None) for m, s in self.forwards.items()]
        out += [("owed", m, s, why, mid, None) for m, (s, why, mid) in self.owed.items()]
        out += [
            ("pin", s, m, None, t, ts)
            for s, pins in self.pins.items()
            for t, (m, ts) in pins.items()
        ]
        out += [("cancelled", t, None, None, None, ts) for t, ts in self.cancelled.items()]
        out += [("absorbed", mid, None, None, None, ts) for mid, ts in self.absorbed.items()]
        return out

    def load(self, rows: list[Row]) -> None:
        for kind, key, target, note, token, ts in rows:
            if kind == "alias":
                self.aliases[key] = str(target)
            elif kind == "forward":
                self.forwards[key] = str(target)
            elif kind == "owed":
                self.owed[key] = (str(target), note or "", token)
            elif kind == "pin":
                self._pin(key, str(token), str(target), float(ts or 0.0))
            elif kind == "cancelled":
                self.cancelled[key] = float(ts or 0.0)
            elif kind == "absorbed":
                self.absorbed[key] = float(ts or 0.0)

    def digest(self) -> str:
        return repr(
            [sorted(d.items()) for d in (self.aliases, self.forwards, self.owed, self.cancelled)]
            + [sorted((s, sorted(p.items())) for s, p in self.pins.items())]
            + [sorted(self.absorbed.items())]
        )

    # -- links ---------------------------------------------------------------------------

    def link(self, alias: str, customer_id: str) -> list[Record]:
        """Link an identifier; its first link owes the merge of its anonymous profile
        into the customer (unless it was merged somewhere already)."""
        out: list[Record] = []
        previous = self.aliases.get(alias)
        if previous != customer_id:
            self._do(out, "L", alias, customer_id)
        if previous is None and alias not in self.forwards and alias not in self.owed:
            self._do(out, "owe", alias, customer_id, "link", None)
        return out

    # -- the merge steps -----------------------------------------------------------------

    def pin(self, survivor: str, token: str, merged: str, now: float) -> list[Record]:
        """Step 1, on the survivor's shard."""
        target = self.forwards.get(survivor)
        if target is not None:
            raise Moved(survivor, target)
        if self.pins.get(survivor, {}).get(token, (None,))[0] == merged:
            return []
        out: list[Record] = []
        self._do(out, "pin", survivor, token, merged, now)
        return out

    def unpin(self, survivor: str, token: str) -> list[Record]:
        out: list[Record] = []
        if token in self.pins.get(survivor, {}):
            self._do(out, "unpin", survivor, token)
        return out

    def freeze(
        self, merged: str, survivor: str, token: str | None, reason: str
    ) -> tuple[list[Record], dict[str, Any]]:
        """Step 2, on the merged id's shard: (records, {"merge_id", "reason", "done"});
        `done` when the merge was finished before (nothing is left to fold)."""
        out: list[Record] = []
        target = self.forwards.get(merged)
        if target is None:
            if token is not None and token in self.cancelled:
                raise MergeBusy(f"this merge of {merged} was called off as stale; merge again")
            if self.pins.get(merged):
                raise MergeBusy(
                    f"a merge into {merged} is still in flight; merge it away once it is done"
                )
            self._do(out, "F", merged, survivor)
        elif target != survivor:
            raise AlreadyMerged(merged, target)
        owed = self.owed.get(merged)
        if owed is None and target is not None:  # finished earlier
            return out, {"merge_id": None, "reason": reason, "done": True}
        if owed is None or owed[2] is None:
            why = reason if owed is None else owed[1]
            self._do(out, "owe", merged, survivor, why, merge_id(merged, survivor, token or ""))
        s, why, mid = self.owed[merged]
        return out, {"merge_id": mid, "reason": why, "done": False}

    def settle(self, merged: str) -> list[Record]:
        """Step 5, on the merged id's shard: nothing is owed any more."""
        out: list[Record] = []
        if merged in self.owed:
            self._do(out, "owe", merged, None)
        return out

    def cancel(self, merged: str, survivor: str, token: str, now: float) -> list[Record]:
        """Call off a stale attempt: its freeze is refused from now on. Nothing is done
        when M is frozen to S already (the merge is then finished, not called off)."""
        out: list[Record] = []
        if self.forwards.get(merged) != survivor and token not in self.cancelled:
            self._do(out, "cancel", token, now)
        return out

    def compress(self, merged: str, expected: str, target: str) -> list[Record]:
        """Point `merged` straight at the end of its chain, if it still points where the
        caller saw it point (a pointer only moves along its own chain)."""
        out: list[Record] = []
        if self.forwards.get(merged) == expected and expected != target and merged != target:
            self._do(out, "F", merged, target)
        return out

    def unfinished(self, now: float, stale_s: float) -> list[Unfinished]:
        """Merges owed here, and pins older than `stale_s` (their attempt may be gone)."""
        out = [Unfinished("owed", m, s) for m, (s, _, _) in self.owed.items()]
        out += [
            Unfinished("pin", m, s, t)
            for s, pins in self.pins.items()
            for t, (m, since) in pins.items()
            if now - since >= stale_s
        ]
        return out

    # -- erasure -------------------------------------------------------------------------

    def forget(self, customer_id: str) -> list[str]:
        """Every record naming the customer; returns the ids that were merged into it
        (the same person: the caller forgets them too). Replayed through the shard's own
        erasure record, so nothing is returned as a record here."""
        c = customer_id
        for a in [a for a, t in self.aliases.items() if c in (a, t)]:
            del self.aliases[a]
        merged = [m for m, t in self.forwards.items() if t == c]
        for m in [*merged, c]:
            self.forwards.pop(m, None)
        for m in [m for m, (s, _, _) in self.owed.items() if c in (m, s)]:
            del self.owed[m]
        self.pins.pop(c, None)
        for s, pins in list(self.pins.items()):
            for t in [t for t, (m, _) in pins.items() if m == c]:
                self._unpin(s, t)
        return merged
