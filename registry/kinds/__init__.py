"""Model kinds: one module per portable format (torch, sklearn, xgboost, lightgbm, hf-text).

MLflow is a source, not a format: `registry.kinds.mlflow` downloads a registered model and
hands its flavor's files to one of these kinds.
"""

from __future__ import annotations

from whylake.registry.kinds.base import KindFacts, ModelKind, to_score
from whylake.schemas.errors import UnsupportedArtifactError


def kind_for(name: str) -> ModelKind:
    """The kind of that name (imported on first use: each pulls in its own library)."""
    import importlib

    modules = {
        "torch": "torch",
        "sklearn": "sklearn",
        "xgboost": "xgboost",
        "lightgbm": "lightgbm",
        "hf-text": "hf_text",
    }
    if name not in modules:
        raise UnsupportedArtifactError(f"model kind {name!r} is not one of {sorted(modules)}")
    module = importlib.import_module(f"whylake.registry.kinds.{modules[name]}")
    kind: ModelKind = module.KIND
    return kind


__all__ = ["KindFacts", "ModelKind", "kind_for", "to_score"]
