"""Agreement between two attribution methods: Spearman's rho over their top features."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from whylake.transforms.explainers.agreement import rank_agreement


def test_the_same_ranking_agrees_and_a_reversed_one_disagrees() -> None:
    a = np.array([[3.0, -2.0, 1.0, 0.5, 0.1]])
    assert rank_agreement(a, a * 10, top_k=5)[0] == pytest.approx(1.0)
    assert rank_agreement(a, -a, top_k=5)[0] == pytest.approx(-1.0)


def test_it_is_spearman_over_the_union_of_both_top_k() -> None:
    rng = np.random.default_rng(7)
    a, b = rng.normal(size=(20, 8)), rng.normal(size=(20, 8))
    got = rank_agreement(a, b, top_k=3)
    for i in range(20):
        cols = np.union1d(np.argsort(-np.abs(a[i]))[:3], np.argsort(-np.abs(b[i]))[:3])
        expected = spearmanr(a[i, cols], b[i, cols]).statistic
        assert got[i] == pytest.approx(expected)


def test_a_feature_whose_direction_flips_lowers_agreement() -> None:
    a = np.array([[4.0, 3.0, 2.0, 1.0]])
    flipped = np.array([[-4.0, 3.0, 2.0, 1.0]])
    assert rank_agreement(a, flipped, top_k=4)[0] < 0.5 < rank_agreement(a, a, top_k=4)[0]


def test_constant_rows_are_defined() -> None:
    zeros = np.zeros((1, 4))
    assert rank_agreement(zeros, zeros)[0] == 1.0
    assert rank_agreement(zeros, np.array([[1.0, 2.0, 3.0, 4.0]]))[0] == 0.0


def test_shapes_are_checked() -> None:
    with pytest.raises(ValueError, match="one shape"):
        rank_agreement(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="at least 2"):
        rank_agreement(np.zeros((2, 3)), np.zeros((2, 3)), top_k=1)
