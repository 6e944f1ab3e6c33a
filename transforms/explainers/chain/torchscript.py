"""Read a TorchScript graph op by op into chain operations; nothing is guessed from names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from whylake.transforms.explainers.chain.ops import Activation, Elementwise


class Unsupported(Exception):
    """The graph does something a chain cannot express; the caller falls back to autograd."""


class _Data:
    """Marks the graph value that holds the rows being transformed (``version`` counts ops)."""

    def __init__(self, version: int) -> None:
        self.version = version


@dataclass(frozen=True)
class Dense:
    """``x @ weight.T + bias`` in float64 while the graph is read."""

    weight: np.ndarray
    bias: np.ndarray | None


@dataclass(frozen=True)
class Scale:
    """``x * scale + shift`` per feature, in float64, with the op that replays it exactly."""

    scale: np.ndarray | float
    shift: np.ndarray | float
    replay: Elementwise


@dataclass(frozen=True)
class Select:
    """Column ``index`` of the rows (e.g. one logit of several)."""

    index: int


Op = Dense | Scale | Select | Activation | None  # None: a reshape keeping one row per input

_MISSING = object()

_ELEMENTWISE_ACTS = {
    "aten::relu": "relu",
    "aten::sigmoid": "sigmoid",
    "aten::tanh": "tanh",
    "aten::silu": "silu",
}
_SHAPE_OPS = ("aten::squeeze", "aten::flatten", "aten::view", "aten::reshape", "aten::contiguous")


def read_graph(graph: torch._C.Graph, root: object) -> list[Op]:
    """Symbolically run a TorchScript graph on one data value and list the ops applied to it."""
    inputs = list(graph.inputs())
    if len(inputs) != 2:
        raise Unsupported("the model must take exactly one tensor")
    env: dict[int, object] = {inputs[0].unique(): root, inputs[1].unique(): _Data(0)}
    ops: list[Op] = []
    version = [0]
    _read_block(graph, env, ops, version)
    (out,) = list(graph.return_node().inputs())
    value = env.get(out.unique())
    if not isinstance(value, _Data) or value.version != version[0]:
        raise Unsupported("the graph does not return the transformed rows")
    return ops


def _read_block(block: Any, env: dict[int, object], ops: list[Op], version: list[int]) -> None:
    for node in block.nodes():
        kind = node.kind()
        ins = [env.get(v.unique(), _MISSING) for v in node.inputs()]
        outs = list(node.outputs())
        data_at = [i for i, v in enumerate(ins) if isinstance(v, _Data)]
        if kind == "prim::If" and not data_at:
            condition = ins[0]
            if not isinstance(condition, bool):
                raise Unsupported("branch on a value that is not a constant")
            taken = list(node.blocks())[0 if condition else 1]
            _read_block(taken, env, ops, version)
            for out, result in zip(outs, taken.outputs(), strict=True):
                env[out.unique()] = env.get(result.unique(), _MISSING)
            continue
        if not data_at:
            if kind == "prim::Constant":
                env[outs[0].unique()] = outs[0].toIValue()
            elif kind == "prim::GetAttr":
                env[outs[0].unique()] = getattr(ins[0], node.s("name"))
            elif kind in ("prim::ListConstruct", "prim::TupleConstruct"):
                env[outs[0].unique()] = list(ins)
            elif kind.startswith("aten::") and len(outs) == 1:
                # e.g. a weight transposed in forward(): evaluate it once, like a constant.
                env[outs[0].unique()] = _evaluate_constant(kind, ins)
            # Anything else not touching the rows stays unknown; using it on them fails below.
            continue
        current = ins[data_at[0]]
        if len(data_at) != 1 or not isinstance(current, _Data) or current.version != version[0]:
            raise Unsupported(f"{kind} combines the rows with an earlier copy of themselves")
        if any(v is _MISSING for v in ins):
            raise Unsupported(f"{kind} uses a value that is not a constant")
        in_place = kind.endswith("_") and not kind.endswith("__")
        ops.extend(_read_op(kind.rstrip("_") if in_place else kind, ins, data_at[0]))
        version[0] += 1
        for out in outs:
            env[out.unique()] = _Data(version[0])
        if in_place:
            # An in-place op also changed its input: that value now holds the new rows too.
            env[next(iter(node.inputs())).unique()] = _Data(version[0])


def _evaluate_constant(kind: str, ins: list[object]) -> object:
    """Run a pure aten op on known constants; unknown (``_MISSING``) when that is not possible."""
    if kind.endswith("_") or any(v is _MISSING or isinstance(v, torch.nn.Module) for v in ins):
        return _MISSING
    try:
        return getattr(torch.ops.aten, kind.removeprefix("aten::"))(*ins)
    except (RuntimeError, TypeError, AttributeError, ValueError):
        return _MISSING


def _read_op(kind: str, ins: list[Any], at: int) -> list[Op]:
    """Translate one op applied to the rows (argument ``at``) into chain ops."""
    if kind == "aten::linear" and at == 0:
        bias = None if ins[2] is None else _array(ins[2]).reshape(-1)
        return [Dense(_matrix(ins[1]), bias)]
    if kind in ("aten::matmul", "aten::mm") and at == 0:
        m = _array(ins[1])
        return [Dense(m[None, :] if m.ndim == 1 else m.T, None)]
    if kind == "aten::addmm" and at == 1:
        bias, m = _array(ins[0]).reshape(-1), _array(ins[2])
        return [Dense(float(ins[4]) * m.T, float(ins[3]) * bias)]
    if kind in ("aten::add", "aten::sub") and len(ins) == 3:
        other, alpha = _constant(ins[1 - at]), float(ins[2])
        sign = -1.0 if kind == "aten::sub" else 1.0
        replay = Elementwise(kind.removeprefix("aten::"), other, alpha, rows_first=at == 0)
        if at == 0:  # x + alpha * c  /  x - alpha * c
            return [Scale(1.0, sign * alpha * _array(other), replay)]
        return [Scale(sign * alpha, _array(other), replay)]  # c + alpha * x  /  c - alpha * x
    if kind == "aten::rsub" and at == 0 and len(ins) == 3:
        other, alpha = _constant(ins[1]), float(ins[2])
        return [Scale(-alpha, _array(other), Elementwise("rsub", other, alpha))]
    if kind == "aten::mul" and len(ins) == 2:
        other = _constant(ins[1 - at])
        return [Scale(_array(other), 0.0, Elementwise("mul", other, rows_first=at == 0))]
    if kind == "aten::div" and at == 0 and len(ins) == 2:
        other = _constant(ins[1])
        return [Scale(1.0 / _array(other), 0.0, Elementwise("div", other))]
    if kind == "aten::neg":
        return [Scale(-1.0, 0.0, Elementwise("neg"))]
    if kind == "aten::batch_norm" and at == 0 and ins[5] is False:
        weight, bias, mean, var, eps = ins[1], ins[2], ins[3], ins[4], float(ins[7])
        scale = 1.0 / np.sqrt(_array(var) + eps)
        if weight is not None:
            scale = scale * _array(weight)
        shift = -_array(mean) * scale + (0.0 if bias is None else _array(bias))
        replay = Elementwise(
            "scale_shift",
            torch.as_tensor(scale, dtype=torch.float32),
            shift=torch.as_tensor(shift, dtype=torch.float32),
        )
        return [Scale(scale, shift, replay)]
    if kind in _ELEMENTWISE_ACTS and len(ins) == 1:
        return [Activation(_ELEMENTWISE_ACTS[kind])]
    if kind == "aten::leaky_relu":
        return [Activation("leaky_relu", float(ins[1]))]
    if kind == "aten::gelu" and ins[1] == "none":
        return [Activation("gelu")]
    if kind == "aten::softplus" and float(ins[1]) == 1.0 and float(ins[2]) == 20.0:
        return [Activation("softplus")]
    if kind in ("aten::dropout", "aten::feature_dropout") and ins[2] is False:
        return []
    if kind == "aten::select" and at == 0 and ins[1] in (1, -1):
        return [Select(int(ins[2]))]
    if kind in _SHAPE_OPS and at == 0:
        return [None]
    raise Unsupported(f"op {kind} is not an affine map or a known elementwise activation")


def _constant(value: object) -> torch.Tensor | float:
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise Unsupported(f"expected a constant tensor or number, got {type(value).__name__}")


def _array(value: object) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", torch.float64).numpy()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return np.asarray(float(value))
    raise Unsupported(f"expected a constant tensor or number, got {type(value).__name__}")


def _matrix(value: object) -> np.ndarray:
    m = _array(value)
    if m.ndim != 2:
        raise Unsupported(f"linear weight must be 2-d, got {m.shape}")
    return m
