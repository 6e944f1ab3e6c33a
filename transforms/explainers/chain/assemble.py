"""Compile a model into a verified chain, or report that it is not one (autograd then)."""

from __future__ import annotations

import threading
import warnings
import weakref

import numpy as np
import torch

from whylake.transforms.explainers.chain.ops import Activation, Chain, Elementwise, Layer
from whylake.transforms.explainers.chain.torchscript import (
    Op,
    Scale,
    Select,
    Unsupported,
    read_graph,
)
from whylake.transforms.explainers.model_calls import forward_scalar, place

_CHAIN_CACHE: weakref.WeakKeyDictionary[object, dict[tuple[str, int], Chain | None]] = (
    weakref.WeakKeyDictionary()
)
_CHAIN_LOCK = threading.Lock()


def compile_chain(model: object, probe: np.ndarray, device: torch.device) -> Chain | None:
    """The model as a verified :class:`Chain` on ``device``, or ``None`` when it is not one.

    Args:
        model: a ``torch.jit.ScriptModule`` (its graph is read) or an ``nn.Module`` (traced on
            ``probe`` first); any other callable gives ``None``.
        probe: ``(n, d)`` rows in raw units, e.g. the rows about to be explained; the chain must
            reproduce the model's output on them to float32 rounding or it is rejected.
        device: where the chain's tensors live.
    """
    if not isinstance(model, torch.nn.Module):
        return None
    key = (str(device), int(probe.shape[1]))
    with _CHAIN_LOCK:
        cached = _CHAIN_CACHE.get(model, {})
    if key in cached:
        chain = cached[key]
        # Re-checked on every call: cheap, and it catches weights edited in place since.
        if chain is None or _reproduces(model, chain, probe, device):
            return chain
    chain = _build_chain(model, probe, device)
    with _CHAIN_LOCK:
        _CHAIN_CACHE.setdefault(model, {})[key] = chain
    return chain


def _build_chain(model: torch.nn.Module, probe: np.ndarray, device: torch.device) -> Chain | None:
    try:
        if isinstance(model, torch.jit.ScriptModule):
            graph, root = model.inlined_graph, model
        else:
            # Tracing calls the model: through the placement helper, like every other call.
            example = place(model, torch.as_tensor(probe[:8], dtype=torch.float32, device=device))
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                root = torch.jit.trace(model, example, check_trace=False)  # type: ignore[no-untyped-call]
            graph = root.inlined_graph
        ops = read_graph(graph, root)
        chain = _assemble(ops, probe.shape[1], device)
    except Unsupported:
        return None
    except (RuntimeError, TypeError, ValueError, AttributeError, IndexError):
        # Tracing or reading a graph we do not understand: not a chain, use autograd.
        return None
    return chain if _reproduces(model, chain, probe, device) else None


def _reproduces(model: object, chain: Chain, probe: np.ndarray, device: torch.device) -> bool:
    """Whether the chain gives the model's outputs on the probe rows, to float32 rounding."""
    rows = torch.as_tensor(probe[:256], dtype=torch.float32, device=device)
    with torch.no_grad():
        try:
            want = forward_scalar(model, rows)
        except ValueError:
            return False
        got = chain.forward(rows)
    # Composing affine maps in float64 changes the rounding, not the function: a wrong reading
    # of the graph is off by orders of magnitude more than this.
    scale = max(1.0, float(want.abs().max()))
    return bool((got - want).abs().max() <= 1e-5 * scale)


def _assemble(ops: list[Op], d: int, device: torch.device) -> Chain:
    """Replay the input prelude, fold later affine ops into matrices, attach the activations."""
    prelude: list[Elementwise] = []
    weights: list[np.ndarray] = []
    biases: list[np.ndarray] = []
    acts: list[list[Activation]] = []
    width = d
    for op in ops:
        if op is None:
            continue
        if isinstance(op, Activation):
            if not weights:
                raise Unsupported("an activation on the raw inputs")
            acts[-1].append(op)
            continue
        if isinstance(op, Scale):
            if not weights:
                _per_feature(op.scale, width)  # refuses constants that are not per feature
                _per_feature(op.shift, width)
                prelude.append(op.replay.to(device))
                continue
            # Elementwise x * scale + shift; both must broadcast along the feature axis only.
            w = np.diag(_per_feature(op.scale, width))
            b = _per_feature(op.shift, width)
        elif isinstance(op, Select):
            if not -width <= op.index < width:
                raise Unsupported(f"select of column {op.index} from width {width}")
            w = np.zeros((1, width))
            w[0, op.index] = 1.0
            b = np.zeros(1)
        else:
            w = op.weight
            if w.shape[1] != width:
                raise Unsupported(f"a {w.shape} weight after width {width}")
            b = np.zeros(w.shape[0]) if op.bias is None else op.bias
        if weights and not acts[-1]:
            # Two affine maps in a row are one: compose them (in float64, cast once at the end).
            biases[-1] = w @ biases[-1] + b
            weights[-1] = w @ weights[-1]
        else:
            weights.append(w)
            biases.append(np.broadcast_to(b, (w.shape[0],)).astype(np.float64))
            acts.append([])
        width = w.shape[0]
    if not weights or width != 1:
        raise Unsupported("the model does not end in a single output")
    layers = tuple(
        Layer(
            torch.as_tensor(w, dtype=torch.float32, device=device).contiguous(),
            torch.as_tensor(b, dtype=torch.float32, device=device).contiguous(),
            tuple(a),
        )
        for w, b, a in zip(weights, biases, acts, strict=True)
    )
    return Chain(tuple(prelude), layers)


def _per_feature(value: object, width: int) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim > 2 or (arr.ndim == 2 and arr.shape[0] != 1):
        raise Unsupported(f"a constant of shape {arr.shape} is not per feature")
    arr = arr.reshape(-1)
    if arr.shape[0] not in (1, width):
        raise Unsupported(f"a constant of {arr.shape[0]} values for {width} features")
    return np.broadcast_to(arr, (width,)).astype(np.float64)
