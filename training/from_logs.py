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
from decisioning.policy.scoring import ModelManifest
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
    closed = None if include_open else (time.time() if now is None else now) - window_s
    shown = _shown(decisions, name, since, closed)
    progress(f"read {shown.num_rows} shown candidates scored by {name} from {logs}/decisions")
    label, n_pos = _labels(
        open_dataset(fs, f"{root}/outcomes"), shown, positives, window_s, progress
    )
    newest = _NewestFeatures.of(Registry(config.server.data_dir), name, shown)
    mask = pc.is_in(shown["model_version"], value_set=pa.array(newest.keep))
    mask = mask.to_numpy(zero_copy_only=False)
    rows = shown.filter(pa.array(mask))
    label = label[mask]
    columns = newest.columns(rows)
    columns["label"] = pa.array(label)
    ts_rows = rows["ts"].cast(pa.int64()).to_numpy() / 1e6
    columns["ts"] = pa.array(ts_rows)
    table = pa.table(columns)
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
        "logged_versions": newest.keep,
    }
    progress(
        f"{table.num_rows} examples, {int(label.sum())} positive (of {n_pos} matched), "
        f"features of {newest.versions[-1]}"
    )
    return LogTable(table, list(newest.target), info)


def _shown(decisions: ds.Dataset, name: str, since: float | None, closed: float | None) -> pa.Table:
    """The candidates a `name` model scored and the shard chose, decided at or after
    `since` and, unless `closed` is None, no later than `closed`."""
    wanted = (pc.field("model") == name) & pc.field("chosen")
    if since is not None:
        wanted &= pc.field("ts") >= pa.scalar(int(since * 1e6), pa.timestamp("us", tz="UTC"))
    columns = ["decision_id", "ts", "action_id", "model_version", "features"]
    if closed is not None:
        wanted &= pc.field("ts") <= pa.scalar(int(closed * 1e6), pa.timestamp("us", tz="UTC"))
    shown = decisions.to_table(columns=columns, filter=wanted)
    if shown.num_rows == 0:
        raise TrainingError(
            f"the logs hold no decision scored by a {name!r} model"
            + ("" if closed is None else " whose attribution window has closed")
        )
    return shown


def _labels(
    outcomes: ds.Dataset | None,
    shown: pa.Table,
    positives: Sequence[str],
    window_s: float,
    progress: Callable[[str], None],
) -> tuple[np.ndarray, int]:
    """1.0 for each shown candidate whose first positive outcome came within `window_s`
    of its decision, else 0.0; and how many are positive."""
    label = np.zeros(shown.num_rows)
    if outcomes is None:
        return label, 0
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
    return label, int(label.sum())


@dataclass(frozen=True, slots=True)
class _NewestFeatures:
    """The features of the newest version that logged (`target`), and the versions that
    logged those same features (`keep`): rows of the others are left out (and counted)."""

    versions: list[str]  # every version that logged, oldest first
    manifests: dict[str, ModelManifest]
    target: list[str]
    keep: list[str]

    @classmethod
    def of(cls, registry: Registry, name: str, shown: pa.Table) -> _NewestFeatures:
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
        return cls(versions, manifests, target, keep)

    def columns(self, rows: pa.Table) -> dict[str, pa.Array]:
        """The logged feature vectors of `rows` as one column per feature; a categorical
        one decoded back to its strings with the vocabulary of the version that logged it
        (a code outside it, or NaN, becomes null)."""
        flat = rows["features"].combine_chunks().flatten().to_numpy()
        x = flat.reshape(rows.num_rows, len(self.target))
        out: dict[str, pa.Array] = {}
        refs = rows["model_version"].to_pylist()
        for j, f in enumerate(self.target):
            vocab_by_ref = {ref: self.manifests[ref].categories.get(f) for ref in self.keep}
            if any(v is not None for v in vocab_by_ref.values()):
                values = []
                for code, ref in zip(x[:, j], refs, strict=True):
                    vocab = vocab_by_ref[ref] or []
                    ok = code == code and 0 <= int(code) < len(vocab)
                    values.append(vocab[int(code)] if ok else None)
                out[f] = pa.array(values, pa.string())
            else:
                out[f] = pa.array(x[:, j], pa.float64())
        return out
