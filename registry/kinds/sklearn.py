"""scikit-learn estimators and pipelines, stored with skops (never unpickled on a worker).

Why skops over pickle/joblib: unpickling runs whatever code the file names, so a model file is
a program; skops stores the estimator's state as data and refuses, on load, any type not on a
trust list (here: scikit-learn's, numpy's and scipy's own). A joblib/pickle file is accepted at
registration only: it is loaded once, on the machine that registers it, and converted to
skops, so workers only ever read skops. Its sha256 (`training.source_sha256`) is what makes a
re-registration of the same file a no-op (skops archives carry write times in their zip
entries, so the converted bytes differ from one conversion to the next).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from whylake.registry.kinds.base import KindFacts
from whylake.schemas.errors import UnsupportedArtifactError
from whylake.schemas.model_card import ModelCard

FORMATS = ("skops", "joblib")
_TRUSTED_PREFIXES = ("sklearn.", "numpy.", "scipy.", "builtins.", "collections.")


class SklearnKind:
    """`skops.io.load(path, trusted=...)` reads it back."""

    name = "sklearn"

    def detect(self, source: Path) -> str:
        if source.is_file() and source.suffix == ".skops":
            return "skops"
        if source.is_file() and source.suffix in (".joblib", ".pkl", ".pickle"):
            return "joblib"
        raise UnsupportedArtifactError(
            f"{source}: a scikit-learn model must be a .skops file (skops.io.dump) or a "
            ".joblib / .pkl file (converted to skops at registration)"
        )

    def store(self, source: Path, fmt: str, target: Path) -> str:
        if fmt == "skops":
            self.load(source, fmt)  # refuses untrusted types before anything is kept
            shutil.copyfile(source, target / "model.skops")
        else:
            import joblib
            import skops.io

            # The one place a pickle is opened: the registrant's own file, on their machine.
            skops.io.dump(joblib.load(source), target / "model.skops")
        return "model.skops"

    def load(self, path: Path, fmt: str) -> Any:
        import skops.io

        untrusted = skops.io.get_untrusted_types(file=path)
        foreign = [t for t in untrusted if not t.startswith(_TRUSTED_PREFIXES)]
        if foreign:
            raise UnsupportedArtifactError(
                f"{path} holds types outside scikit-learn, numpy and scipy: {foreign}; "
                "whylake loads only those (a skops file of other types could run their code)"
            )
        return skops.io.load(path, trusted=untrusted)

    def facts(self, model: Any, fmt: str) -> KindFacts:
        classify = hasattr(model, "predict_proba")
        names = getattr(model, "feature_names_in_", None)
        classes = list(getattr(model, "classes_", []))
        if classify and len(classes) != 2:
            raise UnsupportedArtifactError(
                f"{type(model).__name__} has {len(classes)} classes; only binary classifiers "
                "and regressors are supported yet"
            )
        return KindFacts(
            architecture=_describe(model),
            task="classification" if classify else "regression",
            feature_names=tuple(str(n) for n in names) if names is not None else None,
            explained_output="probability" if classify else "score",
            score_link="identity",
            class_index=1 if classify else None,
        )

    def predict(self, model: Any, x: np.ndarray, card: ModelCard) -> np.ndarray:
        rows = _frame(model, np.asarray(x, dtype=np.float64), card)
        if card.task == "classification":
            column = card.class_index if card.class_index is not None else 1
            return np.asarray(model.predict_proba(rows)[:, column], dtype=np.float64)
        return np.asarray(model.predict(rows), dtype=np.float64).reshape(-1)


def _frame(model: Any, x: np.ndarray, card: ModelCard) -> Any:
    """A DataFrame with the training column names where the estimator was fitted on one."""
    if getattr(model, "feature_names_in_", None) is None:
        return x
    import pandas as pd

    return pd.DataFrame(x, columns=list(card.feature_names))


def _describe(model: Any) -> str:
    name = f"{type(model).__module__.split('.')[0]}.{type(model).__name__}"
    steps = getattr(model, "steps", None)
    if steps:
        return f"{name}({', '.join(type(s).__name__ for _, s in steps)})"
    return name


def tree_model(model: Any) -> Any | None:
    """The tree ensemble shap's TreeExplainer can read exactly, if `model` is one."""
    tree_types = (
        "RandomForest",
        "ExtraTrees",
        "GradientBoosting",
        "DecisionTree",
        "IsolationForest",
    )
    name = type(model).__name__
    return model if any(name.startswith(t) for t in tree_types) else None


KIND = SklearnKind()
