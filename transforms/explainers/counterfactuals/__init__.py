"""Counterfactuals: small, constrained, re-scored input changes that move a score past a threshold.

Wachter, Mittelstadt & Russell 2017 (MAD-scaled L1 distance); the gradient path takes linearised
L1-minimal steps (as SparseFool, Modas et al. 2019, does for adversarial examples); the
model-agnostic path samples sparse growing spheres (Laugel et al. 2018); diversity and post-hoc
sparsity follow DiCE (Mothilal et al. 2020).
"""

from whylake.transforms.explainers.counterfactuals.generate import generate_counterfactuals
from whylake.transforms.explainers.counterfactuals.metrics import evaluate_counterfactuals
from whylake.transforms.explainers.counterfactuals.spec import (
    ALREADY_MET,
    DESIRED_OUTCOMES,
    FOUND,
    METHODS,
    NOT_FOUND,
    STATUSES,
    Counterfactual,
    CounterfactualConfig,
    CounterfactualResult,
    CounterfactualSpec,
    spec_from_training,
)

__all__ = [
    "ALREADY_MET",
    "DESIRED_OUTCOMES",
    "FOUND",
    "METHODS",
    "NOT_FOUND",
    "STATUSES",
    "Counterfactual",
    "CounterfactualConfig",
    "CounterfactualResult",
    "CounterfactualSpec",
    "evaluate_counterfactuals",
    "generate_counterfactuals",
    "spec_from_training",
]
