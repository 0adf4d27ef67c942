"""Identity on a shard: links of identifiers to customers, forward pointers of merged
customers, and this shard's side of each merge step. The protocol, its hazard and its
guarantees are in `decisioning/profile/identity.py`; every change the book makes is
logged as a named record and replayed through the very same `Book.apply`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from actors.messages import Cancelled, Frozen, IdentityInfo, Linked, Owed
from actors.shard.allowance import Allowance
from actors.shard.durability import Durability
from actors.shard.erasure import Erasure
from actors.shard.journal import Journal
from actors.shard.profiles import Profiles
from decisioning.errors import Moved
from decisioning.journal.records import (
    Absorbed,
    ErasedWithIdentity,
    Folded,
    IdentityForgotten,
    IdentityRecord,
    MergedRowDropped,
    from_book,
    to_book,
)
from decisioning.profile import RowState
from decisioning.profile.identity import Book

__all__ = ["Identity"]

_DTYPES = (np.float32, np.float64, np.int32, np.uint16)  # a frozen row's arrays


class Identity:
    """Links, forward pointers and merges in flight, for the ids in this shard's slots."""

    def __init__(
        self,
        book: Book,
        profiles: Profiles,
        allowance: Allowance,
        erasure: Erasure,
        durability: Durability,
        journal: Journal,
        clock: Callable[[], float],
    ) -> None:
        self.book = book
        self.profiles = profiles
        self.allowance = allowance
        self.erasure = erasure
        self.durability = durability
        self.journal = journal
        self.clock = clock

    def _logged(self, changes: list[tuple[str, list[Any]]]) -> None:
        for change in changes:
            self.journal.log(from_book(change))

    def survivor(self, customer_id: str) -> str:
        """Where a merged customer went (following merges of merges on this shard)."""
        forwards, seen = self.book.forwards, {customer_id}
        while customer_id in forwards:
            customer_id = forwards[customer_id]
            if customer_id in seen:
                break
            seen.add(customer_id)
        return customer_id

    def here(self, customer_id: str) -> None:
        """Raise Moved for a customer merged into another (the caller asks there)."""
        target = self.book.forwards.get(customer_id)
        if target is not None:
            raise Moved(customer_id, target)

    def link(self, alias: str, customer_id: str) -> Linked:
        """Link an identifier (the newest link wins); its first link owes a merge."""
        previous = self.book.aliases.get(alias)
        self._logged(self.book.link(alias, customer_id))
        owed = self.book.owed.get(alias)
        return Linked(alias, customer_id, previous, None if owed is None else owed[0])

    # -- the merge steps -----------------------------------------------------------------

    def pin(self, survivor: str, token: str, merged: str) -> bool:
        self._logged(self.book.pin(survivor, token, merged, self.clock()))
        return True

    def unpin(self, survivor: str, token: str) -> bool:
        changes = self.book.unpin(survivor, token)
        self._logged(changes)
        return bool(changes)

    def freeze(self, merged: str, survivor: str, token: str | None, reason: str) -> Frozen:
        """Step 2: `merged` forwards to `survivor` from now on; its state, to fold there."""
        changes, merge = self.book.freeze(merged, survivor, token, reason)
        self._logged(changes)
        state = None if merge["done"] else self.profiles.store.take(merged)
        return Frozen(
            merge["merge_id"],
            merge["reason"],
            merge["done"],
            state is not None,
            None if state is None else [a.tobytes() for a in state],
            [list(e) for e in self.allowance.contacts.entries.get(merged, ())],
        )

    def absorb(
        self, survivor: str, merge_id: str, state: list[bytes] | None, contacts: list[list[Any]]
    ) -> bool:
        """Step 3: fold the frozen state in, once per merge id."""
        self.here(survivor)
        if merge_id in self.book.absorbed or self.profiles.folded(merge_id):
            return False
        record = Folded(survivor, merge_id, state, contacts, self.clock())
        self.journal.log(record)
        self.fold(record)
        return True

    def fold(self, r: Folded) -> None:
        """Another profile folded into the survivor (live, and in replay)."""
        if r.state is not None:
            arrays = [
                np.frombuffer(b, dtype=dt).copy() for b, dt in zip(r.state, _DTYPES, strict=True)
            ]
            self.profiles.store.merge(r.survivor, RowState(*arrays))
        if r.contacts and self.allowance.policies.active:
            self.allowance.contacts.load([(r.survivor, *row) for row in r.contacts])
        self.profiles.fold(r.merge_id)
        self.book.apply(to_book(Absorbed(r.merge_id, self.clock() if r.ts is None else r.ts)))

    def drop_merged(self, merged: str, alias: bool) -> bool:
        """Step 5: the merged row goes and the merge is no longer owed (the forward
        pointer stays); an identifier merged in without a link is linked from now on.
        A customer that is not merged away is never dropped."""
        survivor = self.book.forwards.get(merged)
        if survivor is None:
            return False
        known = self.erasure.drop_row(merged)
        if known:
            self.journal.log(MergedRowDropped(merged))
        if alias and merged not in self.book.aliases:
            self._logged(self.book.link(merged, survivor))  # (forwarded: owes nothing)
        self._logged(self.book.settle(merged))
        return known

    def settle(self, merged: str) -> bool:
        if merged in self.book.forwards:
            return False
        changes = self.book.settle(merged)
        self._logged(changes)
        return bool(changes)

    def cancel(self, merged: str, survivor: str, token: str) -> Cancelled:
        self._logged(self.book.cancel(merged, survivor, token, self.clock()))
        return Cancelled(self.book.forwards.get(merged) == survivor, merged in self.book.owed)

    def compress(self, merged: str, expected: str, target: str) -> bool:
        if merged in self.book.owed:  # (its survivor is pinned: it is the end already)
            return False
        changes = self.book.compress(merged, expected, target)
        self._logged(changes)
        return bool(changes)

    def of(self, key: str, aliases: bool) -> IdentityInfo:
        """What this shard knows of an id or identifier (`aliases`: a scan)."""
        b = self.book
        owed = b.owed.get(key)
        return IdentityInfo(
            b.aliases.get(key),
            b.forwards.get(key),
            None if owed is None else Owed(owed[0], owed[1]),
            tuple(sorted(a for a, c in b.aliases.items() if c == key)) if aliases else (),
        )

    # -- erasure -------------------------------------------------------------------------

    def forget_identity(self, customer_id: str) -> list[str]:
        """Every link to or from the customer, its forward pointers and merges in flight;
        returns the ids that were merged into it (the same person)."""
        touched = self._touches(customer_id)
        merged = self.forget(customer_id)
        if touched and self.journal.wal is not None:
            self.journal.log(IdentityForgotten(customer_id))
            self.durability.erase_soon()  # the records naming the customer leave the disk
        return merged

    def _touches(self, c: str) -> bool:
        b = self.book
        return (
            c in b.forwards
            or c in b.pins
            or c in b.owed
            or any(c in (a, t) for a, t in b.aliases.items())
            or any(t == c for t in b.forwards.values())
            or any(s == c for s, _, _ in b.owed.values())
            or any(m == c for pins in b.pins.values() for m, _ in pins.values())
        )

    def forget(self, customer_id: str) -> list[str]:
        """Forget the identity records (live, and in replay); what was merged into the
        customer, or the customer itself if merged away, is erased as well."""
        own = [customer_id] if customer_id in self.book.forwards else []  # merged away
        merged = self.book.forget(customer_id)
        for m in merged + own:  # merged into the erased customer: the same person
            self.erasure.forget_profile(m)  # (its row is there only if its merge was unfinished)
            self.erasure.erase_logs(m)
        return merged

    # -- replay --------------------------------------------------------------------------

    def redo(self, r: IdentityRecord) -> None:
        self.book.apply(to_book(r))

    def redo_forgotten(self, r: IdentityForgotten) -> None:
        self.forget(r.customer_id)

    def redo_erased(self, r: ErasedWithIdentity) -> None:
        """An erasure as older shards logged it (`x`): the profile and the identity."""
        self.erasure.forget_profile(r.customer_id)
        self.forget(r.customer_id)
        self.erasure.erase_logs(r.customer_id)
