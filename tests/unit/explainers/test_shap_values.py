"""SHAP for torch models: exact where it should be, additive always, same on ScriptModules."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.unit.explainers.conftest import (
    ACTIVATIONS,
    Residual,
    make_additive,
    make_linear,
    make_mlp_with,
    make_relu_mlp,
    make_smooth_mlp,
    numpy_fn,
)
from whylake.transforms.explainers import exact_shapley, shap_attributions


def test_linear_model_is_exact_and_auto_picks_linear(rng: np.random.Generator) -> None:
    model = torch.jit.script(make_linear(5))
    x = rng.normal(size=(6, 5)) * 2
    bg = rng.normal(size=(40, 5))
    result = shap_attributions(model, x, bg)
    assert result.method == "shap_linear"
    eager = make_linear(5)
    w = (eager.body.weight[0] / eager.std).double().detach().numpy()
    # w read from float32 weights and composed in float64: float32-rounding agreement.
    np.testing.assert_allclose(result.values, w * (x - bg.mean(axis=0)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.values, exact_shapley(numpy_fn(model), x, bg), atol=1e-5)
    assert result.error.max() < 1e-5


def test_deep_equals_exact_shapley_on_an_additive_model(rng: np.random.Generator) -> None:
    # For f(x) = sum_k g_k(x_k) the rescale rule gives feature k exactly g_k(x_k) - g_k(r_k)
    # for each reference r, whose background mean is the exact interventional Shapley value.
    model = torch.jit.script(make_additive(4))
    x = rng.normal(size=(5, 4)) * 2
    bg = rng.normal(size=(30, 4))
    result = shap_attributions(model, x, bg)
    assert result.method == "shap_deep"
    exact = exact_shapley(numpy_fn(model), x, bg)
    np.testing.assert_allclose(result.values, exact, atol=2e-5)


def test_deep_matches_shap_deep_explainer(rng: np.random.Generator) -> None:
    shap = pytest.importorskip("shap")
    eager = make_relu_mlp()
    x = rng.normal(size=(8, 6))
    bg = rng.normal(size=(20, 6))
    ours = shap_attributions(torch.jit.script(eager), x, bg, kind="deep")

    class Column(torch.nn.Module):  # DeepExplainer wants (n, 1) outputs
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, rows: torch.Tensor) -> torch.Tensor:
            return self.inner.body((rows - self.inner.mean) / self.inner.std)

    library = shap.DeepExplainer(Column(eager).eval(), torch.tensor(bg, dtype=torch.float32))
    theirs = np.asarray(library.shap_values(torch.tensor(x, dtype=torch.float32)))
    # Same rescale rule, same 1e-6 fallback threshold; only float32 summation order differs.
    np.testing.assert_allclose(ours.values, theirs.reshape(x.shape), atol=1e-5)


def test_additivity_on_a_nonlinear_mlp_and_gap_to_exact_shapley(
    rng: np.random.Generator, record_property: object
) -> None:
    model = torch.jit.script(make_relu_mlp(d=8))
    x = rng.normal(size=(6, 8)) * 1.5
    bg = rng.normal(size=(25, 8))
    result = shap_attributions(model, x, bg)
    # DeepLIFT's multipliers telescope, so each pair sums to f(x) - f(r) up to float32
    # rounding of outputs in (0, 1): the mean over pairs is additive to ~1e-7.
    assert result.error.max() < 1e-5
    exact = exact_shapley(numpy_fn(model), x, bg)
    np.testing.assert_allclose(exact.sum(axis=1), result.values.sum(axis=1), atol=1e-5)
    # DeepLIFT is not exact Shapley on a nonlinear net: interactions are split by the rescale
    # rule, not by coalitions. The gap is reported, not asserted (there is no bound to test).
    gap = np.abs(result.values - exact).max()
    scale = np.abs(exact).max()
    record_property("deep_vs_exact_max_gap", float(gap))
    record_property("deep_vs_exact_relative_gap", float(gap / scale))


def test_kernel_enumerates_small_models_exactly(rng: np.random.Generator) -> None:
    pytest.importorskip("shap")
    model = torch.jit.script(make_smooth_mlp(d=5))
    x = rng.normal(size=(3, 5))
    bg = rng.normal(size=(10, 5))
    result = shap_attributions(model, x, bg, kind="kernel")
    # With 2^5 - 2 = 30 coalitions under its 2*5 + 2048 sample budget KernelExplainer
    # enumerates them all and its weighted least squares solves the Shapley values exactly.
    np.testing.assert_allclose(result.values, exact_shapley(numpy_fn(model), x, bg), atol=1e-6)
    assert result.error.max() < 1e-6


def test_gradient_kind_on_a_script_module_that_is_not_a_chain(rng: np.random.Generator) -> None:
    model = torch.jit.script(Residual(4).eval())
    x = rng.normal(size=(4, 4))
    bg = rng.normal(size=(12, 4))
    result = shap_attributions(model, x, bg)
    assert result.method == "shap_gradient"
    assert result.config["engine"] == "autograd"
    # Expected gradients = mean of IG paths, each complete up to Gauss-Legendre error on a
    # smooth model (see test_completeness_on_smooth_mlp), hence additive to float rounding.
    assert result.error.max() < 1e-5
    with pytest.raises(ValueError, match="hooks"):
        shap_attributions(model, x, bg, kind="deep")


def test_gradient_kind_is_exact_on_a_linear_model(rng: np.random.Generator) -> None:
    model = torch.jit.script(make_linear(5))
    x = rng.normal(size=(3, 5))
    bg = rng.normal(size=(9, 5))
    grad = shap_attributions(model, x, bg, kind="gradient")
    linear = shap_attributions(model, x, bg, kind="linear")
    np.testing.assert_allclose(grad.values, linear.values, rtol=1e-5, atol=1e-6)


def test_linear_kind_refuses_a_nonlinear_model(rng: np.random.Generator) -> None:
    with pytest.raises(ValueError, match="nonlinear"):
        shap_attributions(
            make_relu_mlp(), rng.normal(size=(2, 6)), rng.normal(size=(5, 6)), kind="linear"
        )


def test_script_and_eager_agree_and_calls_are_deterministic(rng: np.random.Generator) -> None:
    eager = make_relu_mlp()
    scripted = torch.jit.script(eager)
    x = rng.normal(size=(7, 6))
    bg = rng.normal(size=(15, 6))
    a = shap_attributions(scripted, x, bg)
    b = shap_attributions(scripted, x, bg)
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(a.error, b.error)
    c = shap_attributions(eager, x, bg)
    np.testing.assert_allclose(c.values, a.values, rtol=1e-5, atol=1e-7)
    assert a.config["background_rows"] == 15


def test_base_value_is_mean_output_on_background(rng: np.random.Generator) -> None:
    model = torch.jit.script(make_relu_mlp())
    bg = rng.normal(size=(11, 6))
    result = shap_attributions(model, rng.normal(size=(2, 6)), bg)
    expected = numpy_fn(model)(bg).mean()
    np.testing.assert_allclose(result.base_value, [expected, expected], rtol=1e-12)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_deep_is_additive_for_every_activation(activation: str, rng: np.random.Generator) -> None:
    eager = make_mlp_with(activation)
    x = rng.normal(size=(5, 5)) * 2
    bg = rng.normal(size=(9, 5))
    result = shap_attributions(torch.jit.script(eager), x, bg)
    assert result.method == "shap_deep" and result.config["engine"] == "chain"
    # Rescale multipliers telescope for any activation: each pair sums to
    # f(x) - f(r) exactly in real arithmetic; float32 leaves ~1e-6 on outputs of size ~1.
    scale = 1.0 + np.abs(result.prediction).max()
    assert result.error.max() < 1e-5 * scale
    np.testing.assert_allclose(shap_attributions(eager, x, bg).values, result.values, atol=1e-6)


def test_deep_kind_on_an_eager_module_that_is_not_a_chain_calls_shap(
    rng: np.random.Generator,
) -> None:
    pytest.importorskip("shap")

    class Skip(torch.nn.Module):  # a skip connection with module nonlinearities
        def __init__(self) -> None:
            super().__init__()
            self.inner, self.act = torch.nn.Linear(4, 4), torch.nn.Tanh()
            self.out, self.squash = torch.nn.Linear(4, 1), torch.nn.Sigmoid()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.squash(self.out(x + self.act(self.inner(x)))).squeeze(-1)

    model = Skip().eval()
    x = rng.normal(size=(3, 4))
    bg = rng.normal(size=(10, 4))
    assert shap_attributions(model, x, bg).method == "shap_gradient"  # auto avoids hooks
    result = shap_attributions(model, x, bg, kind="deep")
    assert result.config["engine"] == "shap.DeepExplainer"
    # Every nonlinearity is a module DeepExplainer handles, so its rescale rule is additive.
    assert result.error.max() < 1e-5


def test_a_plain_function_gets_kernel_or_probed_linear_shap(rng: np.random.Generator) -> None:
    pytest.importorskip("shap")
    w = rng.normal(size=4)
    w_t = torch.tensor(w, dtype=torch.float32)

    def f(rows: torch.Tensor) -> torch.Tensor:
        return rows @ w_t + 0.5

    x = rng.normal(size=(3, 4))
    bg = rng.normal(size=(12, 4))
    expected = w * (x - bg.mean(axis=0))
    auto = shap_attributions(f, x, bg)
    assert auto.method == "shap_kernel"  # no graph to read, no module to differentiate
    np.testing.assert_allclose(auto.values, expected, atol=1e-5)
    linear = shap_attributions(f, x, bg, kind="linear")
    assert linear.config["engine"] == "probe"
    # Weights read by float32 finite differences over a feature's spread: ~1e-6 relative.
    np.testing.assert_allclose(linear.values, expected, rtol=1e-4, atol=1e-5)

    def bent(rows: torch.Tensor) -> torch.Tensor:
        return torch.relu(rows @ w_t)

    with pytest.raises(ValueError, match="not affine"):
        shap_attributions(bent, x * 3, bg, kind="linear")
