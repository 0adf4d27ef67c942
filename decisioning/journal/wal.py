"""A shard's write-ahead log: framed, checksummed records in numbered segment files.

A record is `length (u32 LE) | crc32 of payload (u32 LE) | payload (msgpack)`. Records
are written with os.write before the shard acknowledges them, so a killed process loses
nothing it acknowledged; `fsync` decides what a lost *machine* can take with it:

- `always`: fsync after every record;
- `batch`:  one fsync per actor call, before its answers go out (group commit: all the
  requests coalesced into the call share it);
- `none`:   the OS writes back when it likes (up to ~30 s on Linux can be lost with the
  machine; nothing with the process).

Segments are `wal-<seq>-g<generation>.log` (see fencing.py for generations); a snapshot
records the first segment it does not cover, and older segments are deleted after it is
durable. Reading stops at the first record that is short or fails its checksum (a torn
tail: only unacknowledged data can be there) and cuts the file there.

A write or fsync that fails (disk full, read-only, I/O error) raises `StorageFailed`.
Nothing written since the last acknowledgement may be trusted then, and the caller's
memory may hold changes the log does not: the shard answers nothing more and restarts
from what is on disk (crash-only; see `actors/remote.py`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import msgpack

__all__ = [
    "FsyncPolicy",
    "Replay",
    "StorageFailed",
    "Wal",
    "fsync_path",
    "name",
    "replay",
    "segments",
]

log = logging.getLogger("nextbest.wal")
FsyncPolicy = Literal["always", "batch", "none"]
_HEAD = struct.Struct("<II")
MAX_RECORD = 64 * 1024 * 1024


class StorageFailed(Exception):
    """The log could not be written or made durable; what this call applied is not
    acknowledged, and the writer must stop and recover from disk."""


def name(seq: int, generation: int) -> str:
    """A segment's file name: its sequence number, then the generation that wrote it."""
    return f"wal-{seq:012d}-g{generation:06d}.log"


def segments(directory: str) -> list[tuple[int, int, str]]:
    """(seq, generation, file name) of every segment in `directory`, oldest first."""
    out = []
    for f in os.listdir(directory):
        if f.startswith("wal-") and f.endswith(".log"):
            seq, _, gen = f[4:-4].partition("-g")  # no generation: written before them
            try:
                out.append((int(seq), int(gen or 0), f))
            except ValueError:
                continue
    return sorted(out)


def fsync_path(path: str) -> None:
    """fsync a file or a directory (a new or renamed name survives a crash too)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class Replay:
    """What reading the log found: records replayed and bytes cut from a torn tail."""

    records: int = 0
    dropped_bytes: int = 0
    segments: int = 0
    lengths: dict[str, int] = field(default_factory=dict)


class Wal:
    """Appends records to a new segment of `directory`, numbered after every one there."""

    def __init__(self, directory: str, fsync: FsyncPolicy = "batch", generation: int = 0) -> None:
        os.makedirs(directory, exist_ok=True)
        self.directory = directory
        self.policy = fsync
        self.generation = generation
        existing = segments(directory)
        self.seq = existing[-1][0] + 1 if existing else 1
        self._fd = -1
        self._dirty = False
        self.bytes = 0
        self._open(self.seq)

    def _path(self, seq: int) -> str:
        return os.path.join(self.directory, name(seq, self.generation))

    def _open(self, seq: int) -> None:
        self._fd = os.open(self._path(seq), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        fsync_path(self.directory)

    def append(self, record: Any) -> None:
        payload = msgpack.packb(record, use_bin_type=True)
        frame = _HEAD.pack(len(payload), zlib.crc32(payload)) + payload
        try:
            written = os.write(self._fd, frame)
            if written != len(frame):  # a short write: the disk filled up mid-record
                raise OSError(28, f"short write ({written} of {len(frame)} bytes)")
            if self.policy == "always":
                os.fsync(self._fd)
        except OSError as e:
            raise StorageFailed(f"{self._path(self.seq)}: {e}") from e
        self.bytes += len(frame)
        if self.policy != "always":
            self._dirty = True

    def commit(self) -> None:
        """Make everything appended so far durable per policy (call before acking)."""
        if self._dirty and self.policy == "batch":
            try:
                os.fsync(self._fd)
            except OSError as e:
                raise StorageFailed(f"{self._path(self.seq)}: fsync: {e}") from e
        self._dirty = False

    def rotate(self) -> int:
        """Start a new segment; returns its number (a snapshot taken now covers all
        segments before it)."""
        self.commit()
        try:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
            self.seq += 1
            self._open(self.seq)
        except OSError as e:
            raise StorageFailed(f"{self.directory}: rotating the log: {e}") from e
        return self.seq

    def drop_before(self, seq: int) -> None:
        """Delete segments older than `seq` (a durable snapshot covers them) written by
        this generation or an older one, never by a newer one. Safe from another thread
        while records are appended (never to such a segment)."""
        for s, gen, f in segments(self.directory):
            if s < seq and gen <= self.generation:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(self.directory, f))

    def recount(self) -> None:
        """`bytes` anew from the segments there (after drop_before)."""
        self.bytes = sum(
            os.path.getsize(os.path.join(self.directory, f))
            for _, gen, f in segments(self.directory)
            if gen <= self.generation
        )

    def close(self) -> None:
        if self._fd >= 0:
            try:
                self.commit()
            finally:
                os.close(self._fd)
                self._fd = -1


def replay(directory: str, files: list[tuple[str, int]], report: Replay) -> Iterator[Any]:
    """Records of the given segments, each read up to its given length, in order. A torn
    or corrupt tail is cut (the file truncated there) and reported; `report.lengths`
    says how far each segment holds good records."""
    for f, limit in files:
        report.segments += 1
        path = os.path.join(directory, f)
        with open(path, "rb") as fh:
            data = fh.read(limit)
        pos = 0
        while pos < len(data):
            if pos + _HEAD.size > len(data):
                break
            length, crc = _HEAD.unpack_from(data, pos)
            end = pos + _HEAD.size + length
            if length > MAX_RECORD or end > len(data):
                break
            payload = data[pos + _HEAD.size : end]
            if zlib.crc32(payload) != crc:
                break
            report.records += 1
            yield msgpack.unpackb(payload, raw=False, strict_map_key=False)
            pos = end
        report.lengths[f] = pos
        if pos < len(data):
            dropped = len(data) - pos
            report.dropped_bytes += dropped
            log.warning(
                "%s: cut a torn or corrupt tail of %d bytes at offset %d (%d records kept)",
                path,
                dropped,
                pos,
                report.records,
            )
            with open(path, "r+b") as fh:
                fh.truncate(pos)
                fh.flush()
                os.fsync(fh.fileno())
