"""Torch models: TorchScript (`torch.jit.save`) or an exported program (`torch.export.save`)."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from whylake.registry.kinds.base import KindFacts
from whylake.schemas.errors import UnsupportedArtifactError
from whylake.schemas.model_card import ModelCard

FORMATS = ("torchscript", "torch-export")


class TorchKind:
    """`torch.jit.load(path)` or `torch.export.load(path).module()` reads it back."""

    name = "torch"

    def detect(self, source: Path) -> str:
        if not source.is_file() or not zipfile.is_zipfile(source):
            raise UnsupportedArtifactError(
                f"{source} is not a TorchScript or torch.export archive (a zip file written by "
                "torch.jit.save or torch.export.save)"
            )
        with zipfile.ZipFile(source) as archive:
            names = archive.namelist()
        if any(n.endswith("serialized_exported_program.json") or "/models/" in n for n in names):
            return "torch-export"
        return "torchscript"

    def store(self, source: Path, fmt: str, target: Path) -> str:
        name = "model.pt2" if fmt == "torch-export" else "model.pt"
        shutil.copyfile(source, target / name)
        return name

    def load(self, path: Path, fmt: str) -> Any:
        import torch

        if fmt == "torch-export":
            module = torch.export.load(str(path)).module()
        else:
            module = torch.jit.load(str(path), map_location="cpu")
            module.eval()
        return module

    def facts(self, model: Any, fmt: str) -> KindFacts:
        return KindFacts(
            architecture=fmt,
            task=None,
            feature_names=None,
            explained_output="score",
            score_link="identity",
            differentiable=True,
        )

    def predict(self, model: Any, x: np.ndarray, card: ModelCard) -> np.ndarray:
        import torch

        with torch.no_grad():
            out = model(torch.as_tensor(np.asarray(x, dtype=np.float32)))
        return np.asarray(out.reshape(len(x)).double().numpy(), dtype=np.float64)


KIND = TorchKind()
