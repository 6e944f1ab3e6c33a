"""Exact interventional Shapley values by enumerating every coalition (Lundberg & Lee 2017)."""

from __future__ import annotations

from collections.abc import Callable
from math import factorial

import numpy as np

MAX_FEATURES = 12

# Model evaluations per call of f: 2^12 coalitions x a 100-row background is ~410k rows, so
# evaluating in blocks keeps memory flat whatever the background size.
_ROWS_PER_CALL = 65536


def exact_shapley(
    f: Callable[[np.ndarray], np.ndarray], x: np.ndarray, background: np.ndarray
) -> np.ndarray:
    """Interventional Shapley values of ``f`` at ``x`` against background rows, exactly.

    The value of a coalition S is v(S) = mean over background rows r of f(x_S, r_notS): the
    features outside S are replaced by the background's (the interventional / baseline Shapley
    game that KernelExplainer and LinearExplainer estimate). All 2^d coalitions are enumerated,
    so this is a reference for tests and small models, not a production explainer.

    Args:
        f: maps an ``(m, d)`` float64 array to ``(m,)`` (or ``(m, 1)``) outputs.
        x: one row ``(d,)`` or rows ``(n, d)``.
        background: ``(k, d)`` rows (a single ``(d,)`` row is a baseline).

    Returns:
        ``(d,)`` for a single row, else ``(n, d)``, float64; each row sums to
        f(x) - mean(f(background)) up to rounding.

    Raises:
        ValueError: ``d > 12`` (4,096 coalitions times the background is the sensible limit),
            or shapes that do not match.
    """
    xs = np.asarray(x, dtype=np.float64)
    single = xs.ndim == 1
    xs = np.atleast_2d(xs)
    bg = np.atleast_2d(np.asarray(background, dtype=np.float64))
    if xs.ndim != 2 or bg.ndim != 2 or xs.shape[1] != bg.shape[1] or bg.shape[0] == 0:
        raise ValueError(f"x {xs.shape} and background {bg.shape} must be (n, d) and (k, d)")
    d = xs.shape[1]
    if d > MAX_FEATURES:
        raise ValueError(
            f"exact_shapley enumerates 2^d coalitions; d = {d} exceeds {MAX_FEATURES}: use "
            "shap_attributions for wider models"
        )
    masks = _coalitions(d)
    coefficients = _shapley_coefficients(masks)
    out = np.empty_like(xs)
    for i, row in enumerate(xs):
        values = _coalition_values(f, row, bg, masks)
        out[i] = coefficients.T @ values
    return out[0] if single else out


def _coalitions(d: int) -> np.ndarray:
    """All 2^d subsets of d features as a ``(2^d, d)`` boolean matrix (bit j = feature j)."""
    codes = np.arange(2**d, dtype=np.int64)
    return ((codes[:, None] >> np.arange(d)[None, :]) & 1).astype(bool)


def _shapley_coefficients(masks: np.ndarray) -> np.ndarray:
    """C with phi = C.T @ v: +w(|S|-1) where i is in S, -w(|S|) where it is not.

    w(s) = s! (d - s - 1)! / d! is the Shapley weight of adding a feature to a coalition of
    size s; writing phi_i as sum_S v(S) C[S, i] evaluates each coalition once, not d times.
    """
    d = masks.shape[1]
    size = masks.sum(axis=1)
    weight = np.array(
        [factorial(s) * factorial(d - s - 1) / factorial(d) for s in range(d)] + [0.0]
    )
    with_i = weight[np.maximum(size - 1, 0)]
    without_i = weight[np.minimum(size, d)]
    return np.asarray(np.where(masks, with_i[:, None], -without_i[:, None]), dtype=np.float64)


def _coalition_values(
    f: Callable[[np.ndarray], np.ndarray], row: np.ndarray, bg: np.ndarray, masks: np.ndarray
) -> np.ndarray:
    """v(S) for every coalition: the mean of f over the background with S set to ``row``."""
    k = bg.shape[0]
    values = np.empty(masks.shape[0], dtype=np.float64)
    per_call = max(1, _ROWS_PER_CALL // k)
    for start in range(0, masks.shape[0], per_call):
        block = masks[start : start + per_call]
        hybrid = np.where(block[:, None, :], row[None, None, :], bg[None, :, :])
        out = np.asarray(f(hybrid.reshape(-1, row.shape[0])), dtype=np.float64).reshape(-1)
        if out.shape[0] != block.shape[0] * k:
            raise ValueError(f"f returned {out.shape[0]} values for {block.shape[0] * k} rows")
        values[start : start + block.shape[0]] = out.reshape(block.shape[0], k).mean(axis=1)
    return values
