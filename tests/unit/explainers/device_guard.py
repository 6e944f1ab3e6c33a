"""Wrappers that make a model refuse any input that did not reach it through model_calls.

No GPU is lent to this project's tests, so a model on another device is simulated: the guard's
``place_input`` / ``place_rows`` hooks (which :func:`model_calls.place` and
:func:`model_calls.place_rows` call) mark what they hand over, and every call of the model
checks the mark. A call site that builds its own tensor and feeds it to the model - what put a
CPU tensor into a ``cuda`` model before - raises :class:`DeviceMismatchError` here on the CPU.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from whylake.transforms.explainers.device import model_device
from whylake.transforms.explainers.model_calls import place, place_rows


class DeviceMismatchError(AssertionError):
    """A model was called with an input that was not placed on its device."""


class _Placed(torch.Tensor):
    """A tensor handed over by the placement helper."""


class _PlacedRows(np.ndarray):
    """Host rows handed over by the placement helper."""


def _check_tensor(x: object, what: str) -> torch.Tensor:
    if not isinstance(x, _Placed):
        raise DeviceMismatchError(f"{what} was called with a {type(x).__name__} not placed by it")
    return x.as_subclass(torch.Tensor)


def _check_rows(rows: object, what: str) -> np.ndarray:
    if not isinstance(rows, _PlacedRows):
        raise DeviceMismatchError(f"{what} was called with rows not placed by model_calls")
    return np.asarray(rows).view(np.ndarray)


class GuardedModule(torch.nn.Module):
    """A torch callable (TorchScript, eager, NumpyModel) that only takes placed inputs."""

    def __init__(self, inner: Any) -> None:
        super().__init__()
        self.inner = inner
        self.device = model_device(inner) or torch.device("cpu")

    def place_input(self, x: torch.Tensor) -> torch.Tensor:
        return place(self.inner, x).as_subclass(_Placed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.inner(_check_tensor(x, "the model"))
        return out


class GuardedRows:
    """A numpy model (a booster, a pipeline) that only takes placed rows."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.device = getattr(inner, "device", torch.device("cpu"))
        self.library = getattr(inner, "library", None)

    def place_rows(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(place_rows(self.inner, rows)).view(_PlacedRows)

    def predict_rows(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self.inner.predict_rows(_check_rows(rows, "predict_rows")))

    def contributions(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self.inner.contributions(_check_rows(rows, "contributions")))

    def explain_rows(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        contrib, margin = self.inner.explain_rows(_check_rows(rows, "explain_rows"))
        return np.asarray(contrib), np.asarray(margin)


class GuardedText:
    """A TextClassifier whose embedding and logits calls only take placed tensors."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.tokenizer = inner.tokenizer
        self.max_length = inner.max_length

    @property
    def device(self) -> torch.device:
        return self.inner.device  # type: ignore[no-any-return]

    def place_input(self, x: torch.Tensor) -> torch.Tensor:
        return place(self.inner, x).as_subclass(_Placed)

    def encode(self, texts: list[str]) -> dict[str, Any]:
        return self.inner.encode(texts)  # type: ignore[no-any-return]

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.inner.embed(_check_tensor(ids, "embed"))  # type: ignore[no-any-return]

    def logits(self, embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.inner.logits(  # type: ignore[no-any-return]
            _check_tensor(embeds, "logits"), _check_tensor(mask, "logits")
        )
