"""What a counterfactual may change and how it is asked for: spec, config, results."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from whylake.transforms.explainers.model_calls import as_rows

DESIRED_OUTCOMES = ("flip", "above", "below")
METHODS = ("gradient", "search")
FOUND = "found"
NOT_FOUND = "not_found"
ALREADY_MET = "already_met"
STATUSES = (FOUND, NOT_FOUND, ALREADY_MET)


def _frozen(value: object, dtype: type, name: str, d: int) -> np.ndarray:
    arr: np.ndarray = np.array(value, dtype=dtype, copy=True)
    if arr.shape != (d,):
        raise ValueError(f"{name} must have shape ({d},), got {arr.shape}")
    arr.flags.writeable = False
    return arr


@dataclass(frozen=True, eq=False)
class CounterfactualSpec:
    """What a counterfactual may change, within which limits, and how its distance is measured.

    Arrays are per feature, in the model's column order. ``lower`` / ``upper`` may be infinite
    (unbounded); a query's own value is always allowed even when it lies outside them.
    ``scale`` divides each feature's change in the L1 distance (the median absolute deviation,
    Wachter et al. 2017). Columns in a ``categorical_groups`` entry are one one-hot feature: a
    counterfactual switches the hot column; a column whose ``upper`` is below 1 is never switched
    on. ``monotone`` +1 lets a feature only increase, -1 only decrease, 0 either way.
    """

    feature_names: tuple[str, ...]
    lower: np.ndarray
    upper: np.ndarray
    immutable: np.ndarray
    integer: np.ndarray
    scale: np.ndarray
    categorical_groups: tuple[tuple[int, ...], ...] = ()
    monotone: np.ndarray | None = None

    def __post_init__(self) -> None:
        names = tuple(self.feature_names)
        if not names or not all(isinstance(n, str) and n for n in names):
            raise ValueError("feature_names must be a non-empty tuple of non-empty strings")
        if len(set(names)) != len(names):
            dupes = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"feature_names has duplicates: {dupes}")
        d = len(names)
        lower = _frozen(self.lower, np.float64, "lower", d)
        upper = _frozen(self.upper, np.float64, "upper", d)
        if np.isnan(lower).any() or np.isnan(upper).any():
            raise ValueError("lower and upper must not be NaN (use -inf / inf for unbounded)")
        bad = np.flatnonzero(lower > upper)
        if bad.size:
            j = int(bad[0])
            raise ValueError(f"feature {names[j]!r}: lower {lower[j]} > upper {upper[j]}")
        immutable = _frozen(self.immutable, np.bool_, "immutable", d)
        integer = _frozen(self.integer, np.bool_, "integer", d)
        scale = _frozen(self.scale, np.float64, "scale", d)
        bad = np.flatnonzero(~np.isfinite(scale) | (scale <= 0))
        if bad.size:
            j = int(bad[0])
            raise ValueError(
                f"feature {names[j]!r}: scale must be finite and positive, got {scale[j]} "
                "(spec_from_training falls back to the std, then 1, where the MAD is 0)"
            )
        monotone = _frozen(
            np.zeros(d, np.int8) if self.monotone is None else self.monotone, np.int8, "monotone", d
        )
        if not np.isin(monotone, (-1, 0, 1)).all():
            raise ValueError(f"monotone values must be -1, 0 or 1, got {sorted(set(monotone))}")
        groups = tuple(tuple(int(j) for j in g) for g in self.categorical_groups)
        seen: set[int] = set()
        for g in groups:
            if len(g) < 2:
                raise ValueError(f"categorical group {g} needs at least two one-hot columns")
            if any(j < 0 or j >= d for j in g):
                raise ValueError(f"categorical group {g} has a column outside 0..{d - 1}")
            if seen.intersection(g) or len(set(g)) != len(g):
                raise ValueError(f"categorical group {g} shares a column with another group")
            seen.update(g)
            if len({bool(immutable[j]) for j in g}) > 1:
                raise ValueError(
                    f"categorical group {[names[j] for j in g]} is partly immutable: mark all of "
                    "its columns or none"
                )
            if monotone[list(g)].any():
                raise ValueError(f"categorical group {[names[j] for j in g]} cannot be monotone")
        for name, value in (
            ("feature_names", names),
            ("lower", lower),
            ("upper", upper),
            ("immutable", immutable),
            ("integer", integer),
            ("scale", scale),
            ("categorical_groups", groups),
            ("monotone", monotone),
        ):
            object.__setattr__(self, name, value)

    @property
    def n_features(self) -> int:
        """Number of model input columns."""
        return len(self.feature_names)


@dataclass(frozen=True)
class CounterfactualConfig:
    """How counterfactuals are searched for; every field goes into the explainer's config hash.

    ``desired``: "flip" crosses ``threshold`` from whichever side the query is on, "above" /
    "below" ask for a score strictly above / below it. ``margin`` (score units) is how far past
    the threshold a candidate must land while searching, so re-scoring it in another batch (other
    float rounding) cannot turn it invalid. ``max_steps`` bounds gradient steps or search rounds.
    ``oversample`` candidates are generated per requested counterfactual and the most proximal
    mutually distinct ones kept; two that change the same features must differ by at least
    ``diversity`` (MAD-scaled L1). ``method`` "gradient" needs a differentiable model; "search"
    only calls it. ``search_fallback`` hands queries the gradient path leaves without a valid
    counterfactual to the search. ``search_samples`` is per query per round of the search.
    """

    threshold: float = 0.5
    desired: str = "flip"
    n_counterfactuals: int = 3
    method: str = "gradient"
    max_steps: int = 100
    seed: int = 0
    margin: float = 1e-3
    oversample: int = 3
    search_samples: int = 64
    diversity: float = 0.1
    search_fallback: bool = True

    def __post_init__(self) -> None:
        if self.desired not in DESIRED_OUTCOMES:
            raise ValueError(f"desired {self.desired!r} is not one of {DESIRED_OUTCOMES}")
        if self.method not in METHODS:
            raise ValueError(f"method {self.method!r} is not one of {METHODS}")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must lie in (0, 1), got {self.threshold}")
        if not self.margin > 0.0:
            raise ValueError(f"margin must be positive, got {self.margin}")
        if not 0.0 < self.threshold - self.margin < self.threshold + self.margin < 1.0:
            raise ValueError(
                f"threshold {self.threshold} +/- margin {self.margin} must stay inside (0, 1)"
            )
        for name in ("n_counterfactuals", "max_steps", "oversample", "search_samples"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if not self.diversity >= 0.0:
            raise ValueError(f"diversity must be non-negative, got {self.diversity}")


@dataclass(frozen=True, eq=False)
class Counterfactual:
    """One counterfactual, re-scored by the model, with its quality measured.

    ``proximity`` is the MAD-scaled L1 distance to the query; ``sparsity`` counts changed features
    (a one-hot group counts once); ``plausibility`` is the MAD-scaled L1 distance to the nearest
    reference row of the target class (NaN when the reference has none); ``changes`` lists
    ``(feature, from, to)`` for every changed column, largest scaled change first.
    """

    values: np.ndarray
    score: float
    valid: bool
    proximity: float
    sparsity: int
    plausibility: float
    changes: tuple[tuple[str, float, float], ...]

    def __post_init__(self) -> None:
        values = np.array(self.values, dtype=np.float64, copy=True)
        if values.ndim != 1:
            raise ValueError(f"values must be one row (d,), got shape {values.shape}")
        values.flags.writeable = False
        object.__setattr__(self, "values", values)
        if not (math.isfinite(self.proximity) and self.proximity >= 0):
            raise ValueError(f"proximity must be finite and non-negative, got {self.proximity}")
        if self.sparsity < 0:
            raise ValueError(f"sparsity must be non-negative, got {self.sparsity}")


@dataclass(frozen=True)
class CounterfactualResult:
    """The counterfactuals found for one query, or why there are none.

    ``status``: "found" (at least one valid counterfactual), "not_found" (none within the budget
    and constraints; never an invalid one in its place) or "already_met" (the query's score
    already satisfies ``desired`` = "above" / "below").
    """

    status: str
    counterfactuals: tuple[Counterfactual, ...]
    query_score: float
    message: str

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status {self.status!r} is not one of {STATUSES}")
        if (self.status == FOUND) != bool(self.counterfactuals):
            raise ValueError(f"status {self.status!r} with {len(self.counterfactuals)} results")
        if not all(cf.valid for cf in self.counterfactuals):
            raise ValueError("an invalid counterfactual must never be reported")


def spec_from_training(
    feature_names: Sequence[str],
    training_rows: np.ndarray,
    *,
    immutable: Iterable[str] = (),
    integer: Iterable[str] = (),
    categorical_groups: Iterable[Iterable[str]] = (),
    monotone: Mapping[str, int] | None = None,
) -> CounterfactualSpec:
    """A spec whose bounds are the training range and whose scale is each feature's MAD.

    Where a feature's MAD is 0 (one-hot and other mostly-constant columns) its standard deviation
    is used instead, and 1 where that is 0 too. Tighter or wider bounds from a model card can be
    set afterwards with ``dataclasses.replace``.

    Raises:
        ValueError: an unknown feature name, or training rows of the wrong shape.
    """
    names = tuple(feature_names)
    rows = as_rows(training_rows, "training_rows", len(names))
    index = {n: j for j, n in enumerate(names)}

    def columns(selected: Iterable[str], what: str) -> list[int]:
        unknown = [n for n in selected if n not in index]
        if unknown:
            raise ValueError(f"{what} names unknown features {unknown}; known: {list(names)}")
        return [index[n] for n in selected]

    d = len(names)
    immutable_mask = np.zeros(d, np.bool_)
    immutable_mask[columns(list(immutable), "immutable")] = True
    integer_mask = np.zeros(d, np.bool_)
    integer_mask[columns(list(integer), "integer")] = True
    monotone_arr = np.zeros(d, np.int8)
    if monotone:
        monotone_arr[columns(list(monotone), "monotone")] = [monotone[n] for n in monotone]
    groups = tuple(tuple(columns(list(g), "categorical_groups")) for g in categorical_groups)
    median = np.median(rows, axis=0)
    scale = np.median(np.abs(rows - median), axis=0)
    std = rows.std(axis=0)
    scale = np.where(scale > 0, scale, np.where(std > 0, std, 1.0))
    return CounterfactualSpec(
        feature_names=names,
        lower=rows.min(axis=0),
        upper=rows.max(axis=0),
        immutable=immutable_mask,
        integer=integer_mask,
        scale=scale,
        categorical_groups=groups,
        monotone=monotone_arr,
    )
