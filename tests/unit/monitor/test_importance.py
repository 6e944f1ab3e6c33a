"""HT global importance: exact on a census, unbiased under priority sampling, honest variance."""

from __future__ import annotations

import numpy as np
import pytest

from tests.unit.monitor.conftest import FEATURES, population
from whylake.monitor.importance import global_importance


def test_a_census_gives_the_exact_mean_and_no_variance() -> None:
    rng = np.random.default_rng(1)
    pop = population(rng, 300)
    imp = global_importance(FEATURES, pop.attributions, np.ones(300))
    np.testing.assert_allclose(imp.value, np.abs(pop.attributions).mean(axis=0))
    assert np.all(imp.std_error == 0)


def test_priority_samples_estimate_the_population_and_their_own_variance() -> None:
    rng = np.random.default_rng(2)
    pop = population(rng, 4000)
    truth = np.abs(pop.attributions).mean(axis=0)
    estimates, variances, naive = [], [], []
    for seed in range(300):
        sample = pop.sample(np.random.default_rng(100 + seed), 60)
        imp = sample.importance()
        estimates.append(imp.value)
        variances.append(imp.std_error**2)
        naive.append(np.abs(sample.attributions).mean(axis=0))
    estimates = np.array(estimates)
    # Unbiased (to within 4 standard errors of the mean of 300 estimates) ...
    spread = estimates.std(axis=0) / np.sqrt(len(estimates))
    assert np.all(np.abs(estimates.mean(axis=0) - truth) < 4 * spread)
    # ... where ignoring the inclusion probabilities is not: uncertain rows are over-sampled
    # and rely less on the strong features.
    naive_bias = np.abs(np.array(naive).mean(axis=0) - truth)
    assert naive_bias[0] > 4 * spread[0]
    # The variance estimate matches the estimates' actual spread (DLT 2007: unbiased).
    ratio = np.mean(variances, axis=0) / estimates.var(axis=0)
    assert np.all((ratio > 0.75) & (ratio < 1.33)), ratio


def test_bad_probabilities_are_refused() -> None:
    with pytest.raises(ValueError, match=r"in \(0, 1\]"):
        global_importance(("a",), np.ones((2, 1)), np.array([0.5, 0.0]))
    with pytest.raises(ValueError, match="one column per feature"):
        global_importance(("a", "b"), np.ones((2, 1)), np.ones(2))
