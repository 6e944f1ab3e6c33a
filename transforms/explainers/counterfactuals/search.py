"""The candidate search: one class combining the gradient path, the sphere search and refinement."""

from __future__ import annotations

from whylake.transforms.explainers.counterfactuals.gradient import GradientSteps
from whylake.transforms.explainers.counterfactuals.refine import Refinement
from whylake.transforms.explainers.counterfactuals.spheres import SphereSearch
from whylake.transforms.explainers.counterfactuals.state import query_generators


class Search(GradientSteps, SphereSearch, Refinement):
    """The search over one batch of queries; each path lives in its own module."""


__all__ = ["Search", "query_generators"]
