"""The result record and device handling: immutability, shapes, and device choice."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.unit.explainers.conftest import Residual, make_linear, make_relu_mlp
from whylake.transforms.explainers import AttributionResult, pick_device
from whylake.transforms.explainers.chain import compile_chain
from whylake.transforms.explainers.device import resolve_device


def test_build_computes_error_and_freezes_arrays() -> None:
    values = np.array([[0.5, 0.25], [1.0, -1.0]])
    result = AttributionResult.build("x", values, np.array([1.0, 0.5]), np.array([0.3]), {"a": 1})
    np.testing.assert_allclose(result.error, [0.05, 0.2])
    np.testing.assert_allclose(result.base_value, [0.3, 0.3])
    with pytest.raises(ValueError):
        result.values[0, 0] = 9.0
    values[0, 0] = 9.0  # the caller's array is not the record's
    assert result.values[0, 0] == 0.5


def test_shapes_and_dtypes_are_checked() -> None:
    ok = np.zeros(2)
    with pytest.raises(ValueError, match="values must be"):
        AttributionResult("m", np.zeros(2), ok, ok, ok, {})
    with pytest.raises(ValueError, match="prediction must have shape"):
        AttributionResult("m", np.zeros((2, 3)), np.zeros(3), ok, ok, {})
    with pytest.raises(ValueError, match="float64"):
        AttributionResult("m", np.zeros((2, 3), np.float32), ok, ok, ok, {})


def test_pick_device() -> None:
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="unknown device"):
        pick_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            pick_device("cuda")


def test_resolve_device_follows_the_model() -> None:
    model = make_linear(3)
    assert resolve_device(model, None) == torch.device("cpu")
    assert resolve_device(lambda x: x.sum(1), None) == pick_device()
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match="map_location"):
            resolve_device(model, torch.device("cuda"))


def test_compile_chain_folds_standardisation_into_the_first_layer(
    rng: np.random.Generator,
) -> None:
    model = torch.jit.script(make_relu_mlp(d=6, hidden=8))
    chain = compile_chain(model, rng.normal(size=(10, 6)), torch.device("cpu"))
    assert chain is not None
    assert [tuple(layer.weight.shape) for layer in chain.layers] == [(8, 6), (8, 8), (1, 8)]
    assert [[a.name for a in layer.acts] for layer in chain.layers] == [
        ["relu"],
        ["relu"],
        ["sigmoid"],
    ]
    linear = compile_chain(torch.jit.script(make_linear(4)), np.zeros((2, 4)), torch.device("cpu"))
    assert linear is not None and linear.is_affine


def test_compile_chain_refuses_what_it_cannot_express(rng: np.random.Generator) -> None:
    probe = rng.normal(size=(4, 4))
    assert compile_chain(torch.jit.script(Residual(4).eval()), probe, torch.device("cpu")) is None
    assert compile_chain(lambda x: x.sum(1), probe, torch.device("cpu")) is None


def test_compiled_chain_is_rechecked_after_weights_change(rng: np.random.Generator) -> None:
    eager = make_relu_mlp()
    model = torch.jit.script(eager)
    probe = rng.normal(size=(5, 6))
    before = compile_chain(model, probe, torch.device("cpu"))
    with torch.no_grad():
        model.body[0].weight.mul_(2.0)
    after = compile_chain(model, probe, torch.device("cpu"))
    assert before is not None and after is not None and after is not before
    x = torch.as_tensor(probe, dtype=torch.float32)
    torch.testing.assert_close(after.forward(x), model(x), rtol=1e-5, atol=1e-6)
