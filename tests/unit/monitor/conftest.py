"""Synthetic explained slices: a linear model's attributions, sampled as whylake's sampler does."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from whylake.monitor.drift import Explained

FEATURES = ("f0", "f1", "f2", "f3", "f4", "f5")
COEF = np.array([3.0, 2.5, 2.0, 1.2, 0.6, 0.3])


@dataclass(frozen=True)
class Population:
    """A day's records of a linear model: inputs, exact attributions and sampling weights."""

    x: np.ndarray
    attributions: np.ndarray
    weights: np.ndarray  # the sampler's priority weights (here: an uncertainty-like score)

    def sample(self, rng: np.random.Generator, k: int) -> Explained:
        """Priority sampling (Duffield, Lund & Thorup 2007): top-k of w / u, p = min(1, w / tau)."""
        priority = self.weights / rng.uniform(size=len(self.weights))
        order = np.argsort(-priority)
        tau = priority[order[k]]
        keep = order[:k]
        p = np.minimum(1.0, self.weights[keep] / tau)
        ids = tuple(f"r{i}" for i in keep)
        n = float(len(self.weights))
        return Explained(FEATURES, self.attributions[keep], self.x[keep], p, ids, population=n)


def population(
    rng: np.random.Generator, n: int, *, stuck: int | None = None, informative: bool = True
) -> Population:
    """n records; `stuck` pins one feature at its mean (the demo's drift); weights depend on x
    when `informative` (uncertain records sit near the decision boundary), so an estimate that
    ignores the inclusion probabilities is biased."""
    x = rng.normal(size=(n, len(FEATURES)))
    if stuck is not None:
        x[:, stuck] = rng.normal(0.0, 0.05, n)
    score = x @ COEF
    if informative:
        weights = np.clip(np.exp(-np.abs(score) / 2.0), 0.001, 1.0)
    else:
        weights = rng.uniform(0.01, 1.0, n)
    return Population(x, x * COEF, weights)


def reference(rng: np.random.Generator, n: int = 500) -> Explained:
    """Registered reference rows: a census of training-like rows, p = 1."""
    pop = population(rng, n)
    return Explained(FEATURES, pop.attributions, pop.x, np.ones(n), population=float(n))


@pytest.fixture
def ref() -> Explained:
    return reference(np.random.default_rng(0))
