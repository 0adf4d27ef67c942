"""A training table from the decision and outcome logs: what was shown, as it was scored.

Each example is a candidate a shard chose (and so showed) for the model: its feature
vector exactly as logged (the one the model scored), labelled 1 when a positive outcome
(`positives`, default accept and convert) for that decision and action arrived within
`window_s` of the decision, else 0. Categorical features are logged as the codes of the
scoring model's vocabulary; they are turned back into their strings here, so `train()`
encodes them with the vocabulary a new model ships with.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from decisioning.config import Config
from decisioning.errors import ModelError
from decisioning.stores.decision_log import DECISIONS_SCHEMA, OUTCOMES_SCHEMA
from decisioning.stores.fs import filesystem
from decisioning.stores.registry import Registry
from training.train import TrainingError

__all__ = ["LogTable", "logged_models", "open_dataset", "parse_window", "table_from_logs"]

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_window(text: str) -> float:
    """'30m', '12h', '7d' -> seconds."""
    try:
        return float(text[:-1]) * UNITS[text[-1]]
    except (KeyError, ValueError, IndexError):
        raise TrainingError(f"window {text!r}: a number and s, m, h or d (e.g. 7d)") from None


@dataclass(frozen=True, slots=True)
class LogTable:
    table: pa.Table  # features..., label, ts
    features: list[str]
    info: dict[str, Any]  # data range, row counts, where it came from


def open_dataset(fs: pafs.FileSystem, path: str) -> ds.Dataset | None:
    """The decisions or outcomes log as a dataset, read with the current schema: a file
    written before a column existed reads it as null."""
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return None
    schema = DECISIONS_SCHEMA if path.endswith("decisions") else OUTCOMES_SCHEMA
    date = pa.schema([("date", pa.string())])
    return ds.dataset(
        path,
        filesystem=fs,
        format="parquet",
        schema=schema.append(date.field(0)),
        partitioning=ds.partitioning(date, flavor="hive"),
    )


def logged_models(logs: str) -> list[str]:
    """The model names that scored candidates in the logs."""
    fs, root = filesystem(logs)
    decisions = open_dataset(fs, f"{root}/decisions")
    if decisions is None:
        raise TrainingError(f"no decision logs under {logs}")
    names = decisions.to_table(columns=["model"], filter=pc.field("model").is_valid())
    found = sorted(set(names["model"].to_pylist()))
    if not found:
        raise TrainingError(f"no decision in {logs} was scored by a model")
    return found


def table_from_logs(
    logs: str,
    config: Config,
    name: str = "propensity",
    positives: Sequence[str] = ("accept", "convert"),
    window_s: float = 7 * 86400,
    since: float | None = None,
    progress: Callable[[str], None] = print,
    include_open: bool = False,
    now: float | None = None,
) -> LogTable:
    """The examples for model `name` in the logs under `logs` (a path or URI). Decisions
    whose attribution window is still open (younger than `window_s`) are left out,
    since their label is not final, unless `include_open`."""
    fs, root = filesystem(logs)
    decisions = open_dataset(fs, f"{root}/decisions")
    if decisions is None:
        raise TrainingError(f"no decision logs under {logs}")
    wanted = (pc.field("model") == name) & pc.field("chosen")
    if since is not None:
        wanted &= pc.field("ts") >= pa.scalar(int(since * 1e6), pa.timestamp("us", tz="UTC"))
    columns = ["decision_id", "ts", "action_id", "model_version", "features"]
    if not include_open:
        closed = (time.time() if now is None else now) - window_s
        wanted &= pc.field("ts") <= pa.scalar(int(closed * 1e6), pa.timestamp("us", tz="UTC"))
    shown = decisions.to_table(columns=columns, filter=wanted)
    if shown.num_rows == 0:
        raise TrainingError(
            f"the logs hold no decision scored by a {name!r} model"
            + ("" if include_open else " whose attribution window has closed")
        )
    progress(f"read {shown.num_rows} shown candidates scored by {name} from {logs}/decisions")

    label = np.zeros(shown.num_rows)
    outcomes = open_dataset(fs, f"{root}/outcomes")
    n_pos = 0
    if outcomes is not None:
        pos = outcomes.to_table(
            columns=["decision_id", "action_id", "ts"],
            filter=pc.field("outcome").isin(list(positives)),
        )
        progress(f"read {pos.num_rows} positive outcomes ({', '.join(positives)})")
        first: dict[tuple[str, str], float] = {}
        for d, a, t in zip(
            pos["decision_id"].to_pylist(),
            pos["action_id"].to_pylist(),
            pos["ts"].cast(pa.int64()).to_numpy() / 1e6,
            strict=True,
        ):
            first[(d, a)] = min(t, first.get((d, a), math.inf))
        ts = shown["ts"].cast(pa.int64()).to_numpy() / 1e6
        for i, (d, a) in enumerate(
            zip(shown["decision_id"].to_pylist(), shown["action_id"].to_pylist(), strict=True)
        ):
            t = first.get((d, a))
            if t is not None and t - ts[i] <= window_s:
                label[i] = 1.0
        n_pos = int(label.sum())

    # the features of the newest version that logged; rows of versions with other
    # features are left out (and counted)
    registry = Registry(config.server.data_dir)
    versions = sorted(
        {v for v in shown["model_version"].to_pylist() if v},
        key=lambda ref: int(ref.rsplit("@", 1)[1]),
    )
    if not versions:
        raise TrainingError(
            f"no logged decision was scored by a loaded {name!r} model (all model_version null)"
        )
    manifests = {}
    for ref in versions:
        try:
            manifests[ref] = registry.read(name, int(ref.rsplit("@", 1)[1])).manifest
        except ModelError as e:
            raise TrainingError(f"{ref} logged decisions but cannot be read: {e}") from None
    target = manifests[versions[-1]].features
    keep = [ref for ref in versions if manifests[ref].features == target]
    mask = pc.is_in(shown["model_version"], value_set=pa.array(keep)).to_numpy(zero_copy_only=False)
    rows = shown.filter(pa.array(mask))
    label = label[mask]
    flat = rows["features"].combine_chunks().flatten().to_numpy()
    x = flat.reshape(rows.num_rows, len(target))
    columns_out: dict[str, pa.Array] = {}
    refs = rows["model_version"].to_pylist()
    for j, f in enumerate(target):
        vocab_by_ref = {ref: manifests[ref].categories.get(f) for ref in keep}
        if any(v is not None for v in vocab_by_ref.values()):
            values = []
            for code, ref in zip(x[:, j], refs, strict=True):
                vocab = vocab_by_ref[ref] or []
                ok = code == code and 0 <= int(code) < len(vocab)
                values.append(vocab[int(code)] if ok else None)
            columns_out[f] = pa.array(values, pa.string())
        else:
            columns_out[f] = pa.array(x[:, j], pa.float64())
    columns_out["label"] = pa.array(label)
    ts_rows = rows["ts"].cast(pa.int64()).to_numpy() / 1e6
    columns_out["ts"] = pa.array(ts_rows)
    table = pa.table(columns_out)
    info = {
        "source": "logs",
        "logs": logs,
        "positives": list(positives),
        "window_s": window_s,
        "open_windows_included": include_open,
        "data_from": float(ts_rows.min()),
        "data_to": float(ts_rows.max()),
        "rows": table.num_rows,
        "positive_rows": int(label.sum()),
        "left_out_other_features": shown.num_rows - rows.num_rows,
        "logged_versions": keep,
    }
    progress(
        f"{table.num_rows} examples, {int(label.sum())} positive (of {n_pos} matched), "
        f"features of {versions[-1]}"
    )
    return LogTable(table, list(target), info)
