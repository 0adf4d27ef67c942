"""Exploration: which action goes first, and with what probability the policy put it there.

A greedy policy puts the highest priority first (probability 1). Exploring lets the
logs see what a greedy policy never shows, and the logged probabilities make off-policy
evaluation possible:

- epsilon-greedy: with probability ε a uniformly random candidate (of those above the
  do-nothing threshold) goes first, else the greedy one; P(a first) = (1-ε)·[a greedy] + ε/K.
- Thompson sampling: each candidate's propensity p is drawn from Beta(p·n + 1, (1-p)·n + 1)
  (n = `strength`, how sure the model is taken to be), priorities are recomputed with the
  draw, and the highest goes first; P(a first) is estimated from `draws` joint draws.

Only the first position explores; the rest of the answer stays in priority order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from decisioning.config import ExplorationSpec

__all__ = ["Explorer", "Pick"]


@dataclass(frozen=True, slots=True)
class Pick:
    index: int  # into the ranked candidates: the one to put first
    probability: np.ndarray  # P(first) for each ranked candidate
    explored: bool  # the random branch chose (it may still be the greedy one)


class Explorer:
    def __init__(self, spec: ExplorationSpec, rng: np.random.Generator | None = None) -> None:
        self.spec = spec
        self.rng = rng or np.random.default_rng()

    def pick(self, propensity: Sequence[float], factor: Sequence[float]) -> Pick:
        """Candidates ranked by priority = propensity × factor, highest first (K ≥ 1)."""
        k = len(propensity)
        s = self.spec
        if s.policy == "epsilon_greedy":
            probability = np.full(k, s.epsilon / k)
            probability[0] += 1.0 - s.epsilon
            if self.rng.random() < s.epsilon:
                return Pick(int(self.rng.integers(k)), probability, True)
            return Pick(0, probability, False)
        p = np.clip(np.asarray(propensity, dtype=np.float64), 0.0, 1.0)
        draws = self.rng.beta(p * s.strength + 1, (1 - p) * s.strength + 1, size=(s.draws, k))
        winners = np.argmax(draws * np.asarray(factor, dtype=np.float64), axis=1)
        probability = np.bincount(winners, minlength=k) / s.draws
        index = int(winners[0])
        return Pick(index, probability, index != 0)
