"""The steps of `table_from_logs`: the label of a shown candidate (its first positive
outcome inside the window), and the logged vectors decoded back to columns with the
vocabulary of the version that logged each row."""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from decisioning.policy.scoring import ModelBundle, ModelManifest, sha256_text
from decisioning.stores.registry import Registry
from training.from_logs import _labels, _NewestFeatures
from training.train import TrainingError

US = pa.timestamp("us", tz="UTC")


def _ts(seconds: list[float]) -> pa.Array:
    return pa.array([int(s * 1e6) for s in seconds], US)


def _outcomes(tmp_path: Path, rows: list[tuple[str, str, str, float]]) -> ds.Dataset:
    d, a, o, t = zip(*rows, strict=True)
    table = pa.table({"decision_id": d, "action_id": a, "outcome": o, "ts": _ts(list(t))})
    pq.write_table(table, tmp_path / "o.parquet")
    return ds.dataset(tmp_path / "o.parquet")


def test_a_candidate_is_positive_when_its_first_positive_outcome_is_in_the_window(
    tmp_path: Path,
) -> None:
    shown = pa.table(
        {
            "decision_id": ["d1", "d1", "d2", "d3", "d4"],
            "action_id": ["a", "b", "a", "a", "a"],
            "ts": _ts([100, 100, 100, 100, 100]),
        }
    )
    outcomes = _outcomes(
        tmp_path,
        [
            ("d1", "a", "accept", 300),  # at the end of the window, for a only (not b)
            ("d2", "a", "accept", 500),  # too late...
            ("d2", "a", "convert", 400),  # ...and this one too, though earlier
            ("d3", "a", "convert", 200),  # a later accept does not undo it
            ("d3", "a", "accept", 900),
            ("d4", "a", "reject", 110),  # not a positive
        ],
    )
    said: list[str] = []
    label, n = _labels(outcomes, shown, ("accept", "convert"), 200, said.append)
    assert list(label) == [1.0, 0.0, 0.0, 1.0, 0.0] and n == 2
    assert said == ["read 5 positive outcomes (accept, convert)"]
    label, n = _labels(outcomes, shown, ("accept",), 200, said.append)
    assert list(label) == [1.0, 0.0, 0.0, 0.0, 0.0] and n == 1
    label, n = _labels(None, shown, ("accept",), 200, said.append)  # no outcome logged yet
    assert list(label) == [0.0] * 5 and n == 0 and len(said) == 2


def _registry(tmp_path: Path, manifests: dict[int, tuple[list[str], list[str]]]) -> Registry:
    """A registry holding model "p" at each version, with its features and vocabulary."""
    registry = Registry(str(tmp_path / "models"))
    for version, (features, vocab) in manifests.items():
        text = f"model {version}"  # read verifies the digest; nothing here scores
        m = ModelManifest(
            name="p",
            version=version,
            features=features,
            sha256=sha256_text(text),
            categories={"action_id": vocab},
        )
        registry.register(ModelBundle.verified(m, text))
    return registry


def test_the_newest_features_decide_and_each_row_decodes_with_its_own_vocabulary(
    tmp_path: Path,
) -> None:
    features = ["age", "action_id"]
    registry = _registry(
        tmp_path,
        {
            1: (features, ["card", "loan"]),
            2: (["action_id"], ["card"]),  # other features: left out
            10: (features, ["loan", "card", "tip"]),  # the newest (10 > 2 > 1)
        },
    )
    shown = pa.table(
        {
            "model_version": ["p@1", "p@10", "p@2", "p@10", "p@1", None],
            "features": [[30, 0], [40, 2], [0], [50, 7], [60, math.nan], [70, 0]],
        }
    )
    newest = _NewestFeatures.of(registry, "p", shown)
    assert newest.versions == ["p@1", "p@2", "p@10"] and newest.keep == ["p@1", "p@10"]
    assert newest.target == features
    rows = shown.filter(pa.array([True, True, False, True, True, False]))
    columns = newest.columns(rows)
    assert columns["age"].to_pylist() == [30.0, 40.0, 50.0, 60.0]
    # p@1's 0 is card, p@10's 2 is tip; a code outside the vocabulary, or NaN, is null
    assert columns["action_id"].to_pylist() == ["card", "tip", None, None]


def test_rows_no_loaded_model_scored_cannot_be_trained_on(tmp_path: Path) -> None:
    registry = _registry(tmp_path, {1: (["age"], [])})
    shown = pa.table({"model_version": pa.array([None, None], pa.string())})
    with pytest.raises(TrainingError, match="all model_version null"):
        _NewestFeatures.of(registry, "p", shown)
    shown = pa.table({"model_version": ["p@1", "p@2"]})
    with pytest.raises(TrainingError, match="p@2 logged decisions but cannot be read"):
        _NewestFeatures.of(registry, "p", shown)
