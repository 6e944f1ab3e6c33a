"""Generate diverse, constrained counterfactuals for a batch of queries, each one re-scored."""

from __future__ import annotations

import numpy as np
import torch

from whylake.transforms.explainers.counterfactuals.constraints import Constraints
from whylake.transforms.explainers.counterfactuals.diversity import (
    candidates,
    diversify,
    select_diverse,
)
from whylake.transforms.explainers.counterfactuals.metrics import measure, target_sign
from whylake.transforms.explainers.counterfactuals.search import Search, query_generators
from whylake.transforms.explainers.counterfactuals.spec import (
    ALREADY_MET,
    FOUND,
    NOT_FOUND,
    CounterfactualConfig,
    CounterfactualResult,
    CounterfactualSpec,
)
from whylake.transforms.explainers.device import resolve_device
from whylake.transforms.explainers.model_calls import as_rows, check_eval_mode, forward_scalar


def generate_counterfactuals(
    model: object,
    inputs: np.ndarray,
    spec: CounterfactualSpec,
    config: CounterfactualConfig,
    *,
    reference_rows: np.ndarray,
    reference_scores: np.ndarray,
    device: torch.device | str | None = None,
) -> list[CounterfactualResult]:
    """Diverse, constrained counterfactuals for each input row, every one re-scored and measured.

    Args:
        model: torch callable mapping float32 (n, d) raw inputs to (n,) or (n, 1) scores; in eval
            mode; differentiable unless ``config.method == "search"``.
        inputs: (n, d) queries in the model's raw units.
        spec: constraints and distance scale (see :func:`spec_from_training`).
        config: target, budget, seed and method.
        reference_rows: training rows, for plausibility (distance to the nearest target-class row).
        reference_scores: their scores (or 0/1 labels), thresholded at ``config.threshold``.
        device: where to run; by default the model's device, else CUDA when present.

    Returns:
        One result per input row, in order.

    Raises:
        ValueError: inputs of the wrong shape, non-finite, or with a one-hot group not one-hot.
    """
    dev = resolve_device(model, None if device is None else torch.device(device))
    check_eval_mode(model)
    d = spec.n_features
    rows = as_rows(inputs, "inputs", d)
    for g in spec.categorical_groups:
        block = rows[:, list(g)]
        bad = np.flatnonzero(~(np.isin(block, (0.0, 1.0)).all(1) & (block.sum(1) == 1)))
        if bad.size:
            raise ValueError(
                f"inputs row {int(bad[0])}: categorical group {[spec.feature_names[j] for j in g]} "
                f"is not one-hot ({block[bad[0]].tolist()})"
            )
    rows32 = rows.astype(np.float32)
    cons = Constraints(spec, dev)
    x0_all = torch.as_tensor(rows32, device=dev)
    with torch.no_grad():
        p0_all = forward_scalar(model, x0_all).float()
    sign_all = target_sign(p0_all, config)
    met = (sign_all * (p0_all - config.threshold) > 0).tolist()
    query_scores = p0_all.tolist()
    todo = [i for i in range(rows.shape[0]) if not met[i]]
    results: list[CounterfactualResult | None] = [None] * rows.shape[0]
    for i in range(rows.shape[0]):
        if met[i]:
            results[i] = CounterfactualResult(
                status=ALREADY_MET,
                counterfactuals=(),
                query_score=query_scores[i],
                message=f"the score already lies {config.desired} {config.threshold}",
            )
    if todo:
        idx = torch.as_tensor(todo, device=dev)
        search = Search(model, x0_all[idx], sign_all[idx], cons, config)
        gens = query_generators(rows32[todo], config.seed, config.method)
        x, found, rescued = candidates(search, gens)
        picks = select_diverse(
            x, found, search.x0, cons, config.n_counterfactuals, config.diversity
        )
        x, found, picks = diversify(search, rows32[todo], x, found, picks)
        flat_q = [qi for qi, p in enumerate(picks) for _ in p]
        flat_c = [c for p in picks for c in p]
        chosen = x[flat_q, flat_c] if flat_q else x.new_zeros((0, d))
        owner = torch.as_tensor(flat_q, dtype=torch.long, device=dev)
        owner_rows = np.asarray(todo, dtype=np.int64)[np.asarray(flat_q, dtype=np.int64)]
        measured = measure(
            model,
            chosen,
            search.x0[owner],
            search.sign[owner],
            cons,
            spec,
            config,
            reference_rows,
            reference_scores,
            rows[owner_rows],
            chosen.cpu().double().numpy(),
        )
        movable = search.movable().tolist()
        was_rescued = rescued.tolist()
        if config.method == "search":
            budget = f"{config.max_steps} search rounds"
        elif config.search_fallback:
            budget = f"{config.max_steps} gradient steps and {config.max_steps} search rounds"
        else:
            budget = f"{config.max_steps} gradient steps (search fallback off)"
        at = 0
        for qi, i in enumerate(todo):
            mine = measured[at : at + len(picks[qi])]
            at += len(picks[qi])
            # Defence in depth: the margin makes this impossible, but an invalid one never leaves.
            kept = tuple(cf for cf in mine if cf.valid)
            if kept:
                message = f"{len(kept)} of {config.n_counterfactuals} requested"
                if len(kept) < config.n_counterfactuals:
                    message += " (no further distinct valid counterfactual found)"
                if was_rescued[qi]:
                    message += "; found by the gradient-free search after gradient steps stalled"
                results[i] = CounterfactualResult(FOUND, kept, query_scores[i], message)
            else:
                why = (
                    f"no valid counterfactual within {budget}"
                    if movable[qi]
                    else "every feature is immutable or pinned at a bound: nothing can change"
                )
                results[i] = CounterfactualResult(NOT_FOUND, (), query_scores[i], why)
    return [r for r in results if r is not None]
