"""Priority sampling: mergeable accumulators, exact selection, and unbiased HT estimates."""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pytest

from whylake.transforms.sample import ArrowRows
from whylake.transforms.sampling import (
    AlwaysExplained,
    Candidates,
    ListRows,
    Rows,
    StratumAccumulator,
    candidate_indices,
    draw_sample,
    merge_accumulators,
    new_accumulator,
    sampling_weights,
    uniforms_from_hash,
)

Row = dict[str, Any]


def _list_rows(rows: Sequence[Row]) -> Rows:
    return ListRows(tuple(rows))


def _arrow_rows(rows: Sequence[Row]) -> Rows:
    return ArrowRows(pa.Table.from_pylist(list(rows)))


# One behaviour suite for both containers: the reference (dicts) and the one Beam uses (Arrow).
ROW_STORES = pytest.mark.parametrize("make_rows", [_list_rows, _arrow_rows], ids=["list", "arrow"])
MakeRows = Callable[[Sequence[Row]], Rows]


def _ids(values: Sequence[str]) -> npt.NDArray[np.object_]:
    out = np.empty(len(values), dtype=object)
    out[:] = list(values)
    return out


def _candidates(entries: Sequence[tuple[float, str, float]], make_rows: MakeRows) -> Candidates:
    """Candidates from (priority, request id, weight); each row records its request id."""
    return Candidates(
        _ids([e[1] for e in entries]),
        np.array([e[0] for e in entries], dtype=np.float64),
        np.array([e[2] for e in entries], dtype=np.float64),
        make_rows([{"request_id": e[1], "w": e[2]} for e in entries]),
    )


def _always(entries: Sequence[tuple[str, str]], make_rows: MakeRows) -> AlwaysExplained:
    return AlwaysExplained(
        _ids([e[0] for e in entries]),
        _ids([e[1] for e in entries]),
        make_rows([{"request_id": e[0], "w": -1.0} for e in entries]),
    )


def _population(seed: int) -> tuple[list[tuple[float, str, float]], list[tuple[str, str]]]:
    """Candidates with many tied priorities and replayed ids; always rows with replays too."""
    rng = np.random.default_rng(seed)
    cands = [(float(rng.integers(1, 20)), f"r{i:04d}", 1.0) for i in range(200)]
    cands += [cands[int(j)] for j in rng.choice(200, size=20, replace=False)]
    always = [(f"a{i:03d}", "always:flagged") for i in range(12)]
    always += [always[0], always[1], ("a002", "always:disputed")]
    return cands, always


def _random_tree_merge(accs: list[StratumAccumulator], rng: random.Random) -> StratumAccumulator:
    """Merge pairs picked at random until one is left: an arbitrary bracketing and order."""
    pool = accs[:]
    while len(pool) > 1:
        i, j = sorted(rng.sample(range(len(pool)), 2))
        b, a = pool.pop(j), pool.pop(i)
        pool.append(merge_accumulators([a, b] if rng.random() < 0.5 else [b, a]))
    return pool[0]


@ROW_STORES
@pytest.mark.parametrize("split_seed", range(4))
def test_merge_is_associative_commutative_and_split_independent(
    make_rows: MakeRows, split_seed: int
) -> None:
    k = 10
    cands, always = _population(seed=1)
    whole = new_accumulator(
        k, len(cands), _candidates(cands, make_rows), _always(always, make_rows)
    )
    rng = random.Random(split_seed)
    items: list[Any] = cands + always
    rng.shuffle(items)
    cuts = sorted(rng.sample(range(1, len(items)), rng.randint(1, 8)))
    parts = []
    for a, b in zip([0, *cuts], [*cuts, len(items)], strict=True):
        c = [e for e in items[a:b] if len(e) == 3]
        al = [e for e in items[a:b] if len(e) == 2]
        parts.append(
            new_accumulator(
                k,
                len(c),
                _candidates(c, make_rows) if c else None,
                _always(al, make_rows) if al else None,
            )
        )
    expected = whole.canonical()
    identity = StratumAccumulator()
    assert merge_accumulators(parts).canonical() == expected
    assert merge_accumulators(parts[::-1]).canonical() == expected
    left = functools.reduce(lambda x, y: merge_accumulators([x, y]), parts, identity)
    right = functools.reduce(lambda x, y: merge_accumulators([y, x]), parts[::-1], identity)
    assert left.canonical() == expected and right.canonical() == expected
    assert _random_tree_merge([*parts, identity, identity], rng).canonical() == expected
    budget, population, top, distinct_always = expected
    assert (budget, population, len(top), len(distinct_always)) == (k, 220, k + 1, 12)
    # A replayed always row keeps its first reason in sort order, whatever arrived first.
    assert ("a002", "always:disputed") in [(a[0], a[1]) for a in distinct_always]


def test_merge_identity_and_budget_mismatch() -> None:
    acc = new_accumulator(3, 2, _candidates([(2.0, "a", 1.0), (1.0, "b", 1.0)], _list_rows))
    assert merge_accumulators([]).canonical() == StratumAccumulator().canonical()
    assert merge_accumulators([StratumAccumulator(), acc]) is acc
    other = new_accumulator(4, 1, _candidates([(1.0, "c", 1.0)], _list_rows))
    with pytest.raises(ValueError, match=r"different budgets \[3, 4\]"):
        merge_accumulators([acc, other])


@ROW_STORES
def test_candidates_are_in_sample_order_without_replays(make_rows: MakeRows) -> None:
    cands, _ = _population(seed=3)
    acc = new_accumulator(50, len(cands), _candidates(cands, make_rows))
    _, _, top, _ = acc.canonical()
    ranks = [(-priority, request_id) for request_id, priority, _, _ in top]
    assert ranks == sorted(ranks) and len({r for _, r in ranks}) == len(ranks) == 51
    assert acc.candidates is not None
    assert [r["request_id"] for r in acc.candidates.rows.to_pylist()] == [r for _, r in ranks]


@pytest.mark.parametrize("seed", range(5))
def test_candidate_indices_keep_everything_the_exact_top_needs(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, m = 500, 21
    priorities = rng.integers(1, 30, n).astype(np.float64)  # heavy ties
    ids = _ids([f"r{int(i)}" for i in rng.integers(0, 300, n)])  # replays
    everything = Candidates(ids, priorities, np.ones(n), _list_rows([{"x": 0}] * n))
    chosen = candidate_indices(priorities, ids, m)
    assert len(chosen) < n
    assert (
        new_accumulator(m - 1, n, everything.take(chosen)).canonical()
        == new_accumulator(m - 1, n, everything).canonical()
    )


@ROW_STORES
def test_priority_inclusion_probability_is_min_one_w_over_tau_by_hand(make_rows: MakeRows) -> None:
    cands = _candidates(
        [(10.0, "a", 3.0), (5.0, "b", 1.0), (2.0, "c", 1.0), (1.0, "d", 1.0)], make_rows
    )
    sample = draw_sample(new_accumulator(2, 4, cands), "priority").records()
    # tau = 2 (the 3rd priority): p(a) = min(1, 3/2) = 1, p(b) = 1/2.
    assert [
        (s.row["request_id"], s.reason, s.inclusion_probability, s.ht_weight, s.stratum_size)
        for s in sample
    ] == [("a", "priority", 1.0, 1.0, 4), ("b", "priority", 0.5, 2.0, 4)]
    reservoir = draw_sample(new_accumulator(2, 4, cands), "reservoir").records()
    assert [(s.reason, s.inclusion_probability, s.ht_weight) for s in reservoir] == [
        ("reservoir", 0.5, 2.0),
        ("reservoir", 0.5, 2.0),
    ]


@ROW_STORES
@pytest.mark.parametrize("sampler", ["priority", "reservoir"])
def test_small_strata_are_kept_whole_and_always_rows_ignore_the_budget(
    make_rows: MakeRows, sampler: str
) -> None:
    cands = _candidates([(4.0, "a", 1.0), (3.0, "b", 0.5), (2.0, "c", 1.0)], make_rows)
    always = _always([(f"x{i}", "always:low_confidence") for i in range(9)], make_rows)
    sample = draw_sample(new_accumulator(5, 3, cands, always), sampler).records()
    assert {(s.reason, s.inclusion_probability, s.ht_weight, s.stratum_size) for s in sample} == {
        ("always:low_confidence", 1.0, 1.0, 9),
        (sampler, 1.0, 1.0, 3),
    }
    assert len(sample) == 12
    tight = draw_sample(new_accumulator(1, 3, cands, always), sampler).records()
    assert sum(s.reason.startswith("always:") for s in tight) == 9 and len(tight) == 10


def test_an_empty_stratum_draws_nothing() -> None:
    assert draw_sample(StratumAccumulator(), "priority").records() == []
    with pytest.raises(ValueError, match="got 'bottom-k'"):
        draw_sample(StratumAccumulator(), "bottom-k")


def test_sampling_weights() -> None:
    confidence = np.array([0.9, 1.0, np.nan, 0.2, 1.7])
    risk = np.array([0.5, -1.0, np.inf, np.nan, 0.0])
    assert sampling_weights("uniform", confidence, risk, 0.01).tolist() == [1.0] * 5
    assert np.allclose(
        sampling_weights("uncertainty", confidence, risk, 0.01), [0.1, 0.01, 1.0, 0.8, 0.01]
    )
    assert sampling_weights("risk", confidence, risk, 0.01).tolist() == [0.5, 0.01, 1.0, 1.0, 0.01]
    with pytest.raises(ValueError, match="got 'entropy'"):
        sampling_weights("entropy", confidence, risk, 0.01)


def _replicate_estimates(
    sampler: str, replicates: int, n: int = 400, k: int = 40
) -> tuple[float, npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """HT estimates of sum(f), HT estimates of N, and the naive N/k * sum(f), per hash seed."""
    rng = np.random.default_rng(2007)
    confidence = rng.uniform(0.0, 1.0, n)
    kind = "uniform" if sampler == "reservoir" else "uncertainty"
    w = sampling_weights(kind, confidence, confidence, 1e-3)
    f = 10.0 * (1.0 - confidence) + rng.exponential(1.0, n)  # correlated with the weight
    ids = _ids([f"req-{i}" for i in range(n)])
    rows = ListRows(tuple({"f": float(v)} for v in f))
    totals, sizes, naive = [], [], []
    for seed in range(replicates):
        q = w / uniforms_from_hash(ids, seed)
        everything = Candidates(ids, q, w, rows)
        parts = []
        # As the Beam job does it: per batch preselect, build, then merge.
        for batch in np.array_split(np.random.default_rng(seed).permutation(n), 3):
            keep = batch[candidate_indices(q[batch], ids[batch], k + 1)]
            parts.append(new_accumulator(k, len(batch), everything.take(keep)))
        sample = draw_sample(merge_accumulators(parts), sampler).records()
        totals.append(sum(s.row["f"] * s.ht_weight for s in sample))
        sizes.append(sum(s.ht_weight for s in sample))
        naive.append(n / k * sum(s.row["f"] for s in sample))
    return float(f.sum()), np.array(totals), np.array(sizes), np.array(naive)


def _z(estimates: npt.NDArray[np.float64], truth: float) -> float:
    """How many standard errors of the replicate mean separate it from the truth."""
    standard_error = estimates.std(ddof=1) / np.sqrt(len(estimates))
    return abs(float(estimates.mean()) - truth) / standard_error


@pytest.mark.parametrize("sampler", ["priority", "reservoir"])
def test_horvitz_thompson_estimates_are_unbiased(sampler: str) -> None:
    truth, totals, sizes, naive = _replicate_estimates(sampler, replicates=400)
    assert totals.std() > 0  # a real sample, not the whole population
    assert _z(totals, truth) < 4.0
    if sampler == "priority":
        # Power check: ignoring the unequal probabilities is detectably biased at this size.
        assert _z(naive, truth) > 4.0
        assert _z(sizes, 400.0) < 4.0
    else:
        assert np.allclose(sizes, 400.0)  # the k / N weights of a reservoir sum to N exactly
