"""Counterfactuals for sampled rows, shaped as the explanation record's counterfactual columns."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from registry.store import LoadedModel
from transforms.explainers.counterfactuals import (
    CounterfactualConfig,
    generate_counterfactuals,
    spec_from_training,
)

Row = dict[str, Any]


def counterfactuals_for_rows(
    model: LoadedModel, x: np.ndarray, wanted: list[int], config: Any, device: torch.device
) -> dict[int, tuple[str, list[Row] | None]]:
    """Row index -> (status, counterfactual rows) for the wanted rows of x."""
    card = model.card
    spec = spec_from_training(
        card.feature_names,
        model.reference_rows,
        immutable=tuple(f.name for f in card.features if f.immutable),
        integer=tuple(f.name for f in card.features if f.type == "int"),
        monotone=np.array([f.monotone for f in card.features]),
        lower=np.array([-np.inf if f.lower is None else f.lower for f in card.features]),
        upper=np.array([np.inf if f.upper is None else f.upper for f in card.features]),
    )
    cf_config = CounterfactualConfig(
        threshold=float(card.decision_threshold if card.decision_threshold is not None else 0.5),
        desired="flip",
        n_counterfactuals=config.counterfactuals_per_query,
        seed=config.seed,
    )
    results = generate_counterfactuals(
        model.module, x[wanted], spec, cf_config,
        reference_rows=model.reference_rows, reference_scores=model.reference_scores,
        device=device,
    )
    out: dict[int, tuple[str, list[Row] | None]] = {}
    for i, result in zip(wanted, results, strict=True):
        rows = [
            {
                "rank": rank,
                "changes": [{"feature": f, "from_value": float(a), "to_value": float(b)}
                            for f, a, b in cf.changes],
                "score": float(cf.score),
                "valid": bool(cf.valid),
                "proximity": float(cf.proximity),
                "sparsity": int(cf.sparsity),
                "plausibility": float(cf.plausibility),
            }
            for rank, cf in enumerate(result.counterfactuals)
        ]
        out[i] = (result.status, rows or None)
    return out
