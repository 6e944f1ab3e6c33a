"""XGBoost boosters in their native JSON / UBJSON formats (`Booster.save_model`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from whylake.registry.kinds.base import KindFacts
from whylake.schemas.errors import UnsupportedArtifactError
from whylake.schemas.model_card import ModelCard

FORMATS = ("xgboost-json", "xgboost-ubj")
# Objectives whose raw margin is the log-odds of the positive class.
_LOGISTIC = ("binary:logistic", "binary:logitraw", "reg:logistic")


class XGBoostKind:
    """`xgboost.Booster(model_file=path)` reads it back."""

    name = "xgboost"

    def detect(self, source: Path) -> str:
        if source.is_file() and source.suffix == ".json":
            return "xgboost-json"
        if source.is_file() and source.suffix == ".ubj":
            return "xgboost-ubj"
        raise UnsupportedArtifactError(
            f"{source}: an XGBoost model must be saved with Booster.save_model('model.json') "
            "(or .ubj); pickled boosters are not portable across versions"
        )

    def store(self, source: Path, fmt: str, target: Path) -> str:
        name = "model.json" if fmt == "xgboost-json" else "model.ubj"
        shutil.copyfile(source, target / name)
        return name

    def load(self, path: Path, fmt: str) -> Any:
        import xgboost

        booster = xgboost.Booster()
        booster.load_model(str(path))
        return booster

    def facts(self, model: Any, fmt: str) -> KindFacts:
        objective = json.loads(model.save_config())["learner"]["objective"]["name"]
        classify = objective.startswith(("binary:", "multi:"))
        if objective.startswith("multi:"):
            raise UnsupportedArtifactError(
                f"XGBoost objective {objective}: multi-class boosters are not supported yet; "
                "register a one-vs-rest binary booster per class"
            )
        names = tuple(model.feature_names) if model.feature_names else None
        return KindFacts(
            architecture=f"xgboost.Booster ({objective})",
            task="classification" if classify else "regression",
            feature_names=names,
            explained_output="log_odds" if objective in _LOGISTIC else "score",
            score_link="logistic" if objective in _LOGISTIC else "identity",
        )

    def predict(self, model: Any, x: np.ndarray, card: ModelCard) -> np.ndarray:
        import xgboost

        matrix = xgboost.DMatrix(np.asarray(x, dtype=np.float64), feature_names=_names(model, card))
        return np.asarray(model.predict(matrix, output_margin=True), dtype=np.float64).reshape(-1)


def _names(model: Any, card: ModelCard) -> list[str] | None:
    """The booster's own feature names (it checks them), or none if it was trained without."""
    return list(card.feature_names) if model.feature_names else None


KIND = XGBoostKind()
