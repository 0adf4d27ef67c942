"""A trained model judged on its held-out rows: AUC, logloss, calibration, AUC per
action, and the current champion scored on the same rows when a fair comparison exists.

`train()` computes these once; they go into the manifest's metrics and the report.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np

from decisioning.errors import NextbestError
from decisioning.stores.registry import Registry
from training.metrics import auc, calibration, logloss

__all__ = ["HeldOut", "evaluate_held_out"]


@dataclass(frozen=True, slots=True)
class HeldOut:
    """The held-out labels and predictions, the metrics, and the champion's figures on
    the same rows (its predictions under "p"), or None."""

    y: np.ndarray
    p: np.ndarray
    metrics: dict[str, Any]
    champion: dict[str, Any] | None


def evaluate_held_out(
    booster: lgb.Booster,
    x: np.ndarray,
    y: np.ndarray,
    rows_train: int,
    features: list[str],
    categories: dict[str, list[str]],
    registry: Registry,
    name: str,
    progress: Callable[[str], None],
) -> HeldOut:
    """The new model's metrics on the held-out rows `x`, `y`, with the champion's."""
    p = np.asarray(booster.predict(x, num_threads=1))
    metrics: dict[str, Any] = {
        "auc": round(auc(y, p), 6),
        "logloss": round(logloss(y, p), 6),
        "base_rate": round(float(y.mean()), 6),
        "rows_train": rows_train,
        "rows_valid": len(y),
        "trees": booster.num_trees(),
        "calibration": calibration(y, p),
    }
    if "action_id" in features:
        metrics["auc_by_action"] = auc_by_action(
            x[:, features.index("action_id")], y, p, categories["action_id"]
        )
    champion = _champion_on(registry, name, features, categories, x, y)
    if champion is not None:
        metrics["champion"] = {k: v for k, v in champion.items() if k != "p"}
        progress(
            f"champion {champion['version']} on the same held-out rows: "
            f"AUC {champion['auc']:.3f}, logloss {champion['logloss']:.4f}"
        )
    return HeldOut(y, p, metrics, champion)


def auc_by_action(
    codes: np.ndarray, y: np.ndarray, p: np.ndarray, vocab: list[str]
) -> dict[str, float]:
    """AUC over the rows of each action (by its code in `vocab`); an action whose rows
    hold one class only has no AUC and is left out."""
    return {
        vocab[int(code)]: round(a, 6)
        for code in np.unique(codes[~np.isnan(codes)])
        if not math.isnan(a := auc(y[codes == code], p[codes == code]))
    }


def _champion_on(
    registry: Registry,
    name: str,
    features: list[str],
    categories: dict[str, list[str]],
    x: np.ndarray,
    y: np.ndarray,
) -> dict[str, Any] | None:
    """The current champion's metrics on the new model's held-out rows, when it takes
    the same features with the same vocabularies (else no fair comparison exists)."""
    version = registry.deployed(name)
    if version is None:
        return None
    try:
        m = registry.read(name, version).manifest
        text = registry.read(name, version).model_text
    except NextbestError:
        return None
    if m.features != features or m.categories != categories:
        return None
    p = np.asarray(lgb.Booster(model_str=text).predict(x, num_threads=1))
    return {
        "version": m.ref,
        "auc": round(auc(y, p), 6),
        "logloss": round(logloss(y, p), 6),
        "base_rate": round(float(y.mean()), 6),
        "p": p,
    }
