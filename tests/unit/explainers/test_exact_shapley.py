"""Exact interventional Shapley values against answers known by hand."""

from __future__ import annotations

import numpy as np
import pytest

from whylake.transforms.explainers import exact_shapley


def test_linear_model_gives_w_times_x_minus_background_mean(rng: np.random.Generator) -> None:
    w = rng.normal(size=6)
    x = rng.normal(size=(4, 6))
    bg = rng.normal(size=(30, 6))
    phi = exact_shapley(lambda a: a @ w + 3.0, x, bg)
    np.testing.assert_allclose(phi, w * (x - bg.mean(axis=0)), rtol=1e-12, atol=1e-12)


def test_product_splits_the_interaction_evenly() -> None:
    # v({}) = 0, v({0}) = v({1}) = 0, v({0,1}) = x0*x1 against a zero baseline: half each.
    phi = exact_shapley(lambda a: a[:, 0] * a[:, 1], np.array([2.0, 3.0]), np.zeros((1, 2)))
    np.testing.assert_allclose(phi, [3.0, 3.0])


def test_efficiency_symmetry_and_dummy(rng: np.random.Generator) -> None:
    def f(a: np.ndarray) -> np.ndarray:
        # features 0 and 1 enter symmetrically, feature 3 not at all
        return np.tanh(a[:, 0] + a[:, 1]) * a[:, 2] + np.sin(a[:, 4])

    bg = rng.normal(size=(25, 5))
    bg[:, 1] = bg[:, 0]  # the interventional game is symmetric only if the background is too
    x = rng.normal(size=5)
    x[1] = x[0]
    phi = exact_shapley(f, x, bg)
    assert phi.shape == (5,)
    assert abs(phi.sum() - (f(x[None])[0] - f(bg).mean())) < 1e-12  # efficiency
    assert abs(phi[0] - phi[1]) < 1e-12  # symmetry (same value, same role)
    assert phi[3] == 0.0  # dummy: exactly, since every marginal contribution is 0


def test_single_baseline_row_is_accepted() -> None:
    phi = exact_shapley(lambda a: a.sum(axis=1), np.array([1.0, 2.0]), np.array([0.5, 0.5]))
    np.testing.assert_allclose(phi, [0.5, 1.5])


def test_more_than_twelve_features_is_refused() -> None:
    with pytest.raises(ValueError, match="13 exceeds 12"):
        exact_shapley(lambda a: a.sum(axis=1), np.zeros(13), np.zeros((1, 13)))


def test_shape_mismatch_is_refused() -> None:
    with pytest.raises(ValueError, match="must be"):
        exact_shapley(lambda a: a.sum(axis=1), np.zeros(3), np.zeros((2, 4)))
