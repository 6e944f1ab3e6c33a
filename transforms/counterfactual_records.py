"""Counterfactuals for sampled rows, shaped as the explanation record's counterfactual columns."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import torch

from whylake.registry.store import LoadedModel
from whylake.transforms.explainers.config import ExplainConfig
from whylake.transforms.explainers.counterfactuals import (
    CounterfactualConfig,
    generate_counterfactuals,
    spec_from_training,
)
from whylake.transforms.explainers.device import model_device
from whylake.transforms.explainers.model_calls import forward_scalar, predict_numpy

Row = dict[str, Any]


def counterfactuals_for_rows(
    model: LoadedModel,
    x: np.ndarray,
    wanted: list[int],
    config: ExplainConfig,
    device: torch.device,
    scorer: Any = None,
    method: str = "gradient",
    *,
    immutable: tuple[str, ...] = (),
) -> dict[int, tuple[str, list[Row] | None]]:
    """Row index -> (status, counterfactual rows) for the wanted rows of x.

    ``scorer`` is a torch callable giving the logged score (a probability for classifiers;
    default the loaded torch module); ``method`` "search" is the gradient-free path for models
    without gradients (boosters, pipelines). ``immutable`` names features the tenant's
    explanation policy forbids changing, on top of the card's.
    """
    card = model.card
    scorer = model.model if scorer is None else scorer
    spec = spec_from_training(
        card.feature_names,
        model.reference_rows,
        immutable=tuple(f.name for f in card.features if f.immutable or f.name in immutable),
        integer=tuple(f.name for f in card.features if f.type == "int"),
        monotone={f.name: f.monotone for f in card.features if f.monotone},
        categorical_groups=_onehot_groups(card),
    )
    # The card's declared bounds win over the reference sample's range where it gives them.
    pairs = list(zip(card.features, spec.lower, spec.upper, strict=True))
    lower = np.array([lo if f.lower is None else f.lower for f, lo, _ in pairs])
    upper = np.array([hi if f.upper is None else f.upper for f, _, hi in pairs])
    spec = replace(spec, lower=lower, upper=upper)
    threshold = float(card.decision_threshold if card.decision_threshold is not None else 0.5)
    searched, ref_scores = scorer, model.reference_scores
    if card.task == "regression":
        # The search crosses a probability threshold; a regression score crosses its own
        # threshold exactly when sigmoid((f - t) / s) crosses 0.5 (a monotone map), so the
        # search runs on that and every result is re-scored on the raw model below.
        scale = float(np.std(model.reference_scores)) / 4 or 1.0
        searched = _ThresholdProbability(scorer, threshold, scale)
        ref_scores = 1 / (1 + np.exp(-(model.reference_scores - threshold) / scale))
        threshold = 0.5
    cf_config = CounterfactualConfig(
        threshold=threshold,
        desired="flip",
        n_counterfactuals=config.counterfactuals_per_query,
        seed=config.seed,
        method=method,
    )
    results = generate_counterfactuals(
        searched,
        x[wanted],
        spec,
        cf_config,
        reference_rows=model.reference_rows,
        reference_scores=ref_scores,
        device=device,
    )
    out: dict[int, tuple[str, list[Row] | None]] = {}
    for i, result in zip(wanted, results, strict=True):
        rows = [
            {
                "rank": rank,
                "changes": [
                    {"feature": f, "from_value": float(a), "to_value": float(b)}
                    for f, a, b in cf.changes
                ],
                "score": _raw_score(model.card.task, scorer, cf.values, cf.score, device),
                "valid": bool(cf.valid),
                "proximity": float(cf.proximity),
                "sparsity": int(cf.sparsity),
                "plausibility": float(cf.plausibility),
            }
            for rank, cf in enumerate(result.counterfactuals)
        ]
        out[i] = (result.status, rows or None)
    return out


class _ThresholdProbability(torch.nn.Module):
    """sigmoid((f(x) - threshold) / scale): a regression score as a probability of exceeding."""

    def __init__(self, module: Any, threshold: float, scale: float) -> None:
        super().__init__()
        self.module, self.threshold, self.scale = module, threshold, scale
        self.device = model_device(module)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Through the one helper: it places x where the wrapped model computes.
        return torch.sigmoid((forward_scalar(self.module, x) - self.threshold) / self.scale)


def _raw_score(
    task: str, scorer: Any, values: np.ndarray, searched_score: float, device: torch.device
) -> float:
    """The model's own output on a counterfactual (the searched score is only a proxy).

    Through `predict_numpy`, which places the input on the model's device: a CPU tensor fed
    to a model on `cuda` would fail every regression tenant's counterfactuals on a GPU.
    """
    if task != "regression":
        return float(searched_score)
    return float(predict_numpy(scorer, values[None, :], device)[0])


def _onehot_groups(card: Any) -> tuple[tuple[str, ...], ...]:
    """The card's one-hot groups (features sharing a `group`), kept valid by the search."""
    groups: dict[str, list[str]] = {}
    for f in card.features:
        if f.group is not None:
            groups.setdefault(f.group, []).append(f.name)
    return tuple(tuple(names) for names in groups.values())
