"""Attribution drift against a reference, tested so that sampling noise alone does not alert.

Two checks, as the incumbents define them:
- the ranking of global importances (SageMaker Clarify: nDCG against the baseline's, violation
  below a threshold, 0.9 by default);
- each feature's attribution distribution (Vertex AI: a per-feature distance against a
  threshold; Jensen-Shannon divergence over histograms binned at the reference's deciles).

A point estimate below a threshold is not enough here: explanations are a sample, and a small
one (a day's budget, a five-second window) moves by chance. Each check is therefore also a test
of "no drift" (the current population's attributions are distributed as the reference's): the
statistic's distribution under that hypothesis is simulated with the estimate's own sampling
variance (monitor/importance.py), and a check fires only when its statistic is past the
threshold AND its p-value is below its share of the configured level. nDCG gets half the level,
the features the other half split Bonferroni-wise, so the chance of a drift alert on a slice
without drift is at most `level` (tests/unit/monitor/test_drift.py measures it over many seeds).
The input-value distributions are compared the same way and reported, without alerting.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

from whylake.monitor.distances import histogram, js_divergence, ndcg, weighted_quantile_edges
from whylake.monitor.importance import Importance, check_probabilities, global_importance

Array = npt.NDArray[np.float64]


@dataclass(frozen=True)
class DriftConfig:
    """Thresholds and the false-alarm level of the drift checks."""

    ndcg_threshold: float = 0.9  # Clarify's default
    attribution_threshold: float = 0.3  # JS divergence of a feature's attribution distribution
    input_threshold: float = 0.3  # ... of its input values (reported, not alerting)
    level: float = 0.05  # chance of a drift alert on a slice without drift, at most
    bins: int = 10
    draws: int = 2000
    min_rows: int = 5  # fewer explained rows than this: no verdict at all
    seed: int = 20261201

    def __post_init__(self) -> None:
        if not 0 < self.ndcg_threshold <= 1:
            raise ValueError(f"ndcg_threshold must be in (0, 1], got {self.ndcg_threshold}")
        for name in ("attribution_threshold", "input_threshold"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)}")
        if not 0 < self.level < 1:
            raise ValueError(f"level must be in (0, 1), got {self.level}")
        if self.bins < 2 or self.draws < 100 or self.min_rows < 1:
            raise ValueError("need bins >= 2, draws >= 100 and min_rows >= 1")


@dataclass(frozen=True, eq=False)
class Explained:
    """The explained rows of one slice (or a reference): attributions, inputs, probabilities."""

    features: tuple[str, ...]
    attributions: Array  # (n, d), signed, in output units
    inputs: Array  # (n, d), the recorded input values
    inclusion_probability: Array  # (n,)
    request_ids: tuple[str, ...] = ()
    flags: tuple[tuple[str, ...], ...] = ()  # each row's record flags, for flag cohorts
    trust_tiers: tuple[str | None, ...] = ()  # each row's producer trust tier, for tier cohorts
    population: float | None = None  # records the rows were sampled from, when known

    def __post_init__(self) -> None:
        n, d = np.shape(self.attributions)[0], len(self.features)
        if np.shape(self.attributions) != (n, d) or np.shape(self.inputs) != (n, d):
            raise ValueError(
                f"attributions {np.shape(self.attributions)} and inputs {np.shape(self.inputs)} "
                f"must both be (rows, {d} features)"
            )
        check_probabilities(self.inclusion_probability)
        if np.shape(self.inclusion_probability) != (n,):
            raise ValueError("one inclusion probability per row")

    @property
    def rows(self) -> int:
        return int(np.shape(self.attributions)[0])

    @property
    def weights(self) -> Array:
        return 1.0 / np.asarray(self.inclusion_probability, dtype=np.float64)

    def importance(self) -> Importance:
        return global_importance(
            self.features, self.attributions, self.inclusion_probability, self.population
        )

    def with_population(self, population: float | None) -> Explained:
        """The same rows, known to be a sample of `population` records."""
        return replace(self, population=population)

    def select(self, mask: npt.NDArray[np.bool_]) -> Explained:
        """The rows where `mask` holds (a cohort)."""
        keep = np.flatnonzero(mask)
        return Explained(
            self.features,
            np.asarray(self.attributions)[keep],
            np.asarray(self.inputs)[keep],
            np.asarray(self.inclusion_probability)[keep],
            tuple(self.request_ids[i] for i in keep) if self.request_ids else (),
            tuple(self.flags[i] for i in keep) if self.flags else (),
            tuple(self.trust_tiers[i] for i in keep) if self.trust_tiers else (),
        )  # a cohort is a domain of unknown size: the ratio estimator


@dataclass(frozen=True)
class FeatureDrift:
    """How one feature's attributions (and inputs) moved against the reference."""

    feature: str
    importance: float
    reference_importance: float
    importance_z: float  # change over its combined standard error
    attribution_js: float
    attribution_p_value: float
    input_js: float
    input_p_value: float
    moved: bool  # attribution distribution past its threshold, and significant


@dataclass(frozen=True)
class DriftResult:
    """The verdict for one slice, with everything an alert's evidence needs."""

    rows: int
    reference_rows: int
    ndcg: float
    ndcg_p_value: float
    ndcg_threshold: float
    ndcg_violation: bool
    features: tuple[FeatureDrift, ...]
    alert: bool
    top_moved_features: tuple[str, ...]
    example_request_ids: tuple[str, ...] = field(default=())
    verdict: str = "tested"  # or "too_few_rows"


def _null_covariance_draws(rng: np.random.Generator, covariance: Array, m: int) -> Array:
    """m draws of N(0, covariance); covariance may be singular (eigen square root)."""
    d = covariance.shape[0]
    values, vectors = np.linalg.eigh(0.5 * (covariance + covariance.T))
    root = vectors * np.sqrt(np.clip(values, 0.0, None))
    return np.asarray(rng.standard_normal((m, d)) @ root.T, dtype=np.float64)


def effective_size(p: Array) -> float:
    """The effective sample size of a weighted histogram under the sampling design.

    Under "no change" a row falls in bin b with probability q_b, so the linearised design
    variance of bin b's share is q_b (1 - q_b) * sum_i (1 - p_i) / p_i^2 / W^2, W = sum_i 1/p_i:
    that of a multinomial of n = W^2 / sum_i (1 - p_i) / p_i^2 rows. It is Kish's
    (sum w)^2 / sum w^2 when every p is small, the finite-population-corrected n / (1 - p) of a
    uniform sample, and infinite for a census (every p = 1).
    """
    w = 1.0 / p
    spread = float(((1.0 - p) / p**2).sum())
    if spread <= 0:
        return float("inf")
    return max(1.0, float(w.sum()) ** 2 / spread)


def _histogram_draws(rng: np.random.Generator, q: Array, n: float, m: int) -> Array:
    if not np.isfinite(n):
        return np.broadcast_to(q, (m, q.size))
    size = int(round(min(n, 1e7)))
    return np.asarray(rng.multinomial(size, q / q.sum(), size=m) / size, dtype=np.float64)


def _distribution_test(
    rng: np.random.Generator,
    current: Array,
    current_p: Array,
    reference: Array,
    reference_p: Array,
    bins: int,
    draws: int,
) -> tuple[float, float]:
    """(JS divergence, p-value of no change) of one feature's values against the reference's."""
    edges = weighted_quantile_edges(reference, 1.0 / reference_p, bins)
    q = histogram(reference, 1.0 / reference_p, edges)
    observed = float(js_divergence(histogram(current, 1.0 / current_p, edges), q))
    if edges.size == 0 or q.max() >= 1.0:
        return observed, 1.0 if observed == 0 else 0.0
    n_current, n_reference = effective_size(current_p), effective_size(reference_p)
    null = js_divergence(
        _histogram_draws(rng, q, n_current, draws), _histogram_draws(rng, q, n_reference, draws)
    )
    return observed, float((1 + np.count_nonzero(null >= observed)) / (1 + draws))


def _seed(config: DriftConfig, key: str) -> np.random.Generator:
    """A generator seeded by the config and the slice: the same slice gets the same verdict."""
    digest = hashlib.sha256(f"{config.seed}\x1f{key}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def compare(
    current: Explained, reference: Explained, config: DriftConfig, *, key: str = ""
) -> DriftResult:
    """Test the slice `current` against `reference` (same features, same order)."""
    if current.features != reference.features:
        raise ValueError(
            f"the slice's features {current.features} differ from the reference's "
            f"{reference.features}: compare the same model's explanations"
        )
    d = len(current.features)
    if current.rows < config.min_rows or reference.rows < config.min_rows:
        return DriftResult(
            current.rows, reference.rows, float("nan"), float("nan"), config.ndcg_threshold,
            False, (), False, (), verdict="too_few_rows",
        )  # fmt: skip
    rng = _seed(config, key)
    now, ref = current.importance(), reference.importance()
    observed = float(ndcg(ref.value, now.value)[0])
    # Under "no drift" both estimates scatter around one population importance (the
    # reference's estimate stands in for it), each with its own sampling covariance.
    null_now = ref.value + _null_covariance_draws(rng, now.covariance, config.draws)
    null_ref = ref.value + _null_covariance_draws(rng, ref.covariance, config.draws)
    null = ndcg(null_ref, null_now)
    p_ndcg = float((1 + np.count_nonzero(null <= observed)) / (1 + config.draws))
    ndcg_violation = observed < config.ndcg_threshold and p_ndcg < config.level / 2
    feature_level = config.level / 2 / d
    se = np.sqrt(np.clip(np.diag(now.covariance) + np.diag(ref.covariance), 1e-300, None))
    z = (now.value - ref.value) / se
    features = []
    for j, name in enumerate(current.features):
        a_js, a_p = _distribution_test(
            rng,
            np.asarray(current.attributions)[:, j],
            np.asarray(current.inclusion_probability),
            np.asarray(reference.attributions)[:, j],
            np.asarray(reference.inclusion_probability),
            config.bins,
            config.draws,
        )
        i_js, i_p = _distribution_test(
            rng,
            np.asarray(current.inputs)[:, j],
            np.asarray(current.inclusion_probability),
            np.asarray(reference.inputs)[:, j],
            np.asarray(reference.inclusion_probability),
            config.bins,
            config.draws,
        )
        moved = a_js > config.attribution_threshold and a_p < feature_level
        features.append(
            FeatureDrift(
                name,
                float(now.value[j]),
                float(ref.value[j]),
                float(z[j]),
                a_js,
                a_p,
                i_js,
                i_p,
                moved,
            )  # fmt: skip
        )
    moved_features = sorted((f for f in features if f.moved), key=lambda f: -f.attribution_js)
    top = tuple(f.feature for f in moved_features)
    if not top and ndcg_violation:
        # The ranking broke without one distribution passing its threshold: name the features
        # whose importance changed beyond sampling noise, largest change first.
        critical = NormalDist().inv_cdf(1 - feature_level)
        changed = sorted((f for f in features if abs(f.importance_z) > critical),
                         key=lambda f: -abs(f.importance - f.reference_importance))  # fmt: skip
        top = tuple(f.feature for f in changed)
    alert = ndcg_violation or bool(moved_features)
    return DriftResult(
        rows=current.rows,
        reference_rows=reference.rows,
        ndcg=observed,
        ndcg_p_value=p_ndcg,
        ndcg_threshold=config.ndcg_threshold,
        ndcg_violation=ndcg_violation,
        features=tuple(features),
        alert=alert,
        top_moved_features=top[:5],
        example_request_ids=_examples(current, top[:1]),
    )


def _examples(current: Explained, features: Sequence[str], k: int = 5) -> tuple[str, ...]:
    """The rows that rely most on the feature that moved most: where an auditor looks first."""
    if not features or not current.request_ids:
        return ()
    j = current.features.index(features[0])
    order = np.argsort(-np.abs(np.asarray(current.attributions)[:, j]), kind="stable")[:k]
    return tuple(str(current.request_ids[i]) for i in order)
