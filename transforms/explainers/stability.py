"""How much an attribution's top-k ranking moves when the IG baseline changes."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import torch

from whylake.transforms.explainers.integrated_gradients import integrated_gradients
from whylake.transforms.explainers.model_calls import as_rows


def attribution_stability(
    model: object,
    inputs: np.ndarray,
    baselines: np.ndarray,
    *,
    steps: int = 50,
    top_k: int = 5,
    device: torch.device | None = None,
) -> np.ndarray:
    """Per-row agreement in [0, 1] of the top-k IG ranking across several baselines.

    IG (Sundararajan et al. 2017) depends on the baseline; a ranking that survives reasonable
    baselines can be trusted, one that flips cannot. For every pair of baselines the two top-k
    lists (by |attribution|) are compared by *average overlap*: the mean over depths r = 1..k of
    |top_r(a) & top_r(b)| / r. It is 1 exactly when the ordered top-k lists are identical, 0
    when they share no feature, and order-sensitive in between; the score is its mean over all
    pairs of baselines.

    Args:
        model: as for :func:`integrated_gradients`.
        inputs: ``(n, d)`` rows.
        baselines: ``(b, d)`` candidate baselines, ``b >= 2`` (e.g. the training mean, median,
            and a few reference rows).
        steps: IG steps per baseline.
        top_k: how many leading features must keep their places (clipped to d).
        device: as for :func:`integrated_gradients`.

    Returns:
        ``(n,)`` float64 in [0, 1]; 1 means the top-k ranking does not move across baselines.
    """
    x = as_rows(inputs, "inputs")
    bases = np.asarray(baselines, dtype=np.float64)
    if bases.ndim != 2 or bases.shape[0] < 2:
        raise ValueError(
            f"baselines must be (b, d) with at least 2 rows to compare, got shape {bases.shape}"
        )
    bases = as_rows(bases, "baselines", x.shape[1])
    if top_k < 1:
        raise ValueError(f"top_k must be positive, got {top_k}")
    k = min(top_k, x.shape[1])
    rankings = np.stack(
        [
            _top_k(integrated_gradients(model, x, b, steps=steps, device=device).values, k)
            for b in bases
        ]
    )  # (b, n, k)
    scores = [
        _average_overlap(rankings[i], rankings[j]) for i, j in combinations(range(len(bases)), 2)
    ]
    return np.asarray(np.mean(scores, axis=0), dtype=np.float64)


def _top_k(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest |values| per row; ties go to the lower feature index."""
    # A stable sort on -|v| makes the ranking deterministic when attributions tie (e.g. zeros).
    return np.argsort(-np.abs(values), axis=1, kind="stable")[:, :k]


def _average_overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean over depths r of |a[:, :r] & b[:, :r]| / r for two ``(n, k)`` rankings."""
    n, k = a.shape
    total = np.zeros(n, dtype=np.float64)
    for r in range(1, k + 1):
        shared = (a[:, :r, None] == b[:, None, :r]).any(axis=2).sum(axis=1)
        total += shared / r
    return np.asarray(total / k, dtype=np.float64)
