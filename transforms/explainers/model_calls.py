"""Every model call of the explainers: placed on the model's device, checked, in fixed blocks.

Each call an explainer makes goes through :func:`place` (torch inputs) or :func:`place_rows`
(numpy inputs): a model that lives on ``cuda`` gets its inputs there, whichever device the
caller built them on. A model may define ``place_input`` / ``place_rows`` itself (the model
adapters do; the device-guard test wraps every kind with hooks that refuse anything else).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from whylake.transforms.explainers.device import model_device

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


def place(model: object, x: torch.Tensor) -> torch.Tensor:
    """``x`` on the device the model computes on (a no-op, and autograd-transparent, if there).

    A tensor built on the CPU for a model on ``cuda`` would fail the call; moving it here is
    what keeps every explainer correct on a GPU whatever device its caller used.
    """
    hook = getattr(model, "place_input", None)
    if hook is not None:
        placed: torch.Tensor = hook(x)
        return placed
    device = model_device(model)
    if device is None or x.device == device:
        return x
    return x.to(device)


def place_rows(model: object, rows: np.ndarray) -> np.ndarray:
    """Host rows as the model takes them (numpy models read host memory; a hook may move them)."""
    hook = getattr(model, "place_rows", None)
    if hook is not None:
        placed: np.ndarray = hook(rows)
        return placed
    return rows


def predict_rows(model: Any, rows: np.ndarray) -> np.ndarray:
    """A numpy model's explained output on ``(n, d)`` rows as float64 ``(n,)``."""
    out = np.asarray(model.predict_rows(place_rows(model, rows)), dtype=np.float64)
    return out.reshape(rows.shape[0])


def forward_scalar(model: object, x: torch.Tensor) -> torch.Tensor:
    """Run ``model`` on ``(N, d)`` rows (placed on its device) and return ``(N,)`` outputs.

    Raises:
        ValueError: the model returns anything but one number per row.
    """
    out = model(place(model, x))  # type: ignore[operator]
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


class NumpyModel(torch.nn.Module):
    """A model that takes numpy rows (a booster, a scikit-learn pipeline) as a torch callable.

    It has no gradient: explainers that need one (IG, the gradient counterfactual search) see
    its outputs as constants, and the counterfactual search falls back to its gradient-free
    path. ``output`` maps the model's explained output to what the caller searches on (e.g.
    log-odds to a probability).
    """

    def __init__(
        self,
        model: Any,
        output: Callable[[np.ndarray], np.ndarray] | None = None,
        device: torch.device | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.output = output
        self.device = device or torch.device("cpu")

    def place_input(self, x: torch.Tensor) -> torch.Tensor:
        return x if x.device == self.device else x.to(self.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.detach().to("cpu", torch.float64).numpy()
        out = predict_rows(self.model, rows)
        if self.output is not None:
            out = self.output(out)
        return torch.as_tensor(out, dtype=torch.float32, device=x.device)
