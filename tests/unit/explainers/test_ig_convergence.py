"""IG whose steps are raised per row until converged, checked against IG computed exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from whylake.schemas.errors import ConfigError
from whylake.transforms.explainers.config import ExplainConfig
from whylake.transforms.explainers.integrated_gradients import (
    converged_integrated_gradients,
    integrated_gradients,
)

SEED = 424242  # not one of the sets the acceptance rule was measured on


def _relu_net(d: int = 6, hidden: int = 48) -> nn.Sequential:
    gen = torch.Generator().manual_seed(SEED)
    net = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, 1))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) / (p.shape[-1] ** 0.5))
    return net.eval()


def exact_ig(net: nn.Sequential, x: np.ndarray, baseline: np.ndarray) -> np.ndarray:
    """IG of w2 . relu(W1 p + b1) + b2 in closed form: the path crosses each kink once.

    Along p(a) = b + a (x - b) the hidden pre-activation is c + a u, so unit j is active on a
    sub-interval of [0, 1] of length L_j, and IG_i = (x - b)_i sum_j W1[j, i] w2[j] L_j.
    """
    w1 = net[0].weight.detach().double().numpy()
    b1 = net[0].bias.detach().double().numpy()
    w2 = net[2].weight.detach().double().numpy()[0]
    x32 = x.astype(np.float32).astype(np.float64)  # the points the model is evaluated at
    b32 = baseline.astype(np.float32).astype(np.float64)
    delta = x32 - b32
    c = b32 @ w1.T + b1
    u = delta @ w1.T
    with np.errstate(divide="ignore", invalid="ignore"):
        cross = np.clip(-c / u, 0.0, 1.0)
    active = np.where(u > 0, 1.0 - cross, np.where(u < 0, cross, (c > 0).astype(float)))
    return delta * ((active * w2) @ w1)


@pytest.fixture(scope="module")
def case() -> tuple[nn.Sequential, np.ndarray, np.ndarray, np.ndarray]:
    net = _relu_net()
    rng = np.random.default_rng(SEED)
    x = rng.normal(size=(300, 6)) * 2.0
    baseline = np.zeros(6)
    return net, x, baseline, exact_ig(net, x, baseline)


def _relative_error(values: np.ndarray, exact: np.ndarray) -> np.ndarray:
    return np.asarray(np.abs(values - exact).max(axis=1) / np.abs(exact).max(axis=1))


def test_fixed_50_steps_miss_the_tolerance_on_a_relu_net(case) -> None:
    net, x, baseline, exact = case
    plain = integrated_gradients(net, x, baseline, steps=50)
    assert (_relative_error(plain.values, exact) > 0.005).mean() > 0.05


def test_converged_ig_is_within_the_tolerance_of_exact_ig_for_every_row(case) -> None:
    net, x, baseline, exact = case
    out = converged_integrated_gradients(net, x, baseline, steps=50, tolerance=0.005)
    error = _relative_error(out.result.values, exact)
    assert error.max() <= 0.005, (error.max(), out.steps[error.argmax()])
    assert (out.convergence <= 0.0025).all()  # accepted at half the tolerance
    assert set(np.unique(out.steps)) <= {200, 400, 800, 1600, 3200}
    assert len(np.unique(out.steps)) > 1  # per row: easy rows stop early
    assert out.result.config["tolerance"] == 0.005


def test_each_row_is_recomputable_from_its_step_count_alone(case) -> None:
    net, x, baseline, _ = case
    out = converged_integrated_gradients(net, x[:40], baseline)
    for steps in np.unique(out.steps):
        rows = np.flatnonzero(out.steps == steps)
        again = integrated_gradients(net, x[rows], baseline, steps=int(steps)).values
        np.testing.assert_allclose(out.result.values[rows], again, rtol=1e-6, atol=1e-8)


def test_a_linear_model_converges_at_once() -> None:
    gen = torch.Generator().manual_seed(1)
    net = nn.Linear(4, 1).eval()
    with torch.no_grad():
        net.weight.copy_(torch.randn((1, 4), generator=gen))
    x = np.random.default_rng(0).normal(size=(20, 4))
    out = converged_integrated_gradients(net, x, np.zeros(4), steps=16)
    assert (out.steps == 64).all()  # two doublings that move nothing
    assert out.convergence.max() <= 1e-6


def test_steps_stop_at_max_steps_and_the_figure_says_so(case) -> None:
    net, x, baseline, _ = case
    out = converged_integrated_gradients(net, x[:10], baseline, tolerance=1e-9, max_steps=400)
    assert (out.steps == 400).all()
    assert (out.convergence > 1e-9).all()


def test_rows_do_not_depend_on_their_batch_and_calls_are_deterministic(case) -> None:
    net, x, baseline, _ = case
    whole = converged_integrated_gradients(net, x[:60], baseline)
    again = converged_integrated_gradients(net, x[:60], baseline)
    np.testing.assert_array_equal(whole.result.values, again.result.values)
    part = converged_integrated_gradients(net, x[20:35], baseline)
    np.testing.assert_array_equal(whole.steps[20:35], part.steps)
    scale = np.abs(part.result.values).max()  # float32 rounding of BLAS tiles, ~1e-7 of it
    np.testing.assert_allclose(whole.result.values[20:35], part.result.values, atol=1e-6 * scale)


def test_settings_check_themselves() -> None:
    with pytest.raises(ConfigError):
        ExplainConfig(ig_tolerance=0)
    with pytest.raises(ConfigError):
        ExplainConfig(ig_steps=50, ig_max_steps=60)
    with pytest.raises(ValueError):
        converged_integrated_gradients(_relu_net(), np.zeros((1, 6)), np.zeros(6), tolerance=2)
