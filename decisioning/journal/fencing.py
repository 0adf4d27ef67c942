"""Generations: one writer per shard directory, even when a presumed-dead one still runs.

A shard that starts on a directory takes it over with the next *generation* number.
Every file it writes carries that number (`wal-<seq>-g<gen>.log`,
`snapshot-<seq>-g<gen>/`), and `OWNER.json` says which generation owns the directory
and which files of older generations count, and up to which length:

1. claim: create `claim-<gen>` with O_EXCL (two starting shards never get the same
   number);
2. fence: replace `OWNER.json` (write, fsync, rename, fsync the directory) naming the
   new generation (and the previous `OWNER.json`, should this start crash before 4);
3. list the files that count under the previous owner and recover from exactly those
   (snapshot + WAL, torn tails cut) — read only after the fence, so they hold everything
   the previous owner acknowledged;
4. settle: replace `OWNER.json` again, now with the length of good records of every
   inherited segment; delete files of older generations that are not in it.

The old writer checks `OWNER.json` before it acknowledges anything (a stat, and a read
when the file changed) and stops for good once a newer generation owns the directory:
`Fenced`. Whatever it wrote after the fence — more records, new segments, a snapshot —
is outside the lengths and file list of the new owner's `OWNER.json`, so no recovery
ever reads it, and it never deletes a newer generation's files. It may have appended
a record it then did not acknowledge (between its write and its check): that record
may be replayed, exactly like one written just before a crash — a client retry with
the same event_id is still counted once.

On storage whose metadata is cached (NFS with attribute caching), the old writer sees
the new `OWNER.json` only when its cache expires; mount the data dir with `actimeo=0`
or `noac` for shards, or accept that window.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from typing import Any

from decisioning.journal import snapshot, wal

__all__ = ["Fenced", "Inheritance", "Owner", "OWNER"]

log = logging.getLogger("nextbest.fencing")
OWNER = "OWNER.json"


class Fenced(Exception):
    """A newer generation owns this shard's directory: this writer must stop."""


@dataclass
class Inheritance:
    """What a new generation recovers from: a snapshot, then segments up to lengths."""

    snapshot: str | None = None
    snapshot_seq: int = 1
    segments: list[tuple[str, int]] = field(default_factory=list)  # (file, bytes) by seq


def _claims(directory: str) -> list[int]:
    return [
        int(f[len("claim-") :])
        for f in os.listdir(directory)
        if f.startswith("claim-") and f[len("claim-") :].isdigit()
    ]


def _read_owner(directory: str) -> dict[str, Any] | None:
    try:
        with open(os.path.join(directory, OWNER)) as f:
            data: dict[str, Any] = json.load(f)
            return data
    except FileNotFoundError:
        return None


def _valid(directory: str, owner: dict[str, Any] | None) -> dict[str, int | None]:
    """The files that count under `owner`: those it lists (up to the listed length; None:
    all of it) and every file of its own generation (all of it)."""
    snaps = snapshot.snapshots(directory)
    segs = wal.segments(directory)
    if owner is None:  # a directory from before generations, or none: all of it counts
        return {f: None for *_, f in snaps + segs}
    listed: dict[str, int | None] = owner["files"]
    gen = owner["generation"]
    return {
        f: (listed.get(f) if f in listed else None)
        for _, g, f in snaps + segs
        if f in listed or g == gen
    }


class Owner:
    """This process's ownership of a shard directory (see the module docstring)."""

    def __init__(self, directory: str, generation: int) -> None:
        self.directory = directory
        self.generation = generation
        self.path = os.path.join(directory, OWNER)
        self._stamp: tuple[int, int] | None = None
        self.fenced = False
        self.restarts = 0  # starts that followed a crash, not a clean stop
        self._why = f"{directory}: owned by a newer generation than {generation}"
        self._files: dict[str, int | None] = {}

    @classmethod
    def take_over(cls, directory: str) -> tuple[Owner, Inheritance]:
        """Claim the next generation and fence the previous owner; returns what to recover."""
        os.makedirs(directory, exist_ok=True)
        previous, gen = None, 0
        while not gen:
            previous = _read_owner(directory)
            last = max([previous["generation"] if previous else 0, *_claims(directory)])
            try:
                flags = os.O_CREAT | os.O_EXCL
                os.close(os.open(os.path.join(directory, f"claim-{last + 1:06d}"), flags))
                gen = last + 1
            except FileExistsError:  # another start got this number first: take the next
                continue
        me = cls(directory, gen)
        if previous is not None:  # a start after anything but a clean stop is a restart
            me.restarts = previous.get("restarts", 0) + (0 if previous.get("clean") else 1)
        if previous is not None and not previous["settled"]:
            # it crashed while recovering, before writing any file of its own: what
            # counted for it is what counted for the one before it
            previous = previous["previous"]
        me._write(
            {"generation": gen, "settled": False, "previous": previous, "restarts": me.restarts}
        )
        # fenced: from here the previous owner acknowledges nothing more, so the files
        # and lengths read now hold everything it acknowledged
        files = _valid(directory, previous)
        snaps = [(s, f) for s, _, f in snapshot.snapshots(directory) if f in files]
        inherit = Inheritance()
        if snaps:
            inherit.snapshot_seq, inherit.snapshot = snaps[-1]
        for s, _, f in wal.segments(directory):
            if f in files and s >= inherit.snapshot_seq:
                size = os.path.getsize(os.path.join(directory, f))
                limit = files[f]
                inherit.segments.append((f, size if limit is None else min(limit, size)))
        for claim in _claims(directory):  # claims before the previous one are history
            if claim < gen - 1:
                os.remove(os.path.join(directory, f"claim-{claim:06d}"))
        return me, inherit

    def settle(self, inherit: Inheritance, lengths: dict[str, int]) -> None:
        """After recovery: record how much of each inherited segment counts, and delete
        older generations' files that do not count (written after they were fenced)."""
        files: dict[str, int | None] = {f: lengths.get(f, n) for f, n in inherit.segments}
        if inherit.snapshot is not None:
            files[inherit.snapshot] = None
        self._files = files
        self._settled(clean=False)
        for _, gen, f in snapshot.snapshots(self.directory) + wal.segments(self.directory):
            if gen < self.generation and f not in files:
                path = os.path.join(self.directory, f)
                log.warning("%s: not part of any recovery (stale or covered); deleted", path)
                if os.path.isdir(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    os.remove(path)

    def release(self) -> None:
        """A clean stop (after the last snapshot): the next start is not a restart."""
        self.check()
        self._settled(clean=True)
        self.fenced, self._why = True, f"{self.directory}: this shard has stopped"

    def _settled(self, clean: bool) -> None:
        self._write(
            {
                "generation": self.generation,
                "settled": True,
                "files": self._files,
                "restarts": self.restarts,
                "clean": clean,
            }
        )

    def check(self) -> None:
        """Raise Fenced if a newer generation owns the directory (call before acking)."""
        if self.fenced:
            raise Fenced(self._why)
        try:
            st = os.stat(self.path)
            stamp = (st.st_ino, st.st_mtime_ns)
        except FileNotFoundError:
            stamp = None
        if stamp is not None and stamp == self._stamp:
            return
        current = _read_owner(self.directory)
        if current is None or current["generation"] != self.generation:
            self.fenced = True
            log.error(
                "%s: generation %s owns this shard now; generation %d stops writing",
                self.directory,
                None if current is None else current["generation"],
                self.generation,
            )
            raise Fenced(f"{self.directory}: owned by a newer generation than {self.generation}")
        self._stamp = stamp

    def _write(self, data: dict[str, Any]) -> None:
        tmp = f"{self.path}.{self.generation}.tmp"
        with open(tmp, "w") as f:
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, self.path)
        wal.fsync_path(self.directory)
        st = os.stat(self.path)
        self._stamp = (st.st_ino, st.st_mtime_ns)
