"""Counterfactuals: re-scored validity, constraints, not_found, determinism, diversity, metrics."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from torch import nn

from whylake.transforms.explainers.counterfactuals import (
    Counterfactual,
    CounterfactualConfig,
    CounterfactualResult,
    CounterfactualSpec,
    evaluate_counterfactuals,
    generate_counterfactuals,
    spec_from_training,
)

SEED = 7
NAMES = ("age", "income", "children", "region_n", "region_s", "region_w")
AGE, INCOME, CHILDREN = 0, 1, 2
REGION = (3, 4, 5)
METHODS = ("gradient", "search")


class Logistic(nn.Module):
    """p = sigmoid(w . x + b): the L1-optimal counterfactual is known in closed form."""

    def __init__(self, weights: list[float], bias: float) -> None:
        super().__init__()
        self.register_buffer("w", torch.tensor(weights))
        self.b = bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(x @ self.w + self.b)


class ReluNet(nn.Module):
    """Standardisation + a seeded ReLU MLP + sigmoid: the shape of registered classifiers."""

    def __init__(self) -> None:
        super().__init__()
        rows = _training_rows()
        self.register_buffer("mean", torch.tensor(rows.mean(0), dtype=torch.float32))
        self.register_buffer("std", torch.tensor(rows.std(0), dtype=torch.float32))
        gen = torch.Generator().manual_seed(SEED)
        self.body = nn.Sequential(nn.Linear(len(NAMES), 16), nn.ReLU(), nn.Linear(16, 1))
        with torch.no_grad():
            for p in self.body.parameters():
                p.copy_(torch.randn(p.shape, generator=gen))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.body((x - self.mean) / self.std)).squeeze(-1)


class Step(nn.Module):
    """A rule, not a function with gradients: 0.9 when income + children > 3, else 0.1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x[:, INCOME] + x[:, CHILDREN] > 3.0, 0.9, 0.1)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # These tensors are tiny: a second OpenMP thread only adds barrier waits, which stretch
    # into seconds when the machine's cores are shared. Restored after each test.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _training_rows(n: int = 400) -> np.ndarray:
    rng = np.random.default_rng(SEED)
    rows = np.empty((n, len(NAMES)))
    rows[:, AGE] = rng.integers(18, 80, n)
    rows[:, INCOME] = rng.normal(0.0, 1.0, n)
    rows[:, CHILDREN] = rng.integers(0, 5, n)
    region = rng.integers(0, 3, n)
    rows[:, REGION] = np.eye(3)[region]
    return rows


def _spec(**kwargs: object) -> CounterfactualSpec:
    args: dict[str, object] = {
        "integer": ("age", "children"),
        "categorical_groups": (("region_n", "region_s", "region_w"),),
    }
    args.update(kwargs)
    return spec_from_training(NAMES, _training_rows(), **args)  # type: ignore[arg-type]


def _model() -> nn.Module:
    # Weights per column: age, income, children, region n/s/w.
    return Logistic([0.02, 1.0, 0.6, 0.0, 1.2, -0.8], bias=-2.5).eval()


def _scores(model: nn.Module, rows: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor(rows, dtype=torch.float32)).reshape(-1).double().numpy()


def _run(
    model: nn.Module, queries: np.ndarray, spec: CounterfactualSpec, **config: object
) -> list[CounterfactualResult]:
    reference = _training_rows()
    return generate_counterfactuals(
        model,
        queries,
        spec,
        CounterfactualConfig(**config),  # type: ignore[arg-type]
        reference_rows=reference,
        reference_scores=_scores(model, reference),
    )


def _queries(model: nn.Module, n: int = 16) -> np.ndarray:
    rows = _training_rows()
    return rows[_scores(model, rows) < 0.5][:n]


def _all(results: list[CounterfactualResult]) -> list[tuple[int, Counterfactual]]:
    return [(i, cf) for i, r in enumerate(results) for cf in r.counterfactuals]


@pytest.mark.parametrize("method", METHODS)
def test_every_reported_counterfactual_is_valid_when_rescored(method: str) -> None:
    model = _model()
    queries = _queries(model)
    results = _run(model, queries, _spec(), method=method)
    assert all(r.status == "found" for r in results)
    for i, cf in _all(results):
        rescored = _scores(model, cf.values[None])[0]
        assert cf.valid and rescored > 0.5, (i, rescored)
        assert rescored == pytest.approx(cf.score, abs=1e-6)
        assert results[i].query_score < 0.5


@pytest.mark.parametrize("method", METHODS)
def test_relu_network_flips_both_ways(method: str) -> None:
    model = ReluNet().eval()
    rows = _training_rows()[:40]
    scores = _scores(model, rows)
    assert 0 < (scores >= 0.5).sum() < len(rows)  # both classes present, both directions tested
    results = _run(model, rows, _spec(), method=method)
    found = [i for i, r in enumerate(results) if r.status == "found"]
    assert len(found) >= 0.9 * len(rows)
    for i, cf in _all(results):
        rescored = _scores(model, cf.values[None])[0]
        assert (rescored >= 0.5) != (scores[i] >= 0.5), (i, scores[i], rescored)


@pytest.mark.parametrize("method", METHODS)
def test_constraints_hold(method: str) -> None:
    model = _model()
    spec = _spec(immutable=("age",), monotone={"children": -1})
    queries = _queries(model)
    results = _run(model, queries, spec, method=method)
    pairs = _all(results)
    assert pairs
    for i, cf in pairs:
        x, x0 = cf.values, queries[i]
        assert x[AGE] == x0[AGE]  # immutable
        assert x[CHILDREN] <= x0[CHILDREN]  # monotone: may only decrease
        inside = (x >= spec.lower) & (x <= spec.upper)
        assert np.all(inside | (x == x0))  # bounds, unless the query itself sits outside
        assert x[CHILDREN] == np.round(x[CHILDREN])  # integer
        region = x[list(REGION)]
        assert set(region.tolist()) <= {0.0, 1.0} and region.sum() == 1.0  # one-hot


def test_monotone_direction_is_obeyed_even_when_the_other_is_cheaper() -> None:
    # income helps the score; forbidding increases forces another route (children, region).
    model = _model()
    queries = _queries(model)
    free = _run(model, queries, _spec())
    assert any(cf.values[INCOME] > queries[i][INCOME] for i, cf in _all(free))
    results = _run(model, queries, _spec(monotone={"income": -1}))
    pairs = _all(results)
    assert pairs
    assert all(cf.values[INCOME] <= queries[i][INCOME] for i, cf in pairs)


def test_categorical_switch_is_used_and_valid() -> None:
    # Only the region may change: the answer must be a switch to region_s (weight 1.2).
    model = _model()
    spec = _spec(immutable=("age", "income", "children"))
    queries = _queries(model)
    queries = queries[(queries[:, 3] == 1) & (_scores(model, queries) > 0.3)]
    assert len(queries)
    results = _run(model, queries, spec)
    assert all(r.status == "found" for r in results)
    for _, cf in _all(results):
        assert cf.values[4] == 1.0 and cf.values[3] == 0.0 and cf.values[5] == 0.0
        assert cf.sparsity == 1  # one categorical feature changed, though two columns moved
        assert {c[0] for c in cf.changes} == {"region_n", "region_s"}


@pytest.mark.parametrize("method", METHODS)
def test_all_features_immutable_gives_not_found(method: str) -> None:
    model = _model()
    results = _run(model, _queries(model, 5), _spec(immutable=NAMES), method=method)
    for r in results:
        assert r.status == "not_found" and r.counterfactuals == ()
        assert "immutable" in r.message


@pytest.mark.parametrize("method", METHODS)
def test_unreachable_target_gives_not_found_never_an_invalid_one(method: str) -> None:
    # Bounds that keep income and children low, age and region fixed: the best reachable logit
    # is 0.02 * 60 + 0.5 + 0.6 - 2.5 = -0.2, so the score cannot reach 0.5.
    model = _model()
    spec = _spec(immutable=("age", "region_n", "region_s", "region_w"))
    upper = spec.upper.copy()
    upper[INCOME], upper[CHILDREN] = 0.5, 1.0
    spec = dataclasses.replace(spec, upper=upper)
    queries = _queries(model, 200)
    queries = queries[
        (queries[:, AGE] < 60)
        & (queries[:, INCOME] < 0.5)
        & (queries[:, CHILDREN] <= 1)
        & (queries[:, 3] == 1)
    ]
    assert len(queries)
    results = _run(model, queries, spec, method=method, max_steps=20)
    assert all(r.status == "not_found" and not r.counterfactuals for r in results)
    assert all("within" in r.message for r in results)


@pytest.mark.parametrize("method", METHODS)
def test_same_input_and_config_give_the_same_output(method: str) -> None:
    model = ReluNet().eval()
    rows = _training_rows()[:20]
    first = _run(model, rows, _spec(), method=method, seed=3)
    again = _run(model, rows, _spec(), method=method, seed=3)
    for a, b in zip(first, again, strict=True):
        assert a.status == b.status and a.message == b.message
        assert len(a.counterfactuals) == len(b.counterfactuals)
        for x, y in zip(a.counterfactuals, b.counterfactuals, strict=True):
            np.testing.assert_array_equal(x.values, y.values)
            assert x.changes == y.changes


@pytest.mark.parametrize("method", METHODS)
def test_a_query_gets_the_same_answer_alone_or_in_a_batch(method: str) -> None:
    model = ReluNet().eval()
    rows = _training_rows()[:12]
    batch = _run(model, rows, _spec(), method=method)
    alone = _run(model, rows[5:6], _spec(), method=method)[0]
    assert alone.status == "found"
    assert len(alone.counterfactuals) == len(batch[5].counterfactuals)
    for a, b in zip(alone.counterfactuals, batch[5].counterfactuals, strict=True):
        # Equal up to the float rounding of a different matmul batch size.
        np.testing.assert_allclose(a.values, b.values, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("method", METHODS)
def test_counterfactuals_of_one_query_are_distinct(method: str) -> None:
    model = ReluNet().eval()
    spec = _spec()
    results = _run(model, _training_rows()[:20], spec, method=method, diversity=0.5)
    with_three = [r for r in results if len(r.counterfactuals) == 3]
    assert len(with_three) >= 14  # 6 features, one of them one-hot: not every query has 3 routes
    for r in results:
        cfs = r.counterfactuals
        for a in range(len(cfs)):
            for b in range(a + 1, len(cfs)):
                set_a = {c[0] for c in cfs[a].changes}
                set_b = {c[0] for c in cfs[b].changes}
                gap = np.abs((cfs[a].values - cfs[b].values) / spec.scale).sum()
                assert set_a != set_b or gap > 0.5


def test_linear_model_gets_the_l1_optimal_single_feature_change() -> None:
    # Unbounded, continuous: the MAD-scaled L1 optimum moves only the feature with the largest
    # |w_j| * MAD_j, by exactly the logit gap over w_j (Wachter et al. 2017, eq. 3's distance).
    weights = [0.0, -2.0, 0.5, 0.0, 0.0, 0.0]
    model = Logistic(weights, bias=-1.0).eval()
    spec = _spec(categorical_groups=(), integer=())
    spec = dataclasses.replace(spec, lower=np.full(6, -np.inf), upper=np.full(6, np.inf))
    gain = np.abs(weights) * spec.scale
    best = int(np.argmax(gain))
    rows = _training_rows()
    queries = rows[_scores(model, rows) < 0.3][:10]
    results = _run(model, queries, spec, n_counterfactuals=1, margin=1e-4)
    for i, r in enumerate(results):
        (cf,) = r.counterfactuals
        assert [c[0] for c in cf.changes] == [NAMES[best]]
        logit_gap = np.log(0.5001 / 0.4999) - (queries[i] @ weights - 1.0)
        optimum = logit_gap / gain[best]
        assert cf.proximity == pytest.approx(optimum, rel=2e-3)


def test_non_differentiable_model_needs_the_search_path() -> None:
    model = Step().eval()
    queries = _training_rows()[:30]
    queries = queries[_scores(model, queries) < 0.5]
    search = _run(model, queries, _spec(), method="search")
    assert all(r.status == "found" for r in search)
    for _, cf in _all(search):
        assert cf.values[INCOME] + cf.values[CHILDREN] > 3.0
    # The gradient path stalls at once (no gradient) and hands every query to the search ...
    fallback = _run(model, queries, _spec())
    assert all("gradient-free search" in r.message for r in fallback)
    # ... or, with the fallback off, says it found nothing rather than guessing.
    strict = _run(model, queries, _spec(), search_fallback=False)
    assert all(r.status == "not_found" for r in strict)


def test_desired_above_when_already_above() -> None:
    model = _model()
    rows = _training_rows()
    high = rows[_scores(model, rows) > 0.6][:3]
    results = _run(model, high, _spec(), desired="above")
    assert all(r.status == "already_met" and not r.counterfactuals for r in results)
    below = _run(model, high, _spec(), desired="below", threshold=0.4)
    for r in below:
        assert r.status == "found"
        assert all(cf.score < 0.4 for cf in r.counterfactuals)


def test_metrics_match_their_definitions() -> None:
    model = _model()
    spec = _spec()
    reference = _training_rows()
    ref_scores = _scores(model, reference)
    queries = _queries(model, 8)
    results = _run(model, queries, spec)
    target_rows = reference[ref_scores > 0.5] / spec.scale
    for i, cf in _all(results):
        diff = np.abs(cf.values - queries[i]) / spec.scale
        assert cf.proximity == pytest.approx(diff.sum(), rel=1e-5)
        changed_cols = np.flatnonzero(cf.values != queries[i])
        region_moved = bool(set(changed_cols) & set(REGION))
        expected = len(set(changed_cols) - set(REGION)) + int(region_moved)
        assert cf.sparsity == expected
        assert len(cf.changes) == len(changed_cols)
        nearest = np.abs(target_rows - cf.values / spec.scale).sum(1).min()
        assert cf.plausibility == pytest.approx(nearest, rel=1e-4)


def test_evaluate_marks_an_invalid_candidate_invalid() -> None:
    model = _model()
    spec = _spec()
    reference = _training_rows()
    queries = _queries(model, 3)
    (measured, *_) = evaluate_counterfactuals(
        model,
        queries,
        queries.copy(),  # "changing nothing" is no counterfactual
        spec,
        CounterfactualConfig(),
        reference_rows=reference,
        reference_scores=_scores(model, reference),
    )
    assert not measured.valid and measured.sparsity == 0 and measured.proximity == 0.0
    with pytest.raises(ValueError, match="invalid counterfactual"):
        CounterfactualResult("found", (measured,), 0.2, "")


def test_spec_and_config_check_themselves() -> None:
    spec = _spec()
    with pytest.raises(ValueError, match="lower"):
        dataclasses.replace(spec, lower=spec.upper + 1)
    with pytest.raises(ValueError, match="scale"):
        dataclasses.replace(spec, scale=np.zeros(6))
    with pytest.raises(ValueError, match="shares a column"):
        dataclasses.replace(spec, categorical_groups=((3, 4), (4, 5)))
    with pytest.raises(ValueError, match="partly immutable"):
        dataclasses.replace(spec, immutable=np.array([0, 0, 0, 1, 0, 0], bool))
    with pytest.raises(ValueError, match="unknown features"):
        spec_from_training(NAMES, _training_rows(), immutable=("height",))
    with pytest.raises(ValueError, match="threshold"):
        CounterfactualConfig(threshold=1.0)
    with pytest.raises(ValueError, match="method"):
        CounterfactualConfig(method="genetic")
    with pytest.raises(ValueError, match="not one-hot"):
        bad = _queries(_model(), 1).copy()
        bad[0, list(REGION)] = 1.0
        _run(_model(), bad, spec)
    assert not spec.lower.flags.writeable  # the spec cannot be edited behind its back
