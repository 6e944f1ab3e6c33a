"""Stability of the top-k IG ranking across baselines."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.unit.explainers.conftest import Product, make_relu_mlp
from whylake.transforms.explainers import attribution_stability


def test_identical_baselines_are_perfectly_stable(rng: np.random.Generator) -> None:
    model = torch.jit.script(make_relu_mlp())
    x = rng.normal(size=(5, 6))
    base = rng.normal(size=6)
    score = attribution_stability(model, x, np.stack([base, base, base]), top_k=3)
    np.testing.assert_array_equal(score, np.ones(5))


def test_a_ranking_that_flips_with_the_baseline_scores_below_one() -> None:
    # f = x0 * x1 at x = (1, 1). From b = (0, 0.9) IG gives x0 0.95 and x1 0.05; from
    # b = (0.9, 0) the reverse. The top-1 feature flips, the top-2 set is the same, so the
    # average overlap is (0/1 + 2/2) / 2 = 0.5 by hand, and top-1 alone scores 0.
    model = torch.jit.script(Product())
    x = np.array([[1.0, 1.0]])
    bases = np.array([[0.0, 0.9], [0.9, 0.0]])
    np.testing.assert_allclose(attribution_stability(model, x, bases, top_k=2), [0.5])
    np.testing.assert_allclose(attribution_stability(model, x, bases, top_k=1), [0.0])
    same = np.array([[0.0, 0.9], [0.0, 0.8]])  # x0 leads from both
    np.testing.assert_allclose(attribution_stability(model, x, same, top_k=2), [1.0])


def test_scores_are_in_unit_interval_and_deterministic(rng: np.random.Generator) -> None:
    model = torch.jit.script(make_relu_mlp())
    x = rng.normal(size=(8, 6)) * 2
    bases = rng.normal(size=(4, 6)) * 2
    a = attribution_stability(model, x, bases, steps=16)
    b = attribution_stability(model, x, bases, steps=16)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (8,) and np.all((a >= 0) & (a <= 1))
    assert a.min() < 1.0  # far-apart baselines on a ReLU net move some ranking


def test_needs_two_baselines_and_positive_k(rng: np.random.Generator) -> None:
    model = torch.jit.script(make_relu_mlp())
    x = rng.normal(size=(2, 6))
    with pytest.raises(ValueError, match="at least 2"):
        attribution_stability(model, x, np.zeros((1, 6)))
    with pytest.raises(ValueError, match="top_k"):
        attribution_stability(model, x, np.zeros((2, 6)), top_k=0)
