"""How well two attribution methods agree on one row: rank correlation over their top features."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy.stats import rankdata

AGREEMENT_METHOD = "spearman_top{k}_union"


def agreement_method(top_k: int) -> str:
    """The name a row records with its agreement figure, e.g. `spearman_top5_union`."""
    return AGREEMENT_METHOD.format(k=top_k)


def rank_agreement(a: npt.ArrayLike, b: npt.ArrayLike, top_k: int = 5) -> npt.NDArray[np.float64]:
    """Per row, Spearman's rho of two methods' signed attributions over their top features.

    The features compared are the union of each method's `top_k` by |attribution|: what a
    reader of either explanation would look at. Signed values are ranked, so a feature one
    method says raises the score and the other says lowers it counts against agreement, as
    it should (two instruments that disagree on direction disagree). Ties get average ranks
    (scipy's rankdata). When both methods give the compared features the same value (e.g. all
    zero) they agree (1.0); when only one of them is constant the correlation is undefined and
    the row gets 0.0 (no evidence of agreement).

    Args:
        a, b: ``(n, d)`` attributions of the same rows by two methods.
        top_k: how many top features of each method to compare (at least 2).

    Returns:
        ``(n,)`` values in [-1, 1].
    """
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.ndim != 2 or x.shape != y.shape:
        raise ValueError(f"need two (n, d) arrays of one shape, got {x.shape} and {y.shape}")
    if top_k < 2:
        raise ValueError(f"top_k must be at least 2, got {top_k}")
    n, d = x.shape
    k = min(top_k, d)
    out = np.empty(n, dtype=np.float64)
    for i in range(n):
        # Stable order (magnitude, then feature index) so the same row always compares the
        # same features.
        top_x = np.lexsort((np.arange(d), -np.abs(x[i])))[:k]
        top_y = np.lexsort((np.arange(d), -np.abs(y[i])))[:k]
        cols = np.union1d(top_x, top_y)
        xi, yi = x[i, cols], y[i, cols]
        if cols.size < 2 or (np.ptp(xi) == 0 and np.ptp(yi) == 0):
            out[i] = 1.0 if np.allclose(xi, yi) else 0.0
            continue
        if np.ptp(xi) == 0 or np.ptp(yi) == 0:
            out[i] = 0.0
            continue
        rx, ry = rankdata(xi), rankdata(yi)
        out[i] = float(np.corrcoef(rx, ry)[0, 1])
    return np.clip(out, -1.0, 1.0)
