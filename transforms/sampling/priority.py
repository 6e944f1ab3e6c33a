"""Priority sampling with a mergeable top-(k+1) accumulator (Duffield, Lund & Thorup 2007).

Each record of a stratum has a weight w > 0 and a hash-uniform u in (0, 1]; its priority is
q = w / u. The sample is the k records of highest priority, ties broken by the smaller request
id, so the order is total and the sample a pure function of the stratum's records. With tau
the (k+1)-th highest priority, a kept record's inclusion probability is min(1, w / tau) and
1 / that is its Horvitz-Thompson weight: sum(f * ht_weight) over the sample is an unbiased
estimate of sum(f) over the stratum for any f. The uniform reservoir is the case w = 1 (the k
smallest u); its inclusion probability is the exact k / N of a simple random sample.

Mergeability: the top-(k+1) of a union is inside the union of the parts' top-(k+1), so
partial accumulators can be built per batch, combined in any grouping and order, and give
the same result as one pass over the whole stratum. Records travel column-wise in a `Rows`
container (Arrow in the Beam job) that this module only takes from and concatenates.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, Self

import numpy as np
import numpy.typing as npt

Row = dict[str, Any]
ObjectArray = npt.NDArray[np.object_]
FloatArray = npt.NDArray[np.float64]
IndexArray = npt.NDArray[np.intp]


class Rows(Protocol):
    """Records carried column-wise; the sampler takes from them but never looks inside."""

    def __len__(self) -> int: ...

    def take(self, indices: IndexArray) -> Self: ...

    def concat(self, others: Sequence[Self]) -> Self: ...

    def to_pylist(self) -> list[Row]: ...


@dataclass(frozen=True)
class ListRows:
    """`Rows` as a tuple of dicts: the reference container, for tests and small callers."""

    rows: tuple[Row, ...] = ()

    def __len__(self) -> int:
        return len(self.rows)

    def take(self, indices: IndexArray) -> ListRows:
        return ListRows(tuple(self.rows[i] for i in indices.tolist()))

    def concat(self, others: Sequence[ListRows]) -> ListRows:
        return ListRows(self.rows + tuple(r for o in others for r in o.rows))

    def to_pylist(self) -> list[Row]:
        return list(self.rows)


def _objects(values: Sequence[Any] | ObjectArray) -> ObjectArray:
    out = np.empty(len(values), dtype=object)
    out[:] = list(values)
    return out


@dataclass(frozen=True, eq=False)
class Candidates:
    """Records competing for the priority sample, column-wise."""

    request_ids: ObjectArray
    priorities: FloatArray
    weights: FloatArray
    rows: Rows

    def __post_init__(self) -> None:
        sizes = {len(self.request_ids), len(self.priorities), len(self.weights), len(self.rows)}
        if len(sizes) != 1:
            raise ValueError(f"Candidates columns differ in length: {sorted(sizes)}")

    def __len__(self) -> int:
        return len(self.request_ids)

    def take(self, indices: IndexArray) -> Candidates:
        """The candidates at `indices`, in that order."""
        return Candidates(
            self.request_ids[indices],
            self.priorities[indices],
            self.weights[indices],
            self.rows.take(indices),
        )

    @staticmethod
    def concat(parts: Sequence[Candidates]) -> Candidates:
        """All parts, one after the other."""
        return Candidates(
            _objects(np.concatenate([p.request_ids for p in parts])),
            np.concatenate([p.priorities for p in parts]),
            np.concatenate([p.weights for p in parts]),
            parts[0].rows.concat([p.rows for p in parts[1:]]),
        )


@dataclass(frozen=True, eq=False)
class AlwaysExplained:
    """Records an always-explain rule selected, with the rule's reason; sampled with p = 1."""

    request_ids: ObjectArray
    reasons: ObjectArray
    rows: Rows

    def __post_init__(self) -> None:
        sizes = {len(self.request_ids), len(self.reasons), len(self.rows)}
        if len(sizes) != 1:
            raise ValueError(f"AlwaysExplained columns differ in length: {sorted(sizes)}")

    def __len__(self) -> int:
        return len(self.request_ids)

    def take(self, indices: IndexArray) -> AlwaysExplained:
        """The records at `indices`, in that order."""
        return AlwaysExplained(
            self.request_ids[indices], self.reasons[indices], self.rows.take(indices)
        )

    @staticmethod
    def concat(parts: Sequence[AlwaysExplained]) -> AlwaysExplained:
        """All parts, one after the other."""
        return AlwaysExplained(
            _objects(np.concatenate([p.request_ids for p in parts])),
            _objects(np.concatenate([p.reasons for p in parts])),
            parts[0].rows.concat([p.rows for p in parts[1:]]),
        )


class SampledRow(NamedTuple):
    """A sampled record with what an estimator needs to weight it."""

    row: Row
    reason: str
    inclusion_probability: float
    ht_weight: float
    stratum_size: int


def sampling_weights(
    kind: str,
    confidence: FloatArray,
    risk: FloatArray,
    floor: float,
) -> FloatArray:
    """Per-record weights w for priority sampling: "uniform", "uncertainty" or "risk".

    A missing (NaN) or non-finite value gets w = 1, the largest a [0, 1] score gives, so the
    records we know least about are not starved; every weight is at least `floor` > 0 because
    a zero weight would have zero inclusion probability and break unbiasedness.
    """
    if kind == "uniform":
        return np.ones(len(confidence), dtype=np.float64)
    if kind == "uncertainty":
        raw = 1.0 - np.asarray(confidence, dtype=np.float64)
    elif kind == "risk":
        raw = np.array(risk, dtype=np.float64)
    else:
        raise ValueError(f"weight must be 'uniform', 'uncertainty' or 'risk', got {kind!r}")
    raw = np.where(np.isfinite(raw), raw, 1.0)
    return np.maximum(raw, floor)


def candidate_indices(priorities: FloatArray, request_ids: ObjectArray, m: int) -> IndexArray:
    """Indices of a subset that holds the top-m distinct request ids by priority.

    Cheap (one partition) and safe: it keeps every row whose priority is >= the m-th largest,
    widened while replayed request ids (producer retries) crowd the distinct count below m.
    `new_accumulator` then orders, deduplicates and trims these few rows.
    """
    n = len(priorities)
    want = m
    while want < n:
        threshold = np.partition(priorities, n - want)[n - want]
        chosen = np.flatnonzero(priorities >= threshold)
        if len(set(request_ids[chosen].tolist())) >= m:
            return chosen
        want += m
    return np.arange(n)


def _fingerprint(row: Row) -> str:
    """A canonical text of a row, to choose among replays whose sort keys tie exactly."""
    return repr(sorted(row.items()))


def _first_per_id(
    order: IndexArray, keys: tuple[npt.NDArray[Any], ...], ids: ObjectArray, rows: Rows
) -> IndexArray:
    """From `order` (sorted by `keys`), the first index of each request id.

    Entries whose keys all tie (the same request logged twice) are ordered by their rows'
    fingerprints first, so which copy survives never depends on arrival order.
    """
    if len(order) > 1:
        tied = np.ones(len(order) - 1, dtype=bool)
        for key in keys:
            tied &= key[order[1:]] == key[order[:-1]]
        if tied.any():
            order = order.copy()
            starts = np.flatnonzero(tied & ~np.concatenate([[False], tied[:-1]]))
            for start in starts.tolist():
                end = start + 1
                while end - 1 < len(tied) and tied[end - 1]:
                    end += 1
                run = order[start:end]
                prints = [_fingerprint(r) for r in rows.take(run).to_pylist()]
                order[start:end] = run[np.argsort(np.array(prints, dtype=object), kind="stable")]
    seen: set[str] = set()
    first = []
    for position, request_id in enumerate(ids[order].tolist()):
        if request_id not in seen:
            seen.add(request_id)
            first.append(position)
    return order[np.array(first, dtype=np.intp)]


def _top_distinct(candidates: Candidates, limit: int) -> Candidates:
    """The `limit` highest-priority distinct request ids, in sample order."""
    ids, priorities = candidates.request_ids, candidates.priorities
    # The total order of the sample: higher priority first, then the smaller request id.
    order = np.lexsort((ids, -priorities)).astype(np.intp)
    keep = _first_per_id(order, (priorities, ids), ids, candidates.rows)
    return candidates.take(keep[:limit])


def _distinct_always(chunks: Sequence[AlwaysExplained]) -> AlwaysExplained | None:
    """Every always-explain record once, ordered by request id."""
    if not chunks:
        return None
    always = AlwaysExplained.concat(chunks) if len(chunks) > 1 else chunks[0]
    ids, reasons = always.request_ids, always.reasons
    order = np.lexsort((reasons, ids)).astype(np.intp)
    return always.take(_first_per_id(order, (ids, reasons), ids, always.rows))


@dataclass(frozen=True, eq=False)
class StratumAccumulator:
    """The mergeable state of one stratum: its size, its top-(k+1) and its always-explain rows.

    Build it with `new_accumulator`. The default instance (`budget=None`) is the identity of
    `merge_accumulators`: a Beam combiner creates it before it knows the key, hence the budget.
    Always-explain chunks are only concatenated when merged (cheap) and deduplicated when
    the sample is drawn.
    """

    budget: int | None = None
    population: int = 0
    candidates: Candidates | None = None
    always: tuple[AlwaysExplained, ...] = ()

    def __post_init__(self) -> None:
        budget, held = self.budget, len(self.candidates or ())
        if budget is not None and held > budget + 1:
            raise ValueError(
                f"an accumulator with budget {budget} holds at most {budget + 1} candidates, "
                f"got {held}: build it with new_accumulator()"
            )

    def canonical(self) -> tuple[Any, ...]:
        """A comparable summary (budget, N, candidates, distinct always rows), for tests."""
        cands: tuple[Any, ...] = ()
        if self.candidates is not None:
            c = self.candidates
            cands = tuple(
                zip(
                    c.request_ids.tolist(),
                    c.priorities.tolist(),
                    c.weights.tolist(),
                    map(_fingerprint, c.rows.to_pylist()),
                    strict=True,
                )
            )
        always: tuple[Any, ...] = ()
        distinct = _distinct_always(self.always)
        if distinct is not None:
            always = tuple(
                zip(
                    distinct.request_ids.tolist(),
                    distinct.reasons.tolist(),
                    map(_fingerprint, distinct.rows.to_pylist()),
                    strict=True,
                )
            )
        return (self.budget, self.population, cands, always)


def new_accumulator(
    budget: int,
    population: int,
    candidates: Candidates | None = None,
    always: AlwaysExplained | None = None,
) -> StratumAccumulator:
    """An accumulator of one batch's stratum: candidates ordered, deduplicated, cut to k + 1."""
    if budget < 1:
        raise ValueError(f"budget must be a positive integer, got {budget!r}")
    if population < 0:
        raise ValueError(f"population must be >= 0, got {population!r}")
    return StratumAccumulator(
        budget=budget,
        population=population,
        # k + 1 entries, not k: the (k+1)-th priority is the threshold tau of the estimator.
        candidates=_top_distinct(candidates, budget + 1) if candidates else None,
        always=(always,) if always else (),
    )


def merge_accumulators(accumulators: Iterable[StratumAccumulator]) -> StratumAccumulator:
    """Combine accumulators of one stratum; associative, commutative, with the identity.

    Raises:
        ValueError: the accumulators were built with different budgets.
    """
    parts = [a for a in accumulators if a.budget is not None]
    budgets = sorted({a.budget for a in parts if a.budget is not None})
    if not budgets:
        return StratumAccumulator()
    if len(budgets) > 1:
        raise ValueError(
            f"cannot merge accumulators with different budgets {budgets}: "
            "was the policy changed during the run?"
        )
    if len(parts) == 1:
        return parts[0]
    budget = budgets[0]
    candidates = [a.candidates for a in parts if a.candidates]
    return StratumAccumulator(
        budget=budget,
        population=sum(a.population for a in parts),
        candidates=_top_distinct(Candidates.concat(candidates), budget + 1) if candidates else None,
        always=tuple(chunk for a in parts for chunk in a.always),
    )


@dataclass(frozen=True, eq=False)
class Sample:
    """A stratum's sample, column-wise: rows with reason, probability, HT weight, size."""

    rows: Rows | None
    reasons: ObjectArray
    inclusion_probabilities: FloatArray
    ht_weights: FloatArray
    stratum_sizes: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.reasons)

    def records(self) -> list[SampledRow]:
        """The sample as Python rows (one conversion of the rows, at the end)."""
        if self.rows is None:
            return []
        return [
            SampledRow(row, reason, p, ht, size)
            for row, reason, p, ht, size in zip(
                self.rows.to_pylist(),
                self.reasons.tolist(),
                self.inclusion_probabilities.tolist(),
                self.ht_weights.tolist(),
                self.stratum_sizes.tolist(),
                strict=True,
            )
        ]


def draw_sample(accumulator: StratumAccumulator, sampler: str) -> Sample:
    """The sample of a finished stratum with inclusion probabilities and HT weights.

    Always-explain rows form their own stratum, taken whole (p = 1). The rest: if it has at
    most k distinct records all are kept (p = 1); otherwise the top k by priority, with
    p = min(1, w / tau) ("priority") or p = k / N ("reservoir", whose weights are all 1).
    """
    if sampler not in ("priority", "reservoir"):
        raise ValueError(f"sampler must be 'priority' or 'reservoir', got {sampler!r}")
    rows: list[Rows] = []
    reasons: list[ObjectArray] = []
    probabilities: list[FloatArray] = []
    sizes: list[npt.NDArray[np.int64]] = []
    always = _distinct_always(accumulator.always)
    if always is not None:
        rows.append(always.rows)
        reasons.append(always.reasons)
        probabilities.append(np.ones(len(always)))
        sizes.append(np.full(len(always), len(always), dtype=np.int64))
    k, candidates = accumulator.budget, accumulator.candidates
    if k is not None and candidates:
        size = accumulator.population
        if len(candidates) <= k:
            kept, p = candidates, np.ones(len(candidates))
        else:
            kept = candidates.take(np.arange(k))
            if sampler == "priority":
                tau = candidates.priorities[k]
                p = np.minimum(1.0, kept.weights / tau)
            else:
                p = np.full(k, k / size)
        rows.append(kept.rows)
        reasons.append(_objects([sampler] * len(kept)))
        probabilities.append(p)
        sizes.append(np.full(len(kept), size, dtype=np.int64))
    if not rows:
        return Sample(None, _objects([]), np.ones(0), np.ones(0), np.zeros(0, dtype=np.int64))
    probability = np.concatenate(probabilities)
    return Sample(
        rows[0].concat(rows[1:]),
        _objects(np.concatenate(reasons)),
        probability,
        1.0 / probability,
        np.concatenate(sizes),
    )
