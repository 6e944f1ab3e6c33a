"""Pure torch/numpy explainers (IG, SHAP, exact Shapley, stability, summaries); no Beam here."""

from __future__ import annotations

from whylake.transforms.explainers.device import pick_device
from whylake.transforms.explainers.exact_shapley import exact_shapley
from whylake.transforms.explainers.integrated_gradients import integrated_gradients
from whylake.transforms.explainers.result import AttributionResult
from whylake.transforms.explainers.shap_values import shap_attributions
from whylake.transforms.explainers.stability import attribution_stability
from whylake.transforms.explainers.summary import summarize

__all__ = [
    "AttributionResult",
    "attribution_stability",
    "exact_shapley",
    "integrated_gradients",
    "pick_device",
    "shap_attributions",
    "summarize",
]
