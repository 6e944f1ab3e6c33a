"""Run models for the explainers: pick the device, feed rows, and read simple nets as tensors."""

from __future__ import annotations

import threading
import warnings
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

_KNOWN = ("cpu", "cuda")


def pick_device(prefer: str | None = None) -> torch.device:
    """Return ``cuda`` when it is available, else ``cpu``; ``prefer`` forces one of them.

    Args:
        prefer: ``None`` to choose automatically, or ``"cpu"`` / ``"cuda"`` (``"cuda:1"`` also
            accepted) to force a device.

    Raises:
        ValueError: ``prefer`` names an unknown device, or asks for CUDA on a machine without it.
    """
    if prefer is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(prefer)
    except RuntimeError as err:
        raise ValueError(f"unknown device {prefer!r}: use one of {_KNOWN} or None") from err
    if device.type not in _KNOWN:
        raise ValueError(f"unknown device {prefer!r}: use one of {_KNOWN} or None")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {prefer!r} was asked for but CUDA is not available on this machine "
                "(torch.cuda.is_available() is False): pass prefer=None or 'cpu'"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {prefer!r} was asked for but only {torch.cuda.device_count()} CUDA "
                "device(s) exist"
            )
    return device


def model_device(model: object) -> torch.device | None:
    """The device of the model's first parameter or buffer; ``None`` for a parameter-free one."""
    if isinstance(model, torch.nn.Module):
        for tensor in model.parameters():
            return tensor.device
        for buffer in model.buffers():
            return buffer.device
    return None


def resolve_device(model: object, device: torch.device | None) -> torch.device:
    """The device to explain on: the one asked for, else the model's own, else :func:`pick_device`.

    Raises:
        ValueError: the model's weights live on another device than the one asked for (moving a
            caller's model behind its back would change it for every other user of the object).
    """
    own = model_device(model)
    if device is None:
        return own if own is not None else pick_device()
    device = torch.device(device)
    if own is not None and not _same_device(own, device):
        raise ValueError(
            f"the model's weights are on {own} but device={device} was asked for: load the model "
            f"there (torch.jit.load(path, map_location={str(device)!r})) or pass device={own}"
        )
    return device


def _same_device(a: torch.device, b: torch.device) -> bool:
    if a.type != b.type:
        return False
    if a.type == "cuda":
        index_a = a.index if a.index is not None else torch.cuda.current_device()
        index_b = b.index if b.index is not None else torch.cuda.current_device()
        return index_a == index_b
    return True


# Layers whose output depends on train/eval mode; explaining them in training mode would make
# the attributions random (dropout) or batch-dependent (batch norm).
_MODE_DEPENDENT = ("Dropout", "BatchNorm", "InstanceNorm", "AlphaDropout")


def check_eval_mode(model: object) -> None:
    """Refuse a model in training mode that has layers whose output depends on the mode.

    Raises:
        ValueError: the model (or a submodule) is in training mode and contains dropout or
            normalisation layers.
    """
    if not isinstance(model, torch.nn.Module):
        return
    for name, module in model.named_modules():
        kind = getattr(module, "original_name", type(module).__name__)
        if module.training and any(tag in kind for tag in _MODE_DEPENDENT):
            raise ValueError(
                f"module {name or '<root>'} ({kind}) is in training mode, so attributions would "
                "be random or batch-dependent: call model.eval() before explaining"
            )


def forward_scalar(model: object, x: torch.Tensor) -> torch.Tensor:
    """Run ``model`` on ``(N, d)`` rows and return its scalar output as ``(N,)``.

    Raises:
        ValueError: the model returns anything but one number per row.
    """
    out = model(x)  # type: ignore[operator]
    if not isinstance(out, torch.Tensor):
        raise ValueError(f"the model must return a tensor, got {type(out).__name__}")
    n = x.shape[0]
    if out.shape not in ((n,), (n, 1)):
        raise ValueError(
            f"the model must map (n, d) to (n,) or (n, 1) - one explained scalar per row - but "
            f"returned shape {tuple(out.shape)} for {n} rows: wrap it to select the output "
            "to explain"
        )
    return out.reshape(n)


def as_rows(array: np.ndarray, name: str, d: int | None = None) -> np.ndarray:
    """``array`` as a finite ``(n, d)`` float64 matrix; a single ``(d,)`` row becomes ``(1, d)``.

    Raises:
        ValueError: wrong rank, wrong width, empty, or non-finite values.
    """
    arr = np.asarray(array, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty (n, d) array, got shape {arr.shape}")
    if d is not None and arr.shape[1] != d:
        raise ValueError(f"{name} has {arr.shape[1]} features but the inputs have {d}")
    if not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise ValueError(f"{name} has a non-finite value at row {bad[0]}, column {bad[1]}")
    return arr


def fixed_block(rows: np.ndarray, start: int, size: int, device: torch.device) -> torch.Tensor:
    """Rows ``start:start + size`` as a fresh float32 tensor of exactly ``size`` rows.

    A short last block is padded with copies of its last row (computed, then dropped). Every
    pass then has the same shape and an aligned buffer, so BLAS picks the same kernels for a
    call whatever the batch size. It narrows, but does not remove, the dependence of a row's
    low-order bits on its batch: BLAS tiles by row offset, so a row can move by float32
    rounding (~1e-9 here) with its position. Identical calls are always bit-identical.
    """
    chunk = np.asarray(rows[start : start + size], dtype=np.float32)
    block = torch.empty((size, rows.shape[1]), dtype=torch.float32)
    block[: chunk.shape[0]] = torch.from_numpy(chunk)
    if chunk.shape[0] < size:
        block[chunk.shape[0] :] = block[chunk.shape[0] - 1]
    return block.to(device)


def predict_numpy(
    model: object, rows: np.ndarray, device: torch.device, batch_rows: int = 256
) -> np.ndarray:
    """The model's float32 output on ``rows`` as float64 numpy, in fixed blocks, no autograd."""
    out = np.empty(rows.shape[0], dtype=np.float64)
    with torch.no_grad():
        for start in range(0, rows.shape[0], batch_rows):
            y = forward_scalar(model, fixed_block(rows, start, batch_rows, device))
            stop = min(rows.shape[0], start + batch_rows)
            out[start:stop] = y[: stop - start].detach().to("cpu", torch.float64).numpy()
    return out


# --------------------------------------------------------------------------------------------
# Compiled chains: a model that is affine maps and elementwise activations, as plain tensors.
#
# Most registered models (an MLP behind an input standardisation, a linear or logistic model)
# are such a chain. Reading its weights once lets the explainers run a hand-written forward and
# input-gradient backward (IG) or DeepLIFT multipliers (SHAP) as a few large matmuls, without
# autograd and without module hooks - which TorchScript refuses. The TorchScript graph is read
# op by op (nothing is guessed from module names), and every compiled chain is checked against
# the model's own output before it is used; anything else falls back to autograd.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Activation:
    """An elementwise nonlinearity with the derivative the explainers need."""

    name: str
    slope: float = 0.0  # leaky_relu's negative slope

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        if self.name == "relu":
            return torch.relu(z)
        if self.name == "leaky_relu":
            return torch.nn.functional.leaky_relu(z, self.slope)
        if self.name == "sigmoid":
            return torch.sigmoid(z)
        if self.name == "tanh":
            return torch.tanh(z)
        if self.name == "softplus":
            return torch.nn.functional.softplus(z)
        if self.name == "silu":
            return torch.nn.functional.silu(z)
        if self.name == "gelu":
            return torch.nn.functional.gelu(z)
        raise AssertionError(self.name)

    def backward(self, grad: torch.Tensor, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """``grad * act'(z)``, with autograd's fused backward kernels where torch has one."""
        out: torch.Tensor
        if self.name == "relu":
            # a > 0 exactly where z > 0, so the output stands in for the input.
            out = torch.ops.aten.threshold_backward(grad, a, 0.0)
        elif self.name == "sigmoid":
            out = torch.ops.aten.sigmoid_backward(grad, a)
        elif self.name == "tanh":
            out = torch.ops.aten.tanh_backward(grad, a)
        else:
            out = grad * self.derivative(z, a)
        return out

    def derivative(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """d act / d z at pre-activation ``z`` with output ``a`` (autograd's convention at 0)."""
        if self.name == "relu":
            return (z > 0).to(z.dtype)
        if self.name == "leaky_relu":
            return torch.where(z > 0, 1.0, self.slope).to(z.dtype)
        if self.name == "sigmoid":
            return a * (1.0 - a)
        if self.name == "tanh":
            return 1.0 - a * a
        if self.name == "softplus":
            # torch's softplus is the identity above threshold 20, slope exactly 1 there.
            return torch.where(z > 20.0, 1.0, torch.sigmoid(z)).to(z.dtype)
        if self.name == "silu":
            s = torch.sigmoid(z)
            return s * (1.0 + z * (1.0 - s))
        if self.name == "gelu":
            cdf = 0.5 * (1.0 + torch.erf(z * 0.7071067811865476))
            pdf = torch.exp(-0.5 * z * z) * 0.3989422804014327
            return cdf + z * pdf
        raise AssertionError(self.name)


@dataclass(frozen=True)
class Elementwise:
    """One elementwise affine op on the raw inputs (e.g. ``(x - mean) / std``), replayed as is.

    The ops in front of the first layer are not folded into its weights but replayed with the
    model's own float32 constants, so the chain computes the model's first-layer input bit for
    bit; attributions are then taken against that input, which keeps additivity at the float32
    rounding of the model rather than of a re-associated product.
    """

    op: str  # "add", "sub", "rsub", "mul", "div", "neg", "scale_shift"
    other: torch.Tensor | float = 0.0
    alpha: float = 1.0
    rows_first: bool = True  # the rows are the op's first operand
    shift: torch.Tensor | float = 0.0  # for "scale_shift" (an eval-mode batch norm)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.op == "add":
            if self.rows_first:
                return torch.add(x, self.other, alpha=self.alpha)
            return torch.add(self.other, x, alpha=self.alpha)
        if self.op == "sub":
            if self.rows_first:
                return torch.sub(x, self.other, alpha=self.alpha)
            return torch.sub(self.other, x, alpha=self.alpha)
        if self.op == "rsub":
            return torch.rsub(x, self.other, alpha=self.alpha)
        if self.op == "mul":
            return torch.mul(x, self.other) if self.rows_first else torch.mul(self.other, x)
        if self.op == "div":
            return torch.div(x, self.other)
        if self.op == "neg":
            return torch.neg(x)
        if self.op == "scale_shift":
            return torch.add(torch.mul(x, self.other), self.shift)
        raise AssertionError(self.op)

    def to(self, device: torch.device) -> Elementwise:
        """The same op with its tensor constants on ``device``."""

        def move(value: torch.Tensor | float) -> torch.Tensor | float:
            if isinstance(value, torch.Tensor):
                return value.detach().to(device)
            return value

        return Elementwise(self.op, move(self.other), self.alpha, self.rows_first, move(self.shift))


@dataclass(frozen=True)
class Layer:
    """``acts(x @ weight.T + bias)``: one affine map and the activations that follow it."""

    weight: torch.Tensor  # (out, in) float32 on the explaining device
    bias: torch.Tensor  # (out,)
    acts: tuple[Activation, ...]


@dataclass(frozen=True)
class Chain:
    """A model read as an input prelude, then ``Layer`` s; the last layer has one output."""

    prelude: tuple[Elementwise, ...]
    layers: tuple[Layer, ...]

    @property
    def is_affine(self) -> bool:
        """True when the whole model is one affine map (a linear model)."""
        return len(self.layers) == 1 and not self.layers[0].acts

    def first_input(self, x: torch.Tensor) -> torch.Tensor:
        """What the first layer sees: the prelude (e.g. standardisation) applied to raw rows.

        The prelude is elementwise affine, so differences of its outputs are the raw
        differences times a constant, and attributions taken against them need no conversion.
        """
        for op in self.prelude:
            x = op(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The model output ``(N,)`` for float32 rows ``(N, d)``."""
        x = self.first_input(x)
        for layer in self.layers:
            x = torch.addmm(layer.bias, x, layer.weight.T)
            for act in layer.acts:
                x = act(x)
        return x.reshape(-1)


class _Unsupported(Exception):
    """The graph does something a chain cannot express; the caller falls back to autograd."""


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
            example = torch.as_tensor(probe[:8], dtype=torch.float32, device=device)
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                root = torch.jit.trace(model, example, check_trace=False)  # type: ignore[no-untyped-call]
            graph = root.inlined_graph
        ops = _read_graph(graph, root)
        chain = _assemble(ops, probe.shape[1], device)
    except _Unsupported:
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


class _Data:
    """Marks the graph value that holds the rows being transformed (``version`` counts ops)."""

    def __init__(self, version: int) -> None:
        self.version = version


@dataclass(frozen=True)
class _Dense:
    """``x @ weight.T + bias`` in float64 while the graph is read."""

    weight: np.ndarray
    bias: np.ndarray | None


@dataclass(frozen=True)
class _Scale:
    """``x * scale + shift`` per feature, in float64, with the op that replays it exactly."""

    scale: np.ndarray | float
    shift: np.ndarray | float
    replay: Elementwise


@dataclass(frozen=True)
class _Select:
    """Column ``index`` of the rows (e.g. one logit of several)."""

    index: int


_Op = _Dense | _Scale | _Select | Activation | None  # None: a reshape keeping one row per input

_MISSING = object()

_ELEMENTWISE_ACTS = {
    "aten::relu": "relu",
    "aten::sigmoid": "sigmoid",
    "aten::tanh": "tanh",
    "aten::silu": "silu",
}
_SHAPE_OPS = ("aten::squeeze", "aten::flatten", "aten::view", "aten::reshape", "aten::contiguous")


def _read_graph(graph: torch._C.Graph, root: object) -> list[_Op]:
    """Symbolically run a TorchScript graph on one data value and list the ops applied to it."""
    inputs = list(graph.inputs())
    if len(inputs) != 2:
        raise _Unsupported("the model must take exactly one tensor")
    env: dict[int, object] = {inputs[0].unique(): root, inputs[1].unique(): _Data(0)}
    ops: list[_Op] = []
    version = [0]
    _read_block(graph, env, ops, version)
    (out,) = list(graph.return_node().inputs())
    value = env.get(out.unique())
    if not isinstance(value, _Data) or value.version != version[0]:
        raise _Unsupported("the graph does not return the transformed rows")
    return ops


def _read_block(block: Any, env: dict[int, object], ops: list[_Op], version: list[int]) -> None:
    for node in block.nodes():
        kind = node.kind()
        ins = [env.get(v.unique(), _MISSING) for v in node.inputs()]
        outs = list(node.outputs())
        data_at = [i for i, v in enumerate(ins) if isinstance(v, _Data)]
        if kind == "prim::If" and not data_at:
            condition = ins[0]
            if not isinstance(condition, bool):
                raise _Unsupported("branch on a value that is not a constant")
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
            raise _Unsupported(f"{kind} combines the rows with an earlier copy of themselves")
        if any(v is _MISSING for v in ins):
            raise _Unsupported(f"{kind} uses a value that is not a constant")
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


def _read_op(kind: str, ins: list[Any], at: int) -> list[_Op]:
    """Translate one op applied to the rows (argument ``at``) into chain ops."""
    if kind == "aten::linear" and at == 0:
        bias = None if ins[2] is None else _array(ins[2]).reshape(-1)
        return [_Dense(_matrix(ins[1]), bias)]
    if kind in ("aten::matmul", "aten::mm") and at == 0:
        m = _array(ins[1])
        return [_Dense(m[None, :] if m.ndim == 1 else m.T, None)]
    if kind == "aten::addmm" and at == 1:
        bias, m = _array(ins[0]).reshape(-1), _array(ins[2])
        return [_Dense(float(ins[4]) * m.T, float(ins[3]) * bias)]
    if kind in ("aten::add", "aten::sub") and len(ins) == 3:
        other, alpha = _constant(ins[1 - at]), float(ins[2])
        sign = -1.0 if kind == "aten::sub" else 1.0
        replay = Elementwise(kind.removeprefix("aten::"), other, alpha, rows_first=at == 0)
        if at == 0:  # x + alpha * c  /  x - alpha * c
            return [_Scale(1.0, sign * alpha * _array(other), replay)]
        return [_Scale(sign * alpha, _array(other), replay)]  # c + alpha * x  /  c - alpha * x
    if kind == "aten::rsub" and at == 0 and len(ins) == 3:
        other, alpha = _constant(ins[1]), float(ins[2])
        return [_Scale(-alpha, _array(other), Elementwise("rsub", other, alpha))]
    if kind == "aten::mul" and len(ins) == 2:
        other = _constant(ins[1 - at])
        return [_Scale(_array(other), 0.0, Elementwise("mul", other, rows_first=at == 0))]
    if kind == "aten::div" and at == 0 and len(ins) == 2:
        other = _constant(ins[1])
        return [_Scale(1.0 / _array(other), 0.0, Elementwise("div", other))]
    if kind == "aten::neg":
        return [_Scale(-1.0, 0.0, Elementwise("neg"))]
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
        return [_Scale(scale, shift, replay)]
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
        return [_Select(int(ins[2]))]
    if kind in _SHAPE_OPS and at == 0:
        return [None]
    raise _Unsupported(f"op {kind} is not an affine map or a known elementwise activation")


def _constant(value: object) -> torch.Tensor | float:
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise _Unsupported(f"expected a constant tensor or number, got {type(value).__name__}")


def _array(value: object) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", torch.float64).numpy()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return np.asarray(float(value))
    raise _Unsupported(f"expected a constant tensor or number, got {type(value).__name__}")


def _matrix(value: object) -> np.ndarray:
    m = _array(value)
    if m.ndim != 2:
        raise _Unsupported(f"linear weight must be 2-d, got {m.shape}")
    return m


def _assemble(ops: list[_Op], d: int, device: torch.device) -> Chain:
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
                raise _Unsupported("an activation on the raw inputs")
            acts[-1].append(op)
            continue
        if isinstance(op, _Scale):
            if not weights:
                _per_feature(op.scale, width)  # refuses constants that are not per feature
                _per_feature(op.shift, width)
                prelude.append(op.replay.to(device))
                continue
            # Elementwise x * scale + shift; both must broadcast along the feature axis only.
            w = np.diag(_per_feature(op.scale, width))
            b = _per_feature(op.shift, width)
        elif isinstance(op, _Select):
            if not -width <= op.index < width:
                raise _Unsupported(f"select of column {op.index} from width {width}")
            w = np.zeros((1, width))
            w[0, op.index] = 1.0
            b = np.zeros(1)
        else:
            w = op.weight
            if w.shape[1] != width:
                raise _Unsupported(f"a {w.shape} weight after width {width}")
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
        raise _Unsupported("the model does not end in a single output")
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
        raise _Unsupported(f"a constant of shape {arr.shape} is not per feature")
    arr = arr.reshape(-1)
    if arr.shape[0] not in (1, width):
        raise _Unsupported(f"a constant of {arr.shape[0]} values for {width} features")
    return np.broadcast_to(arr, (width,)).astype(np.float64)
