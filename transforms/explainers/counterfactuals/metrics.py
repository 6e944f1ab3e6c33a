"""Measure counterfactuals one way whoever made them: re-scored validity, proximity, sparsity."""

from __future__ import annotations

import math

import numpy as np
import torch

from whylake.transforms.explainers.counterfactuals.constraints import Constraints
from whylake.transforms.explainers.counterfactuals.spec import (
    Counterfactual,
    CounterfactualConfig,
    CounterfactualSpec,
)
from whylake.transforms.explainers.device import resolve_device
from whylake.transforms.explainers.model_calls import as_rows, check_eval_mode, forward_scalar

# Rows x reference rows x features per plausibility chunk (bounds cdist's working memory).
_CDIST_CHUNK = 1 << 24


def evaluate_counterfactuals(
    model: object,
    queries: np.ndarray,
    candidates: np.ndarray,
    spec: CounterfactualSpec,
    config: CounterfactualConfig,
    *,
    reference_rows: np.ndarray,
    reference_scores: np.ndarray,
    device: torch.device | str | None = None,
) -> list[Counterfactual]:
    """Re-score candidate counterfactuals (row i for query i) and measure them the same way.

    Any counterfactual generator's output can be measured with it, so comparisons share one
    definition of validity (strictly past the threshold, on the side ``config.desired`` asks),
    proximity, sparsity and plausibility.
    """
    dev = resolve_device(model, None if device is None else torch.device(device))
    check_eval_mode(model)
    d = spec.n_features
    q = as_rows(queries, "queries", d)
    c = as_rows(candidates, "candidates", d)
    if q.shape != c.shape:
        raise ValueError(f"queries {q.shape} and candidates {c.shape} must pair row by row")
    cons = Constraints(spec, dev)
    x0 = torch.as_tensor(q, dtype=torch.float32, device=dev)
    x = torch.as_tensor(c, dtype=torch.float32, device=dev)
    with torch.no_grad():
        p0 = forward_scalar(model, x0).float()
    sign = target_sign(p0, config)
    return measure(model, x, x0, sign, cons, spec, config, reference_rows, reference_scores, q, c)


def target_sign(p0: torch.Tensor, config: CounterfactualConfig) -> torch.Tensor:
    """+1 where the score must end above the threshold, -1 where below."""
    if config.desired == "above":
        return torch.ones_like(p0)
    if config.desired == "below":
        return -torch.ones_like(p0)
    return torch.where(p0 >= config.threshold, -1.0, 1.0)


def measure(
    model: object,
    x: torch.Tensor,
    x0: torch.Tensor,
    sign: torch.Tensor,
    cons: Constraints,
    spec: CounterfactualSpec,
    config: CounterfactualConfig,
    reference_rows: np.ndarray,
    reference_scores: np.ndarray,
    query_exact: np.ndarray,
    candidate_exact: np.ndarray,
) -> list[Counterfactual]:
    """Score, validity, proximity, sparsity, plausibility and changes for rows of x against x0.

    The model sees float32 (x, x0); what a column "changed" means is decided there. Reported
    values are ``candidate_exact`` where a column changed and ``query_exact`` (the caller's own
    float64 input) where it did not, so an unchanged feature reads back exactly as given.
    """
    ref = as_rows(reference_rows, "reference_rows", spec.n_features)
    ref_scores = np.asarray(reference_scores, dtype=np.float64).reshape(-1)
    if ref_scores.shape != (ref.shape[0],):
        raise ValueError(
            f"reference_scores has {ref_scores.size} values for {ref.shape[0]} reference rows"
        )
    if x.shape[0] == 0:
        return []
    with torch.no_grad():
        p = forward_scalar(model, x).float()
    valid = sign * (p - config.threshold) > 0
    proximity = cons.distance(x, x0)
    changed = cons.changed_items(x, x0)
    sparsity = changed.sum(1)
    plausibility = torch.full((x.shape[0],), math.nan, device=x.device)
    ref_t = torch.as_tensor(ref, dtype=torch.float32, device=x.device) / cons.scale
    ref_side = torch.as_tensor(ref_scores, device=x.device) - config.threshold
    for side in (1.0, -1.0):
        rows = torch.nonzero(sign == side).squeeze(1)
        pool = ref_t[ref_side * side > 0]
        if rows.numel() == 0 or pool.shape[0] == 0:
            continue
        step = max(1, _CDIST_CHUNK // max(1, pool.shape[0] * spec.n_features))
        for start in range(0, rows.numel(), step):
            part = rows[start : start + step]
            dist = torch.cdist(x[part] / cons.scale, pool, p=1.0)
            plausibility[part] = dist.min(dim=1).values
    names = spec.feature_names
    moved_t = x != x0
    # Changed columns first, largest scaled change first; one sort for all rows.
    key = ((x - x0).abs() / cons.scale).masked_fill(~moved_t, -1.0)
    order = torch.argsort(key, dim=1, descending=True, stable=True).cpu().numpy()
    moved = moved_t.cpu().numpy()
    n_moved = moved.sum(1).tolist()
    x0s = np.asarray(query_exact, dtype=np.float64)
    xs = np.where(moved, np.asarray(candidate_exact, dtype=np.float64), x0s)
    x0l, xl = x0s.tolist(), xs.tolist()
    out = []
    for i, (score, ok, prox, sp, plaus) in enumerate(
        zip(
            p.tolist(),
            valid.tolist(),
            proximity.tolist(),
            sparsity.tolist(),
            plausibility.tolist(),
            strict=True,
        )
    ):
        cols = order[i, : n_moved[i]].tolist()
        changes = tuple((names[j], x0l[i][j], xl[i][j]) for j in cols)
        out.append(
            Counterfactual(
                values=xs[i],
                score=score,
                valid=ok,
                proximity=prox,
                sparsity=int(sp),
                plausibility=plaus,
                changes=changes,
            )
        )
    return out
