"""The identity book's changes as WAL records: links, forward pointers, owed merges,
pins, cancelled attempts and absorbed merge ids (the protocol: decisioning/profile/
identity.py).

Each record has two names: `TAG`, the tag the WAL writes it under (decisioning/journal/
records.py holds every record type and the rules for tags), and `BOOK`, the kind the
book's own change lists use (`Book.link`, `Book.pin`, ... give `(BOOK, body)`, and
`Book.apply` takes one). The same change is applied live and in replay because both go
through `to_book`. Guarantee: `from_book(to_book(r)) == r` (a property test checks it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, get_args

__all__ = [
    "IDENTITY",
    "Absorbed",
    "Cancelled",
    "Forwarded",
    "IdentityRecord",
    "Linked",
    "Owed",
    "Pinned",
    "Unpinned",
    "from_book",
    "to_book",
]


@dataclass(frozen=True, slots=True)
class Linked:
    """An identifier linked to a customer (None: unlinked)."""

    TAG: ClassVar[str] = "link"
    BOOK: ClassVar[str] = "L"
    alias: str
    customer_id: str | None

    def body(self) -> list[Any]:
        return [self.alias, self.customer_id]


@dataclass(frozen=True, slots=True)
class Forwarded:
    """A merged customer's forward pointer set (None: removed)."""

    TAG: ClassVar[str] = "forward"
    BOOK: ClassVar[str] = "F"
    merged: str
    survivor: str | None

    def body(self) -> list[Any]:
        return [self.merged, self.survivor]


@dataclass(frozen=True, slots=True)
class Owed:
    """A merge owed (survivor None: settled)."""

    TAG: ClassVar[str] = "owe"
    BOOK: ClassVar[str] = "owe"
    merged: str
    survivor: str | None
    reason: str = ""
    merge_id: str | None = None

    def body(self) -> list[Any]:
        if self.survivor is None:  # as the book writes a settlement
            return [self.merged, None]
        return [self.merged, self.survivor, self.reason, self.merge_id]


@dataclass(frozen=True, slots=True)
class Pinned:
    """Merge step 1: a survivor pinned by an attempt."""

    TAG: ClassVar[str] = "pin"
    BOOK: ClassVar[str] = "pin"
    survivor: str
    token: str
    merged: str
    ts: float

    def body(self) -> list[Any]:
        return [self.survivor, self.token, self.merged, self.ts]


@dataclass(frozen=True, slots=True)
class Unpinned:
    """Merge step 6: the attempt's pin is gone."""

    TAG: ClassVar[str] = "unpin"
    BOOK: ClassVar[str] = "unpin"
    survivor: str
    token: str

    def body(self) -> list[Any]:
        return [self.survivor, self.token]


@dataclass(frozen=True, slots=True)
class Cancelled:
    """A stale attempt called off: its freeze is refused from now on."""

    TAG: ClassVar[str] = "cancel"
    BOOK: ClassVar[str] = "cancel"
    token: str
    ts: float

    def body(self) -> list[Any]:
        return [self.token, self.ts]


@dataclass(frozen=True, slots=True)
class Absorbed:
    """A merge id folded here (kept a while, so a retried absorb folds nothing)."""

    TAG: ClassVar[str] = "absorbed"
    BOOK: ClassVar[str] = "absorbed"
    merge_id: str
    ts: float

    def body(self) -> list[Any]:
        return [self.merge_id, self.ts]


IdentityRecord = Linked | Forwarded | Owed | Pinned | Unpinned | Cancelled | Absorbed
IDENTITY: tuple[type[IdentityRecord], ...] = get_args(IdentityRecord)
_BY_BOOK: dict[str, type[IdentityRecord]] = {cls.BOOK: cls for cls in IDENTITY}


def from_book(change: tuple[str, list[Any]]) -> IdentityRecord:
    """The record of a change the identity book made (`Book.link`, `Book.pin`, ...)."""
    kind, body = change
    return _BY_BOOK[kind](*body)


def to_book(record: IdentityRecord) -> tuple[str, list[Any]]:
    """The change as the identity book applies it (`Book.apply`), live and in replay."""
    return record.BOOK, record.body()
