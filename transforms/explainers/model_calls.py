"""Every model call of the explainers: eval-mode checks, fixed-size blocks, one scalar per row."""

from __future__ import annotations

import numpy as np
import torch

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
