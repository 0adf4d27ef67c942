"""customer id -> profile row, in about 45 bytes per id (a dict of str costs ~125).

Ids are kept once, as UTF-8 in one growing byte buffer; an open-addressing table of
int32 rows (linear probing, at most half full) finds them by their xxh3 hash, and a
lookup compares the stored bytes, so two ids with the same hash never mix. Rows are
handed out in order 0, 1, 2, ... and never reused (nothing is deleted yet).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator

import numpy as np
import xxhash

__all__ = ["IdIndex"]

_EMPTY = -1


class IdIndex:
    """Maps customer ids to dense rows; `get` is the hot path (one hash, one probe)."""

    _hash = staticmethod(xxhash.xxh3_64_intdigest)  # tests swap in a colliding one

    def __init__(self, capacity: int = 1024) -> None:
        self._blob = bytearray()
        self._ends = array("Q")  # id r is _blob[_ends[r - 1] : _ends[r]]
        self._hashes = array("Q")  # xxh3-64 of id r
        size = 16
        while size < 2 * capacity:
            size *= 2
        self._table = array("i", [_EMPTY]) * size
        self._mask = size - 1
        self._erased: set[int] = set()  # rows whose id was removed (bytes zeroed)

    def __len__(self) -> int:
        """Ids held (removed ones not counted)."""
        return len(self._hashes) - len(self._erased)

    @property
    def rows(self) -> int:
        """Rows handed out so far, removed ones included (rows are never reused)."""
        return len(self._hashes)

    def __contains__(self, customer_id: object) -> bool:
        return isinstance(customer_id, str) and self.get(customer_id) is not None

    def __iter__(self) -> Iterator[str]:
        """Ids in row order (removed ones skipped)."""
        start = 0
        for r, end in enumerate(self._ends):
            if r not in self._erased:
                yield self._blob[start:end].decode("utf-8")
            start = end

    def id_of(self, row: int) -> str:
        start = self._ends[row - 1] if row else 0
        return self._blob[start : self._ends[row]].decode("utf-8")

    def get(self, customer_id: str) -> int | None:
        key = customer_id.encode("utf-8")
        h = self._hash(key)
        table, hashes, ends, mask = self._table, self._hashes, self._ends, self._mask
        i = h & mask
        while True:
            r = table[i]
            if r == _EMPTY:
                return None
            if hashes[r] == h:
                start = ends[r - 1] if r else 0
                if self._blob[start : ends[r]] == key:
                    return r
            i = (i + 1) & mask

    def add(self, customer_id: str) -> int:
        """The row of a new id (the caller has checked it is not there)."""
        key = customer_id.encode("utf-8")
        h = self._hash(key)
        r = len(self._hashes)
        self._blob += key
        self._ends.append(len(self._blob))
        self._hashes.append(h)
        if 2 * (r + 1) > len(self._table):
            self._rehash(2 * len(self._table))
        else:
            table, mask = self._table, self._mask
            i = h & mask
            while table[i] != _EMPTY:
                i = (i + 1) & mask
            table[i] = r
        return r

    def buffers(self) -> tuple[bytes, np.ndarray]:
        """A copy of the ids held: UTF-8 back to back, and where each one ends, in row
        order without removed rows (snapshots; see `live_rows`)."""
        if not self._erased:
            return bytes(self._blob), np.array(self._ends, dtype=np.uint64)
        parts, ends, start, total = [], [], 0, 0
        for r, end in enumerate(self._ends):
            if r not in self._erased:
                parts.append(self._blob[start:end])
                total += end - start
                ends.append(total)
            start = end
        return b"".join(parts), np.array(ends, dtype=np.uint64)

    def live_rows(self) -> np.ndarray | None:
        """The rows still held, in order; None when none was removed (all of them)."""
        if not self._erased:
            return None
        keep = np.ones(len(self._hashes), dtype=bool)
        keep[list(self._erased)] = False
        return np.flatnonzero(keep)

    def remove(self, customer_id: str) -> int | None:
        """Forget an id: out of the table (backward-shift deletion, so lookups of the
        others stay exact), its bytes and hash zeroed. Returns its row, None if unknown."""
        r = self.get(customer_id)
        if r is None:
            return None
        table, hashes, mask = self._table, self._hashes, self._mask
        i = hashes[r] & mask
        while table[i] != r:
            i = (i + 1) & mask
        table[i] = _EMPTY
        j = i
        while True:  # pull back every entry whose probe run crossed the freed slot
            j = (j + 1) & mask
            moved = table[j]
            if moved == _EMPTY:
                break
            home = hashes[moved] & mask
            if ((j - home) & mask) >= ((j - i) & mask):
                table[i], table[j] = moved, _EMPTY
                i = j
        start = self._ends[r - 1] if r else 0
        self._blob[start : self._ends[r]] = bytes(self._ends[r] - start)
        hashes[r] = 0
        self._erased.add(r)
        return r

    @classmethod
    def from_buffers(cls, blob: bytes, ends: np.ndarray) -> IdIndex:
        """The index of ids given as `buffers()` returns them, hashed anew (a damaged
        buffer cannot leave a stale hash behind)."""
        n = len(ends)
        bounds = ends.tolist()
        if n and (bounds[-1] != len(blob) or np.any(np.diff(ends.astype(np.int64)) < 0)):
            raise ValueError("id buffers are inconsistent (ends do not fit the id bytes)")
        index = cls(capacity=n)
        index._blob = bytearray(blob)
        index._ends = array("Q", bounds)
        h, view = cls._hash, memoryview(blob)
        starts = [0, *bounds[:-1]] if n else []
        index._hashes = array("Q", [h(view[s:e]) for s, e in zip(starts, bounds, strict=True)])
        if n:
            index._rehash(len(index._table))
        return index

    def nbytes(self) -> int:
        """Bytes held (buffers as allocated, not counting spare room)."""
        return (
            len(self._blob)
            + self._ends.itemsize * len(self._ends)
            + self._hashes.itemsize * len(self._hashes)
            + self._table.itemsize * len(self._table)
        )

    def _rehash(self, size: int) -> None:
        """Place every row in a new table with numpy, a round per probe step: in a round
        each still-unplaced row takes its slot if free (lowest row wins a contested
        slot), the others move one slot on. Slots never empty again, so every row ends
        up behind an unbroken run from its home slot, as linear probing needs."""
        mask = size - 1
        table = np.full(size, _EMPTY, dtype=np.int32)
        hashes = np.frombuffer(self._hashes, dtype=np.uint64)
        pending = np.arange(len(hashes), dtype=np.int32)
        if self._erased:  # removed rows stay out of the table
            pending = np.setdiff1d(pending, np.fromiter(self._erased, dtype=np.int32))
        slot = (hashes[pending] & np.uint64(mask)).astype(np.int64)
        while pending.size:
            free = table[slot] == _EMPTY
            cand_slot, first = np.unique(slot[free], return_index=True)
            winners = pending[free][first]
            table[cand_slot] = winners
            placed = np.zeros(pending.size, dtype=bool)
            placed[np.flatnonzero(free)[first]] = True
            pending, slot = pending[~placed], (slot[~placed] + 1) & mask
        del hashes  # release the buffer export before the array can grow again
        self._table = array("i", table.tobytes())
        self._mask = mask
