"""Integrated Gradients: closed form on linear models, completeness, engines, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.unit.explainers.conftest import (
    ACTIVATIONS,
    Residual,
    make_linear,
    make_mlp_with,
    make_relu_mlp,
    make_smooth_mlp,
)
from whylake.transforms.explainers import integrated_gradients
from whylake.transforms.explainers.integrated_gradients import quadrature


def _linear_weights(model: torch.nn.Module) -> np.ndarray:
    """w in raw units of Standardize(Linear): w_raw = w / std."""
    return (model.body.weight[0] / model.std).double().detach().numpy()


@pytest.mark.parametrize("wrap", ["eager", "script", "trace"])
def test_linear_model_equals_closed_form(wrap: str, rng: np.random.Generator) -> None:
    model = make_linear(5)
    x = rng.normal(size=(7, 5)) * 3
    base = rng.normal(size=5)
    if wrap == "script":
        model = torch.jit.script(model)
    elif wrap == "trace":
        model = torch.jit.trace(model, torch.zeros(2, 5))
    result = integrated_gradients(model, x, base)
    w = _linear_weights(make_linear(5))
    # The model runs in float32: the closed form holds to float32 rounding of x, b and w.
    x32 = x.astype(np.float32).astype(np.float64)
    b32 = base.astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(result.values, (x32 - b32) * w, rtol=1e-5, atol=1e-6)
    assert result.values.dtype == np.float64 and result.values.shape == (7, 5)


@pytest.mark.parametrize("rule", ["gauss_legendre", "trapezoid"])
def test_linear_model_is_exact_under_both_rules_and_engines(
    rule: str, rng: np.random.Generator
) -> None:
    model = make_linear(5)
    x = rng.normal(size=(4, 5))
    for engine in ("chain", "autograd"):
        result = integrated_gradients(model, x, np.zeros(5), rule=rule, engine=engine, steps=7)
        # The gradient is constant, so any rule whose weights sum to one is exact.
        assert result.error.max() < 1e-5


def test_completeness_on_smooth_mlp(rng: np.random.Generator) -> None:
    model = torch.jit.script(make_smooth_mlp())
    x = rng.normal(size=(16, 6)) * 2
    result = integrated_gradients(model, x, np.zeros(6), steps=50)
    # The path integrand is analytic, and 50-node Gauss-Legendre is exact for polynomials of
    # degree 99, so the quadrature error is far below float32 rounding: what remains is the
    # float32 evaluation of f and its gradient, ~1e-7 relative on outputs in (0, 1).
    assert result.error.max() < 1e-5
    assert result.config["rule"] == "gauss_legendre"


def test_completeness_on_relu_mlp_converges(rng: np.random.Generator) -> None:
    model = torch.jit.script(make_relu_mlp())
    x = rng.normal(size=(32, 6)) * 2
    base = np.zeros(6)
    coarse = integrated_gradients(model, x, base, steps=64)
    fine = integrated_gradients(model, x, base, steps=1024)
    # A ReLU net's gradient jumps where a unit switches on the path, so no rule is exact and
    # the quadrature error of a jump shrinks like 1/steps: 16x the steps should cut the mean
    # error by ~16x; asking for 4x leaves room for where the kinks happen to fall.
    assert fine.error.mean() < coarse.error.mean() / 4


def test_chain_engine_matches_autograd(rng: np.random.Generator) -> None:
    model = torch.jit.script(make_relu_mlp())
    x = rng.normal(size=(10, 6)) * 2
    base = rng.normal(size=(10, 6))  # one baseline per row
    chain = integrated_gradients(model, x, base, engine="chain")
    autograd = integrated_gradients(model, x, base, engine="autograd")
    assert chain.config["engine"] == "chain" and autograd.config["engine"] == "autograd"
    # Same mathematics, different float32 summation order.
    np.testing.assert_allclose(chain.values, autograd.values, rtol=1e-4, atol=1e-6)


def test_non_chain_model_uses_autograd(rng: np.random.Generator) -> None:
    model = torch.jit.script(Residual(4).eval())
    x = rng.normal(size=(5, 4))
    result = integrated_gradients(model, x, np.zeros(4))
    assert result.config["engine"] == "autograd"
    assert result.error.max() < 1e-5  # smooth model: see test_completeness_on_smooth_mlp
    with pytest.raises(ValueError, match="engine='chain'"):
        integrated_gradients(model, x, np.zeros(4), engine="chain")


def test_scripted_traced_and_eager_agree(rng: np.random.Generator) -> None:
    eager = make_relu_mlp()
    x = rng.normal(size=(6, 6))
    base = np.zeros(6)
    ref = integrated_gradients(eager, x, base)
    for model in (torch.jit.script(eager), torch.jit.trace(eager, torch.zeros(2, 6))):
        got = integrated_gradients(model, x, base)
        np.testing.assert_allclose(got.values, ref.values, rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(got.prediction, ref.prediction)


def test_saved_and_loaded_script_module(tmp_path, rng: np.random.Generator) -> None:
    path = tmp_path / "model.pt"
    torch.jit.save(torch.jit.script(make_relu_mlp()), str(path))
    loaded = torch.jit.load(str(path))
    result = integrated_gradients(loaded, rng.normal(size=(3, 6)), np.zeros(6))
    assert result.config["engine"] == "chain"
    assert np.isfinite(result.values).all()


def test_two_calls_are_bit_identical(rng: np.random.Generator) -> None:
    model = torch.jit.script(make_relu_mlp())
    x = rng.normal(size=(20, 6))
    for engine in ("chain", "autograd"):
        a = integrated_gradients(model, x, np.zeros(6), engine=engine)
        b = integrated_gradients(model, x, np.zeros(6), engine=engine)
        np.testing.assert_array_equal(a.values, b.values)
        np.testing.assert_array_equal(a.error, b.error)


def test_batching_does_not_change_the_answer(rng: np.random.Generator) -> None:
    model = torch.jit.script(make_relu_mlp())
    x = rng.normal(size=(9, 6))
    whole = integrated_gradients(model, x, np.zeros(6))
    split = integrated_gradients(model, x, np.zeros(6), batch_rows=2)
    np.testing.assert_allclose(split.values, whole.values, rtol=1e-5, atol=1e-7)
    assert split.config["batch_rows"] == 2


def test_quadrature_weights_sum_to_one() -> None:
    for rule in ("gauss_legendre", "trapezoid"):
        nodes, weights = quadrature(rule, 50)
        assert nodes.min() >= 0.0 and nodes.max() <= 1.0
        assert abs(weights.sum() - 1.0) < 1e-12
    # Gauss-Legendre integrates t^k exactly up to degree 2n - 1.
    nodes, weights = quadrature("gauss_legendre", 5)
    assert abs(weights @ nodes**9 - 1 / 10) < 1e-12


def test_bad_arguments_are_refused(rng: np.random.Generator) -> None:
    model = make_linear(5)
    x = rng.normal(size=(3, 5))
    with pytest.raises(ValueError, match="4 features"):
        integrated_gradients(model, x, np.zeros(4))
    with pytest.raises(ValueError, match="steps"):
        integrated_gradients(model, x, np.zeros(5), steps=1)
    with pytest.raises(ValueError, match="rule"):
        integrated_gradients(model, x, np.zeros(5), rule="simpson")
    with pytest.raises(ValueError, match="non-finite"):
        integrated_gradients(model, np.full((1, 5), np.nan), np.zeros(5))
    with pytest.raises(ValueError, match="2 rows for 3 inputs"):
        integrated_gradients(model, x, np.zeros((2, 5)))


def test_training_mode_dropout_is_refused(rng: np.random.Generator) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Dropout(0.5), torch.nn.Linear(4, 1))
    with pytest.raises(ValueError, match="training mode"):
        integrated_gradients(model.train(), rng.normal(size=(2, 3)), np.zeros(3))
    result = integrated_gradients(model.eval(), rng.normal(size=(2, 3)), np.zeros(3))
    assert result.config["engine"] == "chain"  # eval-mode dropout is the identity


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_chain_engine_matches_autograd_for_every_activation(
    activation: str, rng: np.random.Generator
) -> None:
    model = torch.jit.script(make_mlp_with(activation))
    x = rng.normal(size=(6, 5)) * 2
    chain = integrated_gradients(model, x, np.zeros(5), engine="chain", steps=16)
    autograd = integrated_gradients(model, x, np.zeros(5), engine="autograd", steps=16)
    # The hand-written derivatives must be autograd's, up to float32 summation order.
    np.testing.assert_allclose(chain.values, autograd.values, rtol=1e-4, atol=1e-6)
