"""nDCG and JS divergence agree with scikit-learn's and SciPy's on the cases they share."""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import jensenshannon
from sklearn.metrics import ndcg_score

from whylake.monitor.distances import histogram, js_divergence, ndcg, weighted_quantile_edges


def test_ndcg_is_sklearns_for_untied_scores() -> None:
    rng = np.random.default_rng(3)
    for _ in range(50):
        reference, current = rng.gamma(1.0, size=12), rng.gamma(1.0, size=12)
        ours = ndcg(reference, current)[0]
        assert abs(ours - ndcg_score([reference], [current])) < 1e-12
    # Vectorised over draws: each row on its own.
    many = rng.gamma(1.0, size=(20, 12))
    out = ndcg(reference, many)
    assert out.shape == (20,)
    assert abs(out[7] - ndcg_score([reference], [many[7]])) < 1e-12
    # The reference's own ranking is perfect.
    assert ndcg(reference, reference)[0] == 1.0


def test_js_divergence_is_scipys_squared_distance() -> None:
    rng = np.random.default_rng(4)
    for _ in range(50):
        p, q = rng.dirichlet(np.ones(10)), rng.dirichlet(np.ones(10))
        assert abs(js_divergence(p, q) - jensenshannon(p, q, base=2) ** 2) < 1e-12
    p = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    assert js_divergence(*p) == 1.0 and js_divergence(p[0], p[0]) == 0.0


def test_weighted_quantile_bins_hold_equal_weight() -> None:
    rng = np.random.default_rng(5)
    values, weights = rng.normal(size=5000), rng.uniform(0.1, 2.0, 5000)
    edges = weighted_quantile_edges(values, weights, 10)
    shares = histogram(values, weights, edges)
    assert len(shares) == 10 and abs(shares.sum() - 1) < 1e-12
    assert np.all(np.abs(shares - 0.1) < 0.01)
