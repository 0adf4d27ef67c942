"""Shard snapshots in Arrow IPC: profiles, tracked decisions, idempotency keys, contact
history, trigger timers, the undelivered outbound messages, the identity records and the
answers given under a request id.

A snapshot is a directory `snapshot-<seq>-g<generation>/` where `seq` is the first WAL
segment it does not cover. It is written under a temporary name, every file fsynced,
then renamed (and the parent fsynced), so a reader sees a whole snapshot or none. The
profile table's schema metadata carries the format, the profile layout key (a snapshot
of another profile schema is refused, never misread) and the shard's counters.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from decisioning.errors import NextbestError
from decisioning.journal.wal import fsync_path

__all__ = ["SnapshotError", "State", "name", "prune", "read", "snapshots", "write"]

# 2: identity rows carry owed merges, pins, cancelled attempts (note, token, ts);
# 3: each idempotency key carries the slot of its customer (slots move between shards);
# 4: the answers given under a request id (answers.arrow; none before)
FORMAT = 4
READABLE = frozenset((1, 2, 3, 4))  # a format 1 snapshot has only links and forward pointers
_DTYPES = {"f32": pa.float32(), "f64": pa.float64(), "i32": pa.int32(), "u16": pa.uint16()}


class SnapshotError(NextbestError):
    """A snapshot that cannot be used (other profile schema, damaged files)."""


@dataclass
class State:
    """Everything a shard needs back after a restart, besides the WAL tail."""

    wal_seq: int
    layout_key: str
    id_blob: bytes  # customer ids, UTF-8 back to back, in row order
    id_ends: np.ndarray  # where each id ends in id_blob (uint64)
    matrices: dict[str, np.ndarray]
    # (decision_id, (customer_id, actions, ts, channel, placement, model_version))
    decisions: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    seen: list[bytes] = field(default_factory=list)  # digests of idempotency keys
    seen_slots: list[int] = field(default_factory=list)  # each key's slot (-1: none)
    counters: dict[str, int] = field(default_factory=dict)
    # contact policy history: (customer_id, ts, action_id, kind, channel)
    contacts: list[tuple[str, float, str, str, str]] = field(default_factory=list)
    # trigger timers: (customer_id, trigger, due, armed at)
    timers: list[tuple[str, str, float, float]] = field(default_factory=list)
    # undelivered messages: (id, customer_id, channel, trigger, ts, decision)
    outbound: list[list[Any]] = field(default_factory=list)
    # identity (decisioning/profile/identity.py): (kind, key, target, note, token, ts)
    identity: list[tuple[Any, ...]] = field(default_factory=list)
    # answers under a request id (actors/shard/answers.py): (key, slot, decision_id,
    # customer_id, actions, ts, channel, placement, model_version, extra)
    answers: list[tuple[Any, ...]] = field(default_factory=list)


def name(seq: int, generation: int) -> str:
    """A snapshot's directory name: the first WAL segment it does not cover, then the
    generation that wrote it."""
    return f"snapshot-{seq:012d}-g{generation:06d}"


def snapshots(directory: str) -> list[tuple[int, int, str]]:
    """(seq, generation, name) of every complete snapshot in `directory`, oldest first."""
    out: list[tuple[int, int, str]] = []
    if not os.path.isdir(directory):
        return out
    for f in os.listdir(directory):
        if f.startswith("snapshot-") and not f.endswith(".tmp"):
            seq, _, gen = f[len("snapshot-") :].partition("-g")  # none: before generations
            try:
                out.append((int(seq), int(gen or 0), f))
            except ValueError:
                continue
    return sorted(out)


def _write_table(path: str, table: pa.Table) -> None:
    with pa.OSFile(path, "wb") as sink, ipc.new_file(sink, table.schema) as w:
        w.write_table(table)
    fsync_path(path)


def _matrix_column(arr: np.ndarray, name: str) -> pa.Array:
    n, width = arr.shape
    flat = pa.array(np.ascontiguousarray(arr).reshape(-1), type=_DTYPES[name])
    return pa.FixedSizeListArray.from_arrays(flat, width) if width else pa.nulls(n)


# Every file but the profiles is rows: its columns' names and types, in file order.
Columns = tuple[tuple[str, pa.DataType], ...]
_DECISIONS: Columns = (
    ("decision_id", pa.string()),
    ("customer_id", pa.string()),
    ("actions", pa.list_(pa.string())),
    ("ts", pa.float64()),
    ("channel", pa.string()),
    ("placement", pa.string()),
    ("model_version", pa.string()),
)
_CONTACTS: Columns = (
    ("customer_id", pa.string()),
    ("ts", pa.float64()),
    ("action_id", pa.string()),
    ("kind", pa.string()),
    ("channel", pa.string()),
)
_TIMERS: Columns = (
    ("customer_id", pa.string()),
    ("trigger", pa.string()),
    ("due", pa.float64()),
    ("armed", pa.float64()),
)
_OUTBOUND: Columns = (
    ("id", pa.string()),
    ("customer_id", pa.string()),
    ("channel", pa.string()),
    ("trigger", pa.string()),
    ("ts", pa.float64()),
    ("decision", pa.binary()),  # msgpack
)
_IDENTITY: Columns = (
    ("kind", pa.string()),
    ("key", pa.string()),
    ("target", pa.string()),
    ("note", pa.string()),
    ("token", pa.string()),
    ("ts", pa.float64()),
)
_IDENTITY_SINCE_2 = frozenset(("note", "token", "ts"))  # (format 1: links and forwards only)
_ANSWERS: Columns = (
    ("key", pa.binary(16)),
    ("slot", pa.int32()),
    *_DECISIONS,
    ("extra", pa.binary()),  # msgpack
)


def _rows_table(rows: Sequence[Sequence[Any]], columns: Columns) -> pa.Table:
    """A table of `rows`, one column per entry of `columns`."""
    cols: list[tuple[Any, ...]] = list(zip(*rows, strict=True)) if rows else [()] * len(columns)
    return pa.table({name: pa.array(c, type=t) for (name, t), c in zip(columns, cols, strict=True)})


def _profiles_table(state: State) -> pa.Table:
    """The customer ids and their rows of every matrix; the metadata says what they are."""
    meta = {
        "format": FORMAT,
        "layout_key": state.layout_key,
        "wal_seq": state.wal_seq,
        "counters": state.counters,
        "widths": {k: int(v.shape[1]) for k, v in state.matrices.items()},
    }
    n = len(state.id_ends)
    offsets = np.zeros(n + 1, dtype=np.int64)
    offsets[1:] = state.id_ends
    ids = pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(state.id_blob))
    cols: dict[str, pa.Array] = {"customer_id": ids}
    cols |= {k: _matrix_column(v, k) for k, v in state.matrices.items()}
    return pa.table(cols).replace_schema_metadata({"nextbest": json.dumps(meta)})


def _decisions_table(state: State) -> pa.Table:
    rows = [(did, cid, list(acts), *rest) for did, (cid, acts, *rest) in state.decisions]
    return _rows_table(rows, _DECISIONS)


def _seen_table(state: State) -> pa.Table:
    slots = state.seen_slots or [-1] * len(state.seen)
    return pa.table(
        {"key": pa.array(state.seen, pa.binary(16)), "slot": pa.array(slots, pa.int32())}
    )


def _read_seen(path: str) -> tuple[list[bytes], list[int]]:
    """The idempotency keys and their slots (-1 for every key before format 3)."""
    t = _read_table(os.path.join(path, "seen.arrow"))
    keys = t.column("key").to_pylist()
    if "slot" not in t.column_names:
        return keys, [-1] * len(keys)
    return keys, t.column("slot").to_pylist()


def _outbound_table(state: State) -> pa.Table:
    rows = [(*m[:5], msgpack.packb(m[5])) for m in state.outbound]
    return _rows_table(rows, _OUTBOUND)


def _answers_table(state: State) -> pa.Table:
    rows = [(*a[:4], list(a[4]), *a[5:9], msgpack.packb(a[9])) for a in state.answers]
    return _rows_table(rows, _ANSWERS)


# The files of a snapshot and what writes each, in the order they are written.
_WRITERS: tuple[tuple[str, Callable[[State], pa.Table]], ...] = (
    ("profiles.arrow", _profiles_table),
    ("decisions.arrow", _decisions_table),
    ("seen.arrow", lambda s: _seen_table(s)),
    ("contacts.arrow", lambda s: _rows_table(s.contacts, _CONTACTS)),
    ("timers.arrow", lambda s: _rows_table(s.timers, _TIMERS)),
    ("outbound.arrow", _outbound_table),
    ("identity.arrow", lambda s: _rows_table(s.identity, _IDENTITY)),
    ("answers.arrow", _answers_table),
)


def write(directory: str, state: State, generation: int = 0) -> str:
    """Write a snapshot atomically; returns its path. Older snapshots stay (see prune)."""
    os.makedirs(directory, exist_ok=True)
    final = os.path.join(directory, name(state.wal_seq, generation))
    tmp = final + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    for file, table in _WRITERS:
        _write_table(os.path.join(tmp, file), table(state))
    fsync_path(tmp)
    shutil.rmtree(final, ignore_errors=True)
    os.rename(tmp, final)
    fsync_path(directory)
    return final


def prune(directory: str, keep: int, generation: int) -> None:
    """Delete snapshots older than `keep` written by `generation` or an older one (never
    a newer one's), and leftover temporary ones of this generation."""
    for f in os.listdir(directory):
        if not f.startswith("snapshot-"):
            continue
        seq, _, gen = f[len("snapshot-") :].removesuffix(".tmp").partition("-g")
        if not seq.isdigit() or not (gen or "0").isdigit() or int(gen or 0) > generation:
            continue
        if (f.endswith(".tmp") and int(gen or 0) == generation) or int(seq) < keep:
            shutil.rmtree(os.path.join(directory, f), ignore_errors=True)


def _read_table(path: str) -> pa.Table:
    with pa.memory_map(path, "r") as src:
        return ipc.open_file(src).read_all()


def _read_rows(
    path: str, file: str, columns: Columns, older: frozenset[str] = frozenset()
) -> list[tuple[Any, ...]]:
    """The rows of one of a snapshot's files ([] if it has none: older shards wrote
    none); a column in `older` that an older format lacks reads as None."""
    if not os.path.exists(os.path.join(path, file)):
        return []
    t = _read_table(os.path.join(path, file)).to_pydict()
    none = [None] * len(t[columns[0][0]])
    cols = (t.get(c, none) if c in older else t[c] for c, _ in columns)
    return list(zip(*cols, strict=True))


def _read_outbound(path: str) -> list[list[Any]]:
    rows = _read_rows(path, "outbound.arrow", _OUTBOUND)
    return [[i, c, ch, tr, ts, msgpack.unpackb(d)] for i, c, ch, tr, ts, d in rows]


def _read_answers(path: str) -> list[tuple[Any, ...]]:
    """The answers under a request id (none before format 4)."""
    rows = _read_rows(path, "answers.arrow", _ANSWERS)
    return [(*r[:9], msgpack.unpackb(r[9], strict_map_key=False)) for r in rows]  # (as the WAL)


def _check(path: str, meta: dict[str, Any], layout_key: str) -> None:
    """Refuse a snapshot of a format this code cannot read, or of another profile schema."""
    if meta.get("format") not in READABLE:
        raise SnapshotError(
            f"{path}: snapshot format {meta.get('format')}, this version reads "
            f"{', '.join(map(str, sorted(READABLE)))}"
        )
    if meta["layout_key"] != layout_key:
        raise SnapshotError(
            f"{path}: written for another profile schema (layout {meta['layout_key']}, "
            f"this config {layout_key}); restore the config it was written with, or move "
            "the shard's directory away to start empty"
        )


def _matrices(profiles: pa.Table, widths: dict[str, int]) -> dict[str, np.ndarray]:
    """Each matrix back from its fixed-size-list column (a zero-width one has nulls)."""
    n = profiles.num_rows
    matrices = {}
    for name, width in widths.items():
        if width:
            col = profiles.column(name).combine_chunks()
            flat = col.flatten().to_numpy(zero_copy_only=False)
            matrices[name] = flat.reshape(n, width)
        else:
            matrices[name] = np.empty((n, 0), dtype=_DTYPES[name].to_pandas_dtype())
    return matrices


def _ids(profiles: pa.Table) -> tuple[bytes, np.ndarray]:
    """The customer ids as written: UTF-8 back to back, and where each ends."""
    n = profiles.num_rows
    ids = profiles.column("customer_id").combine_chunks()
    offsets = np.frombuffer(ids.buffers()[1], dtype=np.int64)[ids.offset : ids.offset + n + 1]
    data = ids.buffers()[2]
    blob = data.to_pybytes()[offsets[0] : offsets[-1]] if n else b""
    return blob, (offsets[1:] - offsets[0]).astype(np.uint64)


def _decisions(d: dict[str, list[Any]]) -> list[tuple[str, tuple[Any, ...]]]:
    """(decision_id, (customer_id, actions, ts, channel, placement, model_version))."""
    names = [c for c, _ in _DECISIONS[1:]]
    records = zip(*(d[c] for c in names), strict=True)
    return list(zip(d["decision_id"], records, strict=True))


def read(directory: str, snapshot: str, layout_key: str) -> State:
    """Load a snapshot; SnapshotError if it is damaged, of a format this code does not
    read, or written for another profile schema."""
    path = os.path.join(directory, snapshot)
    try:
        profiles = _read_table(os.path.join(path, "profiles.arrow"))
        meta = json.loads(profiles.schema.metadata[b"nextbest"])
        decisions = _read_table(os.path.join(path, "decisions.arrow")).to_pydict()
        seen, seen_slots = _read_seen(path)
        contacts = _read_rows(path, "contacts.arrow", _CONTACTS)
        timers = _read_rows(path, "timers.arrow", _TIMERS)
        identity = _read_rows(path, "identity.arrow", _IDENTITY, _IDENTITY_SINCE_2)
        outbound = _read_outbound(path)
        answers = _read_answers(path)
    except (OSError, KeyError, ValueError, pa.ArrowException) as e:
        raise SnapshotError(f"{path}: unreadable snapshot: {e}") from e
    _check(path, meta, layout_key)
    blob, ends = _ids(profiles)
    return State(
        wal_seq=int(meta["wal_seq"]),
        layout_key=meta["layout_key"],
        id_blob=blob,
        id_ends=ends,
        matrices=_matrices(profiles, meta["widths"]),
        decisions=_decisions(decisions),
        seen=seen,
        seen_slots=seen_slots,
        counters={k: int(v) for k, v in meta.get("counters", {}).items()},
        contacts=contacts,
        timers=timers,
        outbound=outbound,
        identity=identity,
        answers=answers,
    )
