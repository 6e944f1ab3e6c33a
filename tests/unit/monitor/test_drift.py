"""Attribution drift: injected drift is found, sampling noise alone stays within the level."""

from __future__ import annotations

import numpy as np
import pytest

from tests.unit.monitor.conftest import FEATURES, population
from whylake.monitor.drift import DriftConfig, Explained, compare

# Fewer Monte Carlo draws than the default keeps the many-seed test quick; the smallest
# p-value (1/1001) is still far below the per-feature level (0.025 / 6).
CONFIG = DriftConfig(draws=1000)
SEEDS = 200
LEVEL = CONFIG.level


def _binomial_ceiling(rate: float, n: int) -> float:
    return rate + 3 * np.sqrt(rate * (1 - rate) / n)


def test_no_drift_days_raise_alerts_at_most_at_the_configured_level(ref: Explained) -> None:
    """Many seeds of days drawn like the reference, each a small priority sample (10 rows)."""
    aware = naive = census = 0
    for seed in range(SEEDS):
        rng = np.random.default_rng(1000 + seed)
        day = population(rng, 3000).sample(rng, 10)
        result = compare(day, ref, CONFIG, key=str(seed))
        aware += result.alert
        # The same point estimates judged against the thresholds alone ...
        naive += result.ndcg < CONFIG.ndcg_threshold or any(
            f.attribution_js > CONFIG.attribution_threshold for f in result.features
        )
        # ... and the test run as if the sample were a census (variance not used).
        as_census = Explained(day.features, day.attributions, day.inputs, np.ones(day.rows))
        as_census = as_census.with_population(day.rows)
        census += compare(as_census, ref, CONFIG, key=str(seed)).alert
    assert aware / SEEDS <= _binomial_ceiling(LEVEL, SEEDS), aware
    # Without the sampling-aware test the same days would page most of the time.
    assert naive / SEEDS > 0.5, naive
    assert census / SEEDS > 0.5, census


@pytest.mark.parametrize(("stuck", "k"), [(0, 30), (5, 100)])
def test_a_feature_stuck_at_its_mean_is_detected_and_named(
    ref: Explained, stuck: int, k: int
) -> None:
    """f0 carries the most weight (nDCG falls); f5 the least (only its distribution moves)."""
    found = 0
    for seed in range(40):
        rng = np.random.default_rng(5000 + seed)
        result = compare(population(rng, 3000, stuck=stuck).sample(rng, k), ref, CONFIG)
        found += result.alert and result.top_moved_features[:1] == (FEATURES[stuck],)
    assert found >= 38, found


def test_the_ranking_check_fires_when_the_top_feature_collapses(ref: Explained) -> None:
    rng = np.random.default_rng(7)
    result = compare(population(rng, 3000, stuck=0).sample(rng, 60), ref, CONFIG)
    assert result.ndcg < CONFIG.ndcg_threshold and result.ndcg_violation
    assert result.ndcg_p_value < LEVEL / 2
    assert result.example_request_ids and len(result.example_request_ids) <= 5
    moved = {f.feature: f for f in result.features}
    assert moved["f0"].moved and moved["f0"].importance < moved["f0"].reference_importance


def test_the_verdict_is_deterministic_and_needs_enough_rows(ref: Explained) -> None:
    rng = np.random.default_rng(8)
    day = population(rng, 3000).sample(rng, 40)
    first, again = compare(day, ref, CONFIG, key="k"), compare(day, ref, CONFIG, key="k")
    assert first == again
    few = compare(population(rng, 3000).sample(rng, 3), ref, CONFIG)
    assert few.verdict == "too_few_rows" and not few.alert


def test_other_features_are_refused(ref: Explained) -> None:
    other = Explained(("a",) * 6, ref.attributions, ref.inputs, ref.inclusion_probability)
    with pytest.raises(ValueError, match="compare the same model"):
        compare(other, ref, CONFIG)


def test_settings_check_themselves() -> None:
    with pytest.raises(ValueError, match="level"):
        DriftConfig(level=1.5)
    with pytest.raises(ValueError, match="ndcg_threshold"):
        DriftConfig(ndcg_threshold=0)
