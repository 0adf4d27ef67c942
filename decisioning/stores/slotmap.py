"""The supervisor's slot map on disk: which shard owns each slot, at which epoch, and the
migration in flight (the journal of a slot move, actors/slots.py).

The hazard: the map decides where every customer lives. A map half written (a crash in
the middle of the write) would strand customers on shards that no longer own them, and a
map silently replaced by a fresh one would do the same to every customer of a moved
range. So `save()` replaces the file whole, as the budget ledger does:

1. write the whole map to `<path>.<pid>.tmp`, flush and fsync it;
2. rename it over `<path>` (atomic: a reader sees the old map or the new one);
3. fsync the directory, so the rename itself survives a power loss.

A file that exists but cannot be read, or reads as a map that cannot be right, is never
replaced by a default: `SlotMapError` stops the supervisor's start and says what to do.

File format (JSON): `{"format": 1, "epoch": n, "shards": n, "owners": [[lo, hi, shard],
...], "migration": {"id", "lo", "hi", "src", "dst", "step"} | null}`; `owners` is the map
as runs (`hi` exclusive) in slot order, covering 0..SLOTS-1.

A data dir written before slot maps (shard directories, no map file) was laid out
contiguously over the shards it had: `initial()` adopts that layout, whatever the config
now says, so its customers are found where they are (and can be moved from there).
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
from typing import Any, TypeGuard

import pyarrow.fs as pafs

from decisioning.errors import NextbestError
from decisioning.profile.slots import SLOTS, Migration, SlotMap, ranges
from decisioning.stores.fs import filesystem, replace_file

__all__ = ["SlotMapError", "SlotMapStore", "from_json", "to_json"]

log = logging.getLogger("nextbest.slots")
FORMAT = 1
STEPS = ("frozen", "flipped")


class SlotMapError(NextbestError):
    """The stored slot map cannot be read or is not a valid map: the supervisor does not
    start rather than guess where customers live."""

    code = "slot_map_unreadable"

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(
            f"slot map {path}: {problem}; restore it from a backup, "
            "or move the data dir away to start empty"
        )
        self.message = str(self)
        self.path = path
        self.problem = problem


class SlotMapStore:
    """The slot map file at `path` on `fs`; one writer (the supervisor) at a time.
    `shards_root` is where shard directories live (`<root>/<i>`), to recognise a data
    dir written before slot maps (None: no such check)."""

    def __init__(self, fs: pafs.FileSystem, path: str, shards_root: str | None = None) -> None:
        self.fs, self.path, self.shards_root = fs, path, shards_root
        self.local = isinstance(fs, pafs.LocalFileSystem)

    def clear_stale(self) -> None:
        """Delete temp files a writer killed in the middle of a save left. Only the
        writer (the supervisor, at its start) calls it: a reader doing so could delete
        the file of a save in flight."""
        if self.local:
            for stale in glob.glob(glob.escape(self.path) + ".*.tmp"):
                with contextlib.suppress(OSError):
                    os.unlink(stale)

    @classmethod
    def at(cls, data_dir: str, shards_root: str | None = None) -> SlotMapStore:
        """The map of a deployment: `<data_dir>/slots/map.json`. `shards_root` defaults
        to `<data_dir>/shards` on a local data dir (actors/deployed.py `shard_dir`)."""
        fs, root = filesystem(data_dir)
        if shards_root is None and isinstance(fs, pafs.LocalFileSystem):
            shards_root = f"{root}/shards"
        return cls(fs, f"{root}/slots/map.json", shards_root)

    def load(self) -> SlotMap | None:
        """The stored map; None when there is none. Raises SlotMapError when the file
        cannot be read or does not hold a valid map."""
        try:
            with self.fs.open_input_stream(self.path) as f:
                body = f.read()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise SlotMapError(self.path, f"cannot be read ({e})") from None
        try:
            data = json.loads(body.decode())
        except (UnicodeDecodeError, ValueError) as e:
            raise SlotMapError(self.path, f"is not JSON ({e})") from None
        try:
            return from_json(data)
        except ValueError as e:
            raise SlotMapError(self.path, str(e)) from None

    def save(self, slot_map: SlotMap) -> None:
        """Replace the map file with `slot_map` (see the module docstring). Other pyarrow
        filesystems than the local one offer no fsync: the temp file is written and moved
        with their own calls (whole or absent to readers on object stores)."""
        body = json.dumps(to_json(slot_map), sort_keys=True).encode()
        replace_file(self.fs, self.path, body)

    def initial(self, shards: int) -> SlotMap:
        """The stored map; without one, the layout of a data dir written before slot maps
        (contiguous over its shard directories), else a new contiguous map over `shards`
        (epoch 1). Either is saved before it is returned, so it never changes again
        behind the supervisor's back."""
        self.clear_stale()
        stored = self.load()
        if stored is not None:
            return stored
        legacy = self.legacy_shards()
        if legacy:
            log.warning(
                "slot map: none stored; the data dir has %d shard directories, so their "
                "customers are placed as before slot maps (contiguous over %d shards)",
                legacy,
                legacy,
            )
            slot_map = SlotMap.contiguous(legacy)
        else:
            slot_map = SlotMap.contiguous(shards)
        self.save(slot_map)
        return slot_map

    def legacy_shards(self) -> int:
        """The shard count of a data dir written before slot maps: one more than the
        highest numbered shard directory (0: none)."""
        if self.shards_root is None or not os.path.isdir(self.shards_root):
            return 0
        found = [int(n) for n in os.listdir(self.shards_root) if n.isdigit()]
        found = [i for i in found if os.path.isdir(os.path.join(self.shards_root, str(i)))]
        return max(found) + 1 if found else 0


def to_json(slot_map: SlotMap) -> dict[str, Any]:
    """The map as the file holds it."""
    m = slot_map.migration
    return {
        "format": FORMAT,
        "epoch": slot_map.epoch,
        "shards": slot_map.shards,
        "owners": [list(run) for run in ranges(slot_map.owners)],
        "migration": None
        if m is None
        else {"id": m.id, "lo": m.lo, "hi": m.hi, "src": m.src, "dst": m.dst, "step": m.step},
    }


def from_json(data: Any) -> SlotMap:
    """A map read from the file; ValueError naming the first problem found."""
    if not isinstance(data, dict):
        raise ValueError("is not a JSON object")
    epoch, shards = data.get("epoch"), data.get("shards")
    if not _is_int(epoch) or epoch < 1:
        raise ValueError(f"epoch must be an integer >= 1, not {epoch!r}")
    if not _is_int(shards) or shards < 1:
        raise ValueError(f"shards must be an integer >= 1, not {shards!r}")
    owners = _owners(data.get("owners"), shards)
    return SlotMap(epoch, owners, shards, _migration(data.get("migration"), shards))


def _owners(runs: Any, shards: int) -> tuple[int, ...]:
    if not isinstance(runs, list):
        raise ValueError("owners must be a list of [lo, hi, shard] runs")
    owners: list[int] = []
    for run in runs:
        if not (isinstance(run, list) and len(run) == 3 and all(_is_int(x) for x in run)):
            raise ValueError(f"owners: {run!r} is not a [lo, hi, shard] run of integers")
        lo, hi, shard = run
        if lo != len(owners) or hi <= lo or hi > SLOTS:
            raise ValueError(
                f"owners: run {run!r} does not follow slot {len(owners)} "
                f"(runs must cover 0..{SLOTS - 1} in order)"
            )
        if not 0 <= shard < shards:
            raise ValueError(f"owners: run {run!r} names shard {shard}, not one of {shards}")
        owners += [shard] * (hi - lo)
    if len(owners) != SLOTS:
        raise ValueError(f"owners cover slots 0..{len(owners) - 1}, not 0..{SLOTS - 1}")
    return tuple(owners)


def _migration(data: Any, shards: int) -> Migration | None:
    if data is None:
        return None
    fields = ("id", "lo", "hi", "src", "dst", "step")
    if not isinstance(data, dict) or set(data) != set(fields):
        raise ValueError(f"migration must be null or an object of {', '.join(fields)}")
    m = Migration(**data)
    ints = (m.lo, m.hi, m.src, m.dst)
    if not isinstance(m.id, str) or not all(_is_int(x) for x in ints):
        raise ValueError(f"migration {data!r}: id must be a string, lo, hi, src, dst integers")
    if not (0 <= m.lo < m.hi <= SLOTS and 0 <= m.src < shards and 0 <= m.dst < shards):
        raise ValueError(f"migration {data!r} names slots or shards outside the map")
    if m.src == m.dst or m.step not in STEPS:
        raise ValueError(f"migration {data!r}: src and dst differ, step is one of {STEPS}")
    return m


def _is_int(x: Any) -> TypeGuard[int]:
    return isinstance(x, int) and not isinstance(x, bool)
