"""Global importance from sampled explanations: Horvitz-Thompson weighted, with its variance.

Every explained row carries its inclusion probability p (the sampler's), w = 1 / p. When the
population size N is known (the slice's valid records, which the pipeline counts), the
population mean of |attribution| per feature is the Horvitz-Thompson estimate

    I_j = sum_i w_i |a_ij| / N,   Cov(I)_jk = sum_i (1 - p_i) / p_i^2 |a_ij| |a_ik| / N^2.

For priority sampling the per-row HT estimates are uncorrelated and (1 - p_i) / p_i^2 x_i^2 is
the unbiased variance estimator of Duffield, Lund & Thorup (2007) and Szegedy & Thorup (2007)
("tau * (tau - w)" for the weights themselves); for a uniform reservoir it is the usual
finite-population-corrected one; rows explained with p = 1 (always-explain rules, registered
reference rows) are a census of their stratum and add none. Both are unbiased: over 400
priority samples of 60 rows with weights spanning 1000x, the mean variance estimate was 0.83-0.99
of the estimates' actual variance (tests/unit/monitor/test_importance.py).

Where N is not known (a cohort of a slice, pooled baseline days) the ratio (Hajek) estimator
sum w |a| / sum w is used with its linearised variance, which is only approximate: on the same
samples it read 0.5-0.66 of the actual variance, so nothing alerts on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]


@dataclass(frozen=True, eq=False)
class Importance:
    """Mean |attribution| per feature, its covariance, and what it was estimated from."""

    features: tuple[str, ...]
    value: Array  # (d,)
    covariance: Array  # (d, d)
    rows: int
    weight_sum: float

    @property
    def std_error(self) -> Array:
        return np.sqrt(np.clip(np.diag(self.covariance), 0.0, None))

    def as_rows(self) -> list[dict[str, float | str]]:
        """The importance as the metrics table stores it, in feature order."""
        se = self.std_error
        return [
            {"feature": f, "value": float(v), "std_error": float(s)}
            for f, v, s in zip(self.features, self.value, se, strict=True)
        ]


def check_probabilities(p: Array) -> Array:
    """Inclusion probabilities as float64, refusing anything outside (0, 1]."""
    probabilities = np.asarray(p, dtype=np.float64)
    if probabilities.ndim != 1:
        raise ValueError(f"inclusion probabilities must be 1-d, got shape {probabilities.shape}")
    if probabilities.size and not np.all((probabilities > 0) & (probabilities <= 1)):
        bad = probabilities[~((probabilities > 0) & (probabilities <= 1))][:3]
        raise ValueError(f"inclusion probabilities must be in (0, 1], got {bad.tolist()}")
    return probabilities


def weighted_mean(values: Array, p: Array) -> tuple[Array, Array]:
    """Hajek mean of each column of `values` (n, d) and its linearised covariance (d, d)."""
    x = np.asarray(values, dtype=np.float64)
    probabilities = check_probabilities(p)
    if x.ndim != 2 or x.shape[0] != probabilities.shape[0]:
        raise ValueError(f"values {x.shape} and probabilities {probabilities.shape} disagree")
    d = x.shape[1]
    if x.shape[0] == 0:
        return np.full(d, np.nan), np.full((d, d), np.nan)
    w = 1.0 / probabilities
    total = float(w.sum())
    mean = (w @ x) / total
    residual = x - mean
    factor = (1.0 - probabilities) / probabilities**2
    covariance = (residual.T * factor) @ residual / total**2
    return mean, covariance


def ht_mean(values: Array, p: Array, population: float) -> tuple[Array, Array]:
    """Horvitz-Thompson mean of each column over a population of known size, and its covariance."""
    x = np.asarray(values, dtype=np.float64)
    probabilities = check_probabilities(p)
    if population <= 0:
        raise ValueError(f"population must be positive, got {population}")
    mean = ((1.0 / probabilities) @ x) / population
    factor = (1.0 - probabilities) / probabilities**2
    covariance = (x.T * factor) @ x / population**2
    return mean, covariance


def global_importance(
    features: Sequence[str],
    attributions: Array,
    inclusion_probability: Array,
    population: float | None = None,
) -> Importance:
    """Mean |attribution| per feature over the explained rows, HT-weighted, with its covariance.

    `population`: the number of records the sample was drawn from (Horvitz-Thompson); None
    for the ratio estimator (a domain of unknown size).
    """
    a = np.abs(np.asarray(attributions, dtype=np.float64))
    if a.ndim != 2 or a.shape[1] != len(features):
        raise ValueError(f"attributions {a.shape} do not have one column per feature {features}")
    p = check_probabilities(inclusion_probability)
    if population is not None and a.shape[0]:
        mean, covariance = ht_mean(a, p, population)
    else:
        mean, covariance = weighted_mean(a, p)
    return Importance(tuple(features), mean, covariance, int(a.shape[0]), float((1.0 / p).sum()))
