"""The chain's operations: affine layers and elementwise activations, as plain tensors.

Most registered models (an MLP behind an input standardisation, a linear or logistic model)
are such a chain. Reading its weights once lets the explainers run a hand-written forward and
input-gradient backward (IG) or DeepLIFT multipliers (SHAP) as a few large matmuls, without
autograd and without module hooks - which TorchScript refuses.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


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
