"""Tiny seeded torch models whose explanations can be checked by hand."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn

SEED = 20261122


class Standardize(nn.Module):
    """Raw units in, standardised units out: how registered models carry their scaling."""

    def __init__(self, body: nn.Module, mean: np.ndarray, std: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body((x - self.mean) / self.std).squeeze(-1)


class Residual(nn.Module):
    """A skip connection: not a chain of layers, so explainers must take the autograd path."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.inner = nn.Linear(d, d)
        self.out = nn.Linear(d, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.out(x + torch.tanh(self.inner(x))))


class Product(nn.Module):
    """f(x) = x0 * x1: the IG ranking of the two features depends on the baseline."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0] * x[:, 1]


def seeded(module: nn.Module) -> nn.Module:
    """Re-initialise every parameter from one seed so each test sees the same model."""
    gen = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for p in module.parameters():
            # Weights scaled by fan-in keep the outputs off saturation, where every explainer
            # degenerates to ~0 and agreement tests would prove nothing.
            scale = 1.0 / p.shape[1] ** 0.5 if p.ndim == 2 else 0.1
            p.copy_(torch.randn(p.shape, generator=gen) * scale)
    return module.eval()


def make_linear(d: int = 5) -> nn.Module:
    """Standardisation + one Linear layer: a linear model in raw units."""
    rng = np.random.default_rng(SEED)
    return seeded(Standardize(nn.Linear(d, 1), rng.normal(size=d), rng.uniform(0.5, 2, d)))


def make_relu_mlp(d: int = 6, hidden: int = 8) -> nn.Module:
    """Standardisation + ReLU MLP + sigmoid, the shape of the registered classifiers."""
    rng = np.random.default_rng(SEED + 1)
    body = nn.Sequential(
        nn.Linear(d, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, 1),
        nn.Sigmoid(),
    )
    return seeded(Standardize(body, rng.normal(size=d), rng.uniform(0.5, 2, d)))


def make_smooth_mlp(d: int = 6, hidden: int = 8) -> nn.Module:
    """A tanh MLP with a sigmoid output: analytic, so quadrature error is tiny."""
    return seeded(
        nn.Sequential(nn.Linear(d, hidden), nn.Tanh(), nn.Linear(hidden, 1), nn.Sigmoid())
    )


def make_additive(d: int = 4, per_feature: int = 3) -> nn.Module:
    """f(x) = sum_k g_k(x_k): each hidden ReLU unit reads one feature, no output squashing."""
    net = seeded(
        nn.Sequential(nn.Linear(d, d * per_feature), nn.ReLU(), nn.Linear(d * per_feature, 1))
    )
    mask = torch.zeros(d * per_feature, d)
    for k in range(d):
        mask[k * per_feature : (k + 1) * per_feature, k] = 1.0
    with torch.no_grad():
        net[0].weight.mul_(mask)
    return net


def numpy_fn(model: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[np.ndarray], np.ndarray]:
    """The model as float64 numpy -> float64 numpy (float32 inside), for exact_shapley."""

    def f(rows: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = model(torch.as_tensor(rows, dtype=torch.float32))
        return out.reshape(-1).double().numpy()

    return f


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(SEED)


ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.1),
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "silu": nn.SiLU,
    "gelu": nn.GELU,
    "softplus": nn.Softplus,
}


def make_mlp_with(activation: str, d: int = 5, hidden: int = 7) -> nn.Module:
    """Two hidden layers with the named activation, a regression (unsquashed) output."""
    act = ACTIVATIONS[activation]
    return seeded(
        nn.Sequential(
            nn.Linear(d, hidden), act(), nn.Linear(hidden, hidden), act(), nn.Linear(hidden, 1)
        )
    )
