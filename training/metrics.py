"""Evaluation metrics, in numpy (no scikit-learn dependency)."""

from __future__ import annotations

import numpy as np

__all__ = ["auc", "calibration", "logloss", "roc_curve"]


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with tie-averaged ranks)."""
    y = np.asarray(y, dtype=bool)
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(p, kind="mergesort")
    sorted_p = np.asarray(p)[order]
    ranks = np.empty(len(p), dtype=np.float64)
    i = 0
    while i < len(p):
        j = i
        while j + 1 < len(p) and sorted_p[j + 1] == sorted_p[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[y].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def logloss(y: np.ndarray, p: np.ndarray, eps: float = 1e-12) -> float:
    p = np.clip(np.asarray(p, dtype=np.float64), eps, 1 - eps)
    y = np.asarray(y, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def calibration(y: np.ndarray, p: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    """Mean prediction vs observed rate per decile of the prediction."""
    order = np.argsort(p, kind="mergesort")
    out = []
    for part in np.array_split(order, bins):
        if len(part):
            out.append(
                {
                    "mean_p": round(float(np.mean(p[part])), 6),
                    "rate": round(float(np.mean(y[part])), 6),
                    "n": len(part),
                }
            )
    return out


def roc_curve(y: np.ndarray, p: np.ndarray, points: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """False and true positive rates at up to `points` thresholds (for a plot)."""
    y = np.asarray(y, dtype=bool)
    order = np.argsort(-np.asarray(p), kind="mergesort")
    tp = np.cumsum(y[order])
    fp = np.cumsum(~y[order])
    pos, neg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    idx = np.unique(np.linspace(0, len(order) - 1, min(points, len(order))).astype(int))
    return np.concatenate([[0.0], fp[idx] / neg]), np.concatenate([[0.0], tp[idx] / pos])
