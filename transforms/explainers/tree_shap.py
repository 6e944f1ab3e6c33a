"""Exact TreeSHAP of gradient-boosted trees through the boosters' own C++ (Lundberg et al. 2020).

XGBoost's and LightGBM's ``pred_contribs`` / ``pred_contrib`` are the path-dependent TreeSHAP
algorithm of shap's TreeExplainer, implemented inside the booster (XGBoost runs GPUTreeShap,
Mitchell et al. 2022, when the booster is on ``cuda``). They explain the raw output, the margin:
log-odds for a binary classifier. Nothing is re-implemented here: `make bench-models` checks the
values against shap's TreeExplainer to 1e-6 and measures the wrapping's cost against a bare call.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from whylake.transforms.explainers.model_calls import as_rows, place_rows
from whylake.transforms.explainers.result import AttributionResult

LIBRARIES = ("xgboost", "lightgbm")


class TreeEnsemble:
    """A booster as the explainers call it: margins and TreeSHAP contributions of numpy rows."""

    def __init__(
        self,
        booster: Any,
        library: str,
        feature_names: tuple[str, ...],
        device: torch.device | None = None,
    ) -> None:
        if library not in LIBRARIES:
            raise ValueError(f"library {library!r} is not one of {LIBRARIES}")
        self.booster = booster
        self.library = library
        self.feature_names = feature_names
        self.device = device or torch.device("cpu")
        if library == "xgboost":
            # GPUTreeShap and GPU prediction when the booster lives on cuda (XGBoost's CUDA
            # build, the PyPI default); LightGBM's contributions run on the CPU.
            booster.set_param({"device": "cuda" if self.device.type == "cuda" else "cpu"})

    def _matrix(self, rows: np.ndarray) -> Any:
        import xgboost

        names = list(self.feature_names) if self.booster.feature_names else None
        return xgboost.DMatrix(rows, feature_names=names)

    def predict_rows(self, rows: np.ndarray) -> np.ndarray:
        """The raw margin per row (log-odds for a binary classifier)."""
        if self.library == "xgboost":
            out = self.booster.predict(self._matrix(rows), output_margin=True)
        else:
            out = self.booster.predict(rows, raw_score=True)
        return np.asarray(out, dtype=np.float64).reshape(-1)

    def contributions(self, rows: np.ndarray) -> np.ndarray:
        """``(n, d + 1)``: TreeSHAP values per feature, then the bias (the expected margin)."""
        return self.explain_rows(rows)[0]

    def explain_rows(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Contributions and margins of the same rows (XGBoost: one DMatrix for both calls)."""
        if self.library == "xgboost":
            matrix = self._matrix(rows)
            contrib = self.booster.predict(matrix, pred_contribs=True)
            margin = self.booster.predict(matrix, output_margin=True)
        else:
            contrib = self.booster.predict(rows, pred_contrib=True)
            margin = self.booster.predict(rows, raw_score=True)
        return np.asarray(contrib, dtype=np.float64), np.asarray(margin, np.float64).reshape(-1)


def tree_shap(model: Any, inputs: np.ndarray, *, batch_rows: int = 65536) -> AttributionResult:
    """TreeSHAP values of a :class:`TreeEnsemble` with the additivity error per row.

    ``base_value`` is the bias column (the booster's expected margin over its training
    cover) and ``prediction`` the margin itself, computed by a separate prediction call, so
    the error measures the contributions against what the booster predicts.
    """
    x = as_rows(inputs, "inputs")
    values = np.empty_like(x)
    base = np.empty(x.shape[0])
    prediction = np.empty(x.shape[0])
    for start in range(0, x.shape[0], batch_rows):
        block = place_rows(model, x[start : start + batch_rows])
        # The margin comes from a prediction of its own, so the additivity error measures the
        # contributions against what the booster predicts, not against their own sum.
        contrib, margin = model.explain_rows(block)
        stop = start + block.shape[0]
        values[start:stop], base[start:stop] = contrib[:, :-1], contrib[:, -1]
        prediction[start:stop] = margin
    config: dict[str, object] = {
        "library": model.library,
        "algorithm": "path-dependent TreeSHAP (pred_contribs)",
        "output": "raw margin",
        "device": model.device.type,
    }
    return AttributionResult.build("tree_shap", values, prediction, base, config)
