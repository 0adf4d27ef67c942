"""The retraining loop: train on the latest window of logs, compare, promote only a winner.

One round: build the training table from the logs of the last `lookback_s`, train a
version (it is registered either way), compare it with the champion on the same
held-out rows (AUC), and promote it through the running server's admin API only when
it beats the champion by `margin`; otherwise the aliases are left alone. `nextbest
retrain --every 1h` runs rounds forever; `--once` runs one (for cron or a Ray job).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from decisioning.config import Config
from decisioning.stores.registry import Registry
from training.from_logs import table_from_logs
from training.train import train

__all__ = ["Round", "decide_promotion", "retrain_once"]


@dataclass(frozen=True, slots=True)
class Round:
    version: str
    promote: bool
    reason: str


def decide_promotion(
    metrics: dict[str, Any], margin: float, has_champion: bool = True
) -> tuple[bool, str]:
    """Promote when the new AUC beats the champion's on the same rows by `margin`; with
    no champion at all, the new one serves; with one that cannot be compared (other
    features or vocabularies), nothing changes: promote by hand after `evaluate`."""
    champion = metrics.get("champion")
    if champion is None:
        if not has_champion:
            return True, "no champion yet: the new one serves"
        return False, "the champion takes other features or vocabularies: no fair comparison"
    gain = metrics["auc"] - champion["auc"]
    verdict = gain >= margin
    return verdict, (
        f"AUC {metrics['auc']:.4f} vs champion {champion['version']} {champion['auc']:.4f} "
        f"({gain:+.4f}; margin {margin:+.4f})"
    )


def retrain_once(
    config: Config,
    logs: str,
    name: str,
    lookback_s: float,
    margin: float,
    promote: Callable[[str, int], None],
    rounds: int = 200,
    positives: tuple[str, ...] = ("accept", "convert"),
    window_s: float = 7 * 86400,
    progress: Callable[[str], None] = print,
) -> Round:
    """One round; `promote(name, version)` is the call to the server (admin API)."""
    got = table_from_logs(
        logs, config, name, positives, window_s, since=time.time() - lookback_s, progress=progress
    )
    result = train(
        got.table,
        config,
        name=name,
        features=got.features,
        rounds=rounds,
        training_info={**got.info, "retrain": {"lookback_s": lookback_s, "margin": margin}},
        progress=progress,
    )
    has_champion = Registry(config.server.data_dir).deployed(name) is not None
    ok, reason = decide_promotion(result.manifest.metrics, margin, has_champion)
    if ok:
        promote(name, result.manifest.version)
    progress(f"{result.manifest.ref}: {'promoted' if ok else 'registered, not promoted'}: {reason}")
    return Round(result.manifest.ref, ok, reason)
