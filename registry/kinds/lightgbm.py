"""LightGBM boosters in their native text format (`Booster.save_model('model.txt')`)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from whylake.registry.kinds.base import KindFacts
from whylake.schemas.errors import UnsupportedArtifactError
from whylake.schemas.model_card import ModelCard

FORMATS = ("lightgbm-text",)


class LightGBMKind:
    """`lightgbm.Booster(model_file=path)` reads it back."""

    name = "lightgbm"

    def detect(self, source: Path) -> str:
        if source.is_file():
            with source.open("rb") as fh:
                head = fh.read(64)
            if head.startswith(b"tree\n") or head.startswith(b"tree\r\n"):
                return "lightgbm-text"
        raise UnsupportedArtifactError(
            f"{source}: a LightGBM model must be its text format (Booster.save_model('model.txt'))"
        )

    def store(self, source: Path, fmt: str, target: Path) -> str:
        shutil.copyfile(source, target / "model.txt")
        return "model.txt"

    def load(self, path: Path, fmt: str) -> Any:
        import lightgbm

        return lightgbm.Booster(model_file=str(path))

    def facts(self, model: Any, fmt: str) -> KindFacts:
        objective = str(model.dump_model(num_iteration=1).get("objective", ""))
        if objective.startswith(("multiclass", "multiclassova")):
            raise UnsupportedArtifactError(
                f"LightGBM objective {objective}: multi-class boosters are not supported yet"
            )
        binary = objective.startswith(("binary", "cross_entropy"))
        return KindFacts(
            architecture=f"lightgbm.Booster ({objective.split()[0] if objective else '?'})",
            task="classification" if binary else "regression",
            feature_names=tuple(model.feature_name()),
            explained_output="log_odds" if binary else "score",
            score_link="logistic" if binary else "identity",
        )

    def predict(self, model: Any, x: np.ndarray, card: ModelCard) -> np.ndarray:
        out = model.predict(np.asarray(x, dtype=np.float64), raw_score=True)
        return np.asarray(out, dtype=np.float64).reshape(-1)


KIND = LightGBMKind()
