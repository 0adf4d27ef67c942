"""Off-policy evaluation: how a candidate model would have done on the logged traffic.

For each logged decision i: the action a_i the logging policy put first, the
probability p_i it had of doing so, the reward r_i (a positive outcome within the
window), and the action π_i a greedy policy ranking by the candidate model's
propensities would have put first. The candidate rescoring uses the logged feature
vectors, so it sees exactly what the logging model saw. With w_i = [π_i = a_i] / p_i:

    IPS   = mean(w·r)
    SNIPS = Σ w·r / Σ w
    DR    = mean(q̂(x, π) + w·(r − q̂(x, a)))

where q̂ is the candidate's own propensity (the reward model). The intervals are
percentile bootstraps over decisions. Exploration (epsilon-greedy or Thompson) is what
gives p_i > 0 to actions a greedy policy would not show. Without it, only the decisions
where the candidate agrees with what ran carry weight, and the estimate says so
(`support`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from decisioning.config import Config
from decisioning.errors import ModelError
from decisioning.stores.registry import Registry
from training.from_logs import open_dataset
from training.train import TrainingError

__all__ = ["Estimates", "estimate", "evaluate"]


@dataclass(frozen=True, slots=True)
class Estimates:
    n: int
    logged: float  # mean reward of what actually ran
    support: float  # share of decisions where the candidate agrees with what ran
    ips: tuple[float, float, float]  # value, low, high
    snips: tuple[float, float, float]
    dr: tuple[float, float, float]

    def to_dict(self) -> dict[str, Any]:
        def iv(t: tuple[float, float, float]) -> dict[str, float]:
            return {"value": t[0], "low": t[1], "high": t[2]}

        return {
            "decisions": self.n,
            "logged_value": self.logged,
            "support": self.support,
            "ips": iv(self.ips),
            "snips": iv(self.snips),
            "dr": iv(self.dr),
        }


def estimate(
    r: np.ndarray,
    p: np.ndarray,
    match: np.ndarray,
    q_target: np.ndarray,
    q_logged: np.ndarray,
    level: float = 0.95,
    boot: int = 500,
    seed: int = 0,
) -> Estimates:
    """IPS, SNIPS and DR from per-decision arrays, with bootstrap intervals."""
    n = len(r)
    if n == 0:
        raise TrainingError("no logged decisions to evaluate on")
    w = np.where(match, 1.0 / np.maximum(p, 1e-12), 0.0)
    ips_terms = w * r
    dr_terms = q_target + w * (r - q_logged)

    def snips(idx: np.ndarray) -> np.ndarray:
        num, den = ips_terms[idx].sum(axis=-1), w[idx].sum(axis=-1)
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), math.nan)

    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(boot, n))
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    all_idx = np.arange(n)

    def interval(point: float, samples: np.ndarray) -> tuple[float, float, float]:
        samples = samples[~np.isnan(samples)]
        if not len(samples):
            return (point, math.nan, math.nan)
        return (point, float(np.percentile(samples, lo)), float(np.percentile(samples, hi)))

    return Estimates(
        n=n,
        logged=float(r.mean()),
        support=float(match.mean()),
        ips=interval(float(ips_terms.mean()), ips_terms[idx].mean(axis=1)),
        snips=interval(float(snips(all_idx)), snips(idx)),
        dr=interval(float(dr_terms.mean()), dr_terms[idx].mean(axis=1)),
    )


_LOGGED_COLUMNS = [
    "decision_id",
    "ts",
    "action_id",
    "model",
    "model_version",
    "features",
    "propensity",
    "priority",
    "probability",
    "position",
]


def evaluate(
    logs: str,
    config: Config,
    ref: str,
    positives: Sequence[str] = ("accept", "convert"),
    window_s: float = 7 * 86400,
    progress: Callable[[str], None] = print,
) -> Estimates:
    """Estimate how model version `ref` (name@version) would have done on the logs."""
    from decisioning.stores.fs import filesystem

    name, version = _model_ref(ref)
    registry = Registry(config.server.data_dir)
    try:
        bundle = registry.read(name, version)
    except ModelError as e:
        raise TrainingError(str(e)) from None
    features = bundle.manifest.features
    booster = lgb.Booster(model_str=bundle.model_text)
    fs, root = filesystem(logs)
    decisions = open_dataset(fs, f"{root}/decisions")
    if decisions is None:
        raise TrainingError(f"no decision logs under {logs}")
    rows = decisions.to_table(columns=_LOGGED_COLUMNS, filter=pc.field("action_id").is_valid())
    progress(f"read {rows.num_rows} logged candidates from {logs}/decisions")
    propensity = rows["propensity"].to_numpy(zero_copy_only=False)
    priority = rows["priority"].to_numpy(zero_copy_only=False)
    new_p = _rescored(rows, propensity, registry, name, features, booster, progress)
    safe = np.where(propensity > 0, propensity, 1.0)
    new_priority = np.where(propensity > 0, priority * new_p / safe, priority)
    reward_of = _rewards(fs, root, positives, window_s, rows)
    threshold = config.decisioning.do_nothing_threshold
    r, p, match, q_t, q_l = _per_decision(rows, new_p, new_priority, reward_of, threshold)
    progress(f"{len(r)} decisions with a shown action")
    return estimate(r, p, match, q_t, q_l)


def _model_ref(ref: str) -> tuple[str, int]:
    """'propensity@3' -> ("propensity", 3)."""
    name, _, v = ref.partition("@")
    if not v.isdigit():
        raise TrainingError(f"--model takes name@version, e.g. propensity@3, not {ref!r}")
    return name, int(v)


def _rescored(
    rows: pa.Table,
    propensity: np.ndarray,
    registry: Registry,
    name: str,
    features: list[str],
    booster: lgb.Booster,
    progress: Callable[[str], None],
) -> np.ndarray:
    """The candidate's propensity for each logged candidate whose vector it can read
    (logged by a version of the same name with the same features); the logged one
    for the others."""
    same = {
        ref_
        for ref_ in set(rows["model_version"].to_pylist()) - {None}
        if ref_.partition("@")[0] == name
        and registry.read(name, int(ref_.partition("@")[2])).manifest.features == features
    }
    scored = pc.is_in(rows["model_version"], value_set=pa.array(sorted(same), pa.string()))
    scored_np = scored.to_numpy(zero_copy_only=False) & ~pc.is_null(rows["model_version"]).to_numpy(
        zero_copy_only=False
    )
    new_p = propensity.copy()
    if scored_np.any():
        flat = rows.filter(pa.array(scored_np))["features"].combine_chunks().flatten().to_numpy()
        new_p[scored_np] = booster.predict(flat.reshape(-1, len(features)), num_threads=1)
    other = ~scored_np & rows["model"].is_valid().to_numpy(zero_copy_only=False)
    if other.any():
        progress(
            f"{int(other.sum())} candidates were scored by other models or features: "
            "their logged propensity is kept"
        )
    return new_p


def _per_decision(
    rows: pa.Table,
    new_p: np.ndarray,
    new_priority: np.ndarray,
    reward_of: dict[tuple[str, str], float],
    threshold: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per decision that showed an action: its reward, the logging probability of what
    was shown first, whether a greedy policy on the candidate would have shown it, and
    the candidate's propensity for its own pick (0 when it would show nothing) and for
    the logged one (the arrays `estimate` takes)."""
    ids = rows["decision_id"].to_pylist()
    actions = rows["action_id"].to_pylist()
    position = rows["position"].to_numpy(zero_copy_only=False)
    prob = rows["probability"].to_numpy(zero_copy_only=False)
    groups: dict[str, list[int]] = {}
    for i, d in enumerate(ids):
        groups.setdefault(d, []).append(i)
    r, p, match, q_t, q_l = [], [], [], [], []
    for d, idx in groups.items():
        first = [i for i in idx if position[i] == 0]
        if not first:
            continue  # nothing shown: not an action decision
        a = first[0]
        best = min(idx, key=lambda i: (-new_priority[i], actions[i]))
        target = best if new_priority[best] > threshold else None
        r.append(reward_of.get((d, actions[a]), 0.0))
        p.append(prob[a])
        match.append(target == a)
        q_t.append(new_p[target] if target is not None else 0.0)
        q_l.append(new_p[a])
    return np.array(r), np.array(p), np.array(match), np.array(q_t), np.array(q_l)


def _rewards(
    fs: Any, root: str, positives: Sequence[str], window_s: float, rows: pa.Table
) -> dict[tuple[str, str], float]:
    outcomes = open_dataset(fs, f"{root}/outcomes")
    if outcomes is None:
        return {}
    pos = outcomes.to_table(
        columns=["decision_id", "action_id", "ts"],
        filter=pc.field("outcome").isin(list(positives)),
    )
    decided = dict(
        zip(rows["decision_id"].to_pylist(), rows["ts"].cast(pa.int64()).to_pylist(), strict=True)
    )
    out: dict[tuple[str, str], float] = {}
    for d, a, t in zip(
        pos["decision_id"].to_pylist(),
        pos["action_id"].to_pylist(),
        pos["ts"].cast(pa.int64()).to_pylist(),
        strict=True,
    ):
        if d in decided and (t - decided[d]) / 1e6 <= window_s:
            out[(d, a)] = 1.0
    return out
