"""Model-agnostic interventional Shapley values with batched model calls (Lundberg & Lee 2017).

Exact where the coalitions fit a budget (every one of the 2^d coalitions against the
background, evaluated in large batches across rows); otherwise antithetic permutation sampling
(Strumbelj & Kononenko 2014; Mitchell et al. 2022 for the antithetic pairs), which is additive
by construction on every permutation and reports the standard error of each estimate. Written
here rather than calling shap's KernelExplainer: that solves a weighted regression per row and
calls the model once per row; this evaluates many rows' coalitions per call (`make
bench-models` records rows/s and error against exact values side by side).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import numpy as np

from whylake.transforms.explainers.exact_shapley import (
    MAX_FEATURES,
    _coalitions,
    _shapley_coefficients,
)
from whylake.transforms.explainers.model_calls import as_rows, predict_rows
from whylake.transforms.explainers.result import AttributionResult

# Model rows per call: large calls amortise per-call overhead (a pipeline's validation, a
# booster's matrix set-up), small enough to keep memory flat.
_ROWS_PER_CALL = 1 << 18
# Coalition x background evaluations per explained row above which sampling takes over.
_EXACT_BUDGET = 1 << 17


def agnostic_shapley(
    model: Any,
    inputs: np.ndarray,
    background: np.ndarray,
    *,
    permutations: int = 16,
    seed: int = 0,
    exact_budget: int = _EXACT_BUDGET,
) -> AttributionResult:
    """Shapley values of any model with ``predict_rows`` against a background sample.

    Args:
        model: has ``predict_rows((m, d) float64) -> (m,)`` (called through
            :func:`predict_rows`, so a model on another device gets its inputs there).
        inputs: ``(n, d)`` rows to explain.
        background: ``(k, d)`` reference rows; ``base_value`` is the mean output over them.
        permutations: permutations per row when sampling (rounded up to an even number: each
            comes with its reverse).
        seed: seeds the permutations (per row, from the row's own values: a row's values do not
            depend on the batch it is in).
        exact_budget: enumerate all coalitions when ``2^d * k`` is at most this.

    Returns:
        An AttributionResult whose ``std_error`` is each row's largest standard error (0 when
        exact).
    """
    x = as_rows(inputs, "inputs")
    bg = as_rows(background, "background", x.shape[1])
    n, d = x.shape
    k = bg.shape[0]

    def f(rows: np.ndarray) -> np.ndarray:
        return predict_rows(model, rows)

    base = float(np.mean(f(bg)))
    prediction = f(x)
    exact = d <= MAX_FEATURES and (2**d) * k <= exact_budget
    if exact:
        values = _exact(f, x, bg)
        std_error = np.zeros(n)
    else:
        values, std_error = _permutation(f, x, bg, permutations + permutations % 2, seed)
    config: dict[str, object] = {
        "estimator": "exact" if exact else "antithetic_permutation",
        "background_rows": k,
        "background_sha256": hashlib.sha256(np.ascontiguousarray(bg).tobytes()).hexdigest(),
        "permutations": 0 if exact else permutations + permutations % 2,
        "seed": seed,
    }
    method = "exact_shapley" if exact else "permutation_shapley"
    base_values = np.full(n, base)
    return AttributionResult.build(method, values, prediction, base_values, config, std_error)


def _exact(f: Callable[[np.ndarray], np.ndarray], x: np.ndarray, bg: np.ndarray) -> np.ndarray:
    """Every coalition of every row, many rows per model call."""
    n, d = x.shape
    k = bg.shape[0]
    masks = _coalitions(d)
    coefficients = _shapley_coefficients(masks)
    per_row = masks.shape[0] * k
    rows_per_call = max(1, _ROWS_PER_CALL // per_row)
    out = np.empty_like(x)
    for start in range(0, n, rows_per_call):
        block = x[start : start + rows_per_call]
        r = block.shape[0]
        hybrid = np.where(masks[None, :, None, :], block[:, None, None, :], bg[None, None, :, :])
        v = f(hybrid.reshape(-1, d)).reshape(r, masks.shape[0], k).mean(axis=2)
        out[start : start + r] = v @ coefficients
    return out


def _permutation(
    f: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    bg: np.ndarray,
    permutations: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Antithetic permutation sampling; returns values and each row's largest std error."""
    n, d = x.shape
    k = bg.shape[0]
    per_row = permutations * (d - 1) * k
    rows_per_call = max(1, _ROWS_PER_CALL // max(per_row, 1))
    values = np.empty_like(x)
    std_error = np.empty(n)
    f_bg = float(np.mean(f(bg)))
    for start in range(0, n, rows_per_call):
        block = x[start : start + rows_per_call]
        r = block.shape[0]
        orders = np.stack([_orders(row, d, permutations, seed) for row in block])  # (r, P, d)
        # ranks[i, p, j]: the position of feature j in permutation p of row i.
        ranks = np.argsort(orders, axis=2)
        steps = np.arange(1, d)  # coalitions of the first 1..d-1 features of each order
        on = ranks[:, :, None, :] < steps[None, None, :, None]  # (r, P, d - 1, d)
        hybrid = np.where(
            on[:, :, :, None, :], block[:, None, None, None, :], bg[None, None, None, :, :]
        )
        v_mid = f(hybrid.reshape(-1, d)).reshape(r, permutations, d - 1, k).mean(axis=3)
        f_x = f(block)
        v = np.concatenate(
            [
                np.full((r, permutations, 1), f_bg),
                v_mid,
                np.broadcast_to(f_x[:, None, None], (r, permutations, 1)),
            ],
            axis=2,
        )
        gains = np.diff(v, axis=2)  # (r, P, d): the gain of the feature added at each step
        phi = np.empty((r, permutations, d))
        np.put_along_axis(phi, orders, gains, axis=2)
        # A permutation and its reverse are one antithetic sample: average them first.
        pairs = 0.5 * (phi[:, 0::2] + phi[:, 1::2])
        values[start : start + r] = pairs.mean(axis=1)
        spread = pairs.std(axis=1, ddof=1) / np.sqrt(pairs.shape[1])
        std_error[start : start + r] = spread.max(axis=1)
    return values, std_error


def _orders(row: np.ndarray, d: int, permutations: int, seed: int) -> np.ndarray:
    """Seeded permutations and their reverses, drawn from the row's own bytes."""
    digest = hashlib.blake2b(np.ascontiguousarray(row).tobytes(), digest_size=8).digest()
    rng = np.random.default_rng([seed, int.from_bytes(digest, "little")])
    half = np.stack([rng.permutation(d) for _ in range(permutations // 2)])
    out = np.empty((permutations, d), dtype=np.int64)
    out[0::2], out[1::2] = half, half[:, ::-1]
    return out
