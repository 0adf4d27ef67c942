"""Shard snapshots in Arrow IPC: profiles, tracked decisions, idempotency keys, contact
history, trigger timers, the undelivered outbound messages and the identity records.

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
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from decisioning.errors import NextbestError
from decisioning.journal.wal import fsync_path

__all__ = ["SnapshotError", "State", "name", "prune", "read", "snapshots", "write"]

FORMAT = 2  # 2: identity rows carry owed merges, pins, cancelled attempts (note, token, ts)
READABLE = frozenset((1, 2))  # a format 1 snapshot has only links and forward pointers
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
    counters: dict[str, int] = field(default_factory=dict)
    # contact policy history: (customer_id, ts, action_id, kind, channel)
    contacts: list[tuple[str, float, str, str, str]] = field(default_factory=list)
    # trigger timers: (customer_id, trigger, due, armed at)
    timers: list[tuple[str, str, float, float]] = field(default_factory=list)
    # undelivered messages: (id, customer_id, channel, trigger, ts, decision)
    outbound: list[list[Any]] = field(default_factory=list)
    # identity (decisioning/profile/identity.py): (kind, key, target, note, token, ts)
    identity: list[tuple[Any, ...]] = field(default_factory=list)


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


def write(directory: str, state: State, generation: int = 0) -> str:
    """Write a snapshot atomically; returns its path. Older snapshots stay (see prune)."""
    os.makedirs(directory, exist_ok=True)
    final = os.path.join(directory, name(state.wal_seq, generation))
    tmp = final + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
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
    profiles = pa.table(cols).replace_schema_metadata({"nextbest": json.dumps(meta)})
    _write_table(os.path.join(tmp, "profiles.arrow"), profiles)
    flat = [(did, *record) for did, record in state.decisions]
    d: list[tuple[Any, ...]] = list(zip(*flat, strict=True)) if flat else [()] * 7
    decisions = pa.table(
        {
            "decision_id": pa.array(d[0], type=pa.string()),
            "customer_id": pa.array(d[1], type=pa.string()),
            "actions": pa.array([list(a) for a in d[2]], type=pa.list_(pa.string())),
            "ts": pa.array(d[3], type=pa.float64()),
            "channel": pa.array(d[4], type=pa.string()),
            "placement": pa.array(d[5], type=pa.string()),
            "model_version": pa.array(d[6], type=pa.string()),
        }
    )
    _write_table(os.path.join(tmp, "decisions.arrow"), decisions)
    _write_table(
        os.path.join(tmp, "seen.arrow"), pa.table({"key": pa.array(state.seen, pa.binary(16))})
    )
    c: list[tuple[Any, ...]] = (
        list(zip(*state.contacts, strict=True)) if state.contacts else [()] * 5
    )
    contacts = pa.table(
        {
            "customer_id": pa.array(c[0], type=pa.string()),
            "ts": pa.array(c[1], type=pa.float64()),
            "action_id": pa.array(c[2], type=pa.string()),
            "kind": pa.array(c[3], type=pa.string()),
            "channel": pa.array(c[4], type=pa.string()),
        }
    )
    _write_table(os.path.join(tmp, "contacts.arrow"), contacts)
    t: list[tuple[Any, ...]] = list(zip(*state.timers, strict=True)) if state.timers else [()] * 4
    timers = pa.table(
        {
            "customer_id": pa.array(t[0], type=pa.string()),
            "trigger": pa.array(t[1], type=pa.string()),
            "due": pa.array(t[2], type=pa.float64()),
            "armed": pa.array(t[3], type=pa.float64()),
        }
    )
    _write_table(os.path.join(tmp, "timers.arrow"), timers)
    o: list[tuple[Any, ...]] = (
        list(zip(*state.outbound, strict=True)) if state.outbound else [()] * 6
    )
    outbound = pa.table(
        {
            "id": pa.array(o[0], type=pa.string()),
            "customer_id": pa.array(o[1], type=pa.string()),
            "channel": pa.array(o[2], type=pa.string()),
            "trigger": pa.array(o[3], type=pa.string()),
            "ts": pa.array(o[4], type=pa.float64()),
            "decision": pa.array([msgpack.packb(d) for d in o[5]], type=pa.binary()),
        }
    )
    _write_table(os.path.join(tmp, "outbound.arrow"), outbound)
    ident: list[tuple[Any, ...]] = (
        list(zip(*state.identity, strict=True)) if state.identity else [()] * 6
    )
    identity = pa.table(
        {
            "kind": pa.array(ident[0], type=pa.string()),
            "key": pa.array(ident[1], type=pa.string()),
            "target": pa.array(ident[2], type=pa.string()),
            "note": pa.array(ident[3], type=pa.string()),
            "token": pa.array(ident[4], type=pa.string()),
            "ts": pa.array(ident[5], type=pa.float64()),
        }
    )
    _write_table(os.path.join(tmp, "identity.arrow"), identity)
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


def read(directory: str, snapshot: str, layout_key: str) -> State:
    path = os.path.join(directory, snapshot)
    try:
        profiles = _read_table(os.path.join(path, "profiles.arrow"))
        meta = json.loads(profiles.schema.metadata[b"nextbest"])
        decisions = _read_table(os.path.join(path, "decisions.arrow")).to_pydict()
        seen = _read_table(os.path.join(path, "seen.arrow")).column("key").to_pylist()
        contacts: list[tuple[str, float, str, str, str]] = []
        if os.path.exists(os.path.join(path, "contacts.arrow")):  # (older snapshots: none)
            c = _read_table(os.path.join(path, "contacts.arrow")).to_pydict()
            contacts = list(
                zip(c["customer_id"], c["ts"], c["action_id"], c["kind"], c["channel"], strict=True)
            )
        timers: list[tuple[str, str, float, float]] = []
        if os.path.exists(os.path.join(path, "timers.arrow")):
            t = _read_table(os.path.join(path, "timers.arrow")).to_pydict()
            timers = list(zip(t["customer_id"], t["trigger"], t["due"], t["armed"], strict=True))
        identity: list[tuple[Any, ...]] = []
        if os.path.exists(os.path.join(path, "identity.arrow")):
            ii = _read_table(os.path.join(path, "identity.arrow")).to_pydict()
            none = [None] * len(ii["kind"])  # format 1: links and forwards only
            identity = list(
                zip(
                    ii["kind"],
                    ii["key"],
                    ii["target"],
                    ii.get("note", none),
                    ii.get("token", none),
                    ii.get("ts", none),
                    strict=True,
                )
            )
        outbound: list[list[Any]] = []
        if os.path.exists(os.path.join(path, "outbound.arrow")):
            o = _read_table(os.path.join(path, "outbound.arrow")).to_pydict()
            outbound = [
                [i, c, ch, tr, ts, msgpack.unpackb(d)]
                for i, c, ch, tr, ts, d in zip(
                    o["id"],
                    o["customer_id"],
                    o["channel"],
                    o["trigger"],
                    o["ts"],
                    o["decision"],
                    strict=True,
                )
            ]
    except (OSError, KeyError, ValueError, pa.ArrowException) as e:
        raise SnapshotError(f"{path}: unreadable snapshot: {e}") from e
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
    n = profiles.num_rows
    matrices = {}
    for name, width in meta["widths"].items():
        if width:
            col = profiles.column(name).combine_chunks()
            flat = col.flatten().to_numpy(zero_copy_only=False)
            matrices[name] = flat.reshape(n, width)
        else:
            matrices[name] = np.empty((n, 0), dtype=_DTYPES[name].to_pandas_dtype())
    records = zip(
        decisions["customer_id"],
        decisions["actions"],
        decisions["ts"],
        decisions["channel"],
        decisions["placement"],
        decisions["model_version"],
        strict=True,
    )
    ids = profiles.column("customer_id").combine_chunks()
    offsets = np.frombuffer(ids.buffers()[1], dtype=np.int64)[ids.offset : ids.offset + n + 1]
    data = ids.buffers()[2]
    blob = data.to_pybytes()[offsets[0] : offsets[-1]] if n else b""
    return State(
        wal_seq=int(meta["wal_seq"]),
        layout_key=meta["layout_key"],
        id_blob=blob,
        id_ends=(offsets[1:] - offsets[0]).astype(np.uint64),
        matrices=matrices,
        decisions=list(zip(decisions["decision_id"], records, strict=True)),
        seen=seen,
        counters={k: int(v) for k, v in meta.get("counters", {}).items()},
        contacts=contacts,
        timers=timers,
        outbound=outbound,
        identity=identity,
    )
