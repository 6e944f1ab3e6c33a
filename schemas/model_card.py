"""The model card: what a registered model takes, returns and how it is explained."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from whylake.schemas.errors import ConfigError

# "category": an integer-coded categorical column (the inference record's features are numbers);
# its codes are the card's `levels`, and a counterfactual only moves it between them.
FEATURE_TYPES = ("float", "int", "bool", "onehot", "category")
# The kind names the portable format the artifact is stored in and so the library that loads
# it (and explains it): each has a module in whylake.registry.kinds.
MODEL_KINDS = ("torch", "sklearn", "xgboost", "lightgbm", "hf-text")
# Cards written before model kinds existed named the torch architecture as their kind.
LEGACY_TORCH_KINDS = ("mlp", "linear")
TASKS = ("classification", "regression")
# What the attributions explain: the probability / score the producer logs, or the model's raw
# margin (log-odds for a binary booster, as `pred_contribs` returns it; a class logit for text).
EXPLAINED_OUTPUTS = ("score", "probability", "log_odds", "logit")
# How the explained output maps to the score the producer logs (for `score_drift`).
SCORE_LINKS = ("identity", "logistic", "softmax")


@dataclass(frozen=True)
class FeatureSpec:
    """One input column, in the order the model takes it."""

    name: str
    type: str = "float"
    lower: float | None = None  # None = unbounded (kept JSON-portable, unlike inf)
    upper: float | None = None
    immutable: bool = False
    monotone: int = 0  # +1: counterfactuals may only increase it, -1: only decrease, 0: free
    group: str | None = None  # one-hot categorical group name
    levels: tuple[float, ...] | None = None  # the codes of a "category" column

    def __post_init__(self) -> None:
        if self.type not in FEATURE_TYPES:
            raise ConfigError(f"feature {self.name!r}: type {self.type!r} not in {FEATURE_TYPES}")
        if self.lower is not None and self.upper is not None and self.lower > self.upper:
            raise ConfigError(f"feature {self.name!r}: lower {self.lower} > upper {self.upper}")
        if self.monotone not in (-1, 0, 1):
            raise ConfigError(f"feature {self.name!r}: monotone must be -1, 0 or 1")
        if self.levels is not None:
            object.__setattr__(self, "levels", tuple(float(v) for v in self.levels))
        if self.type == "category" and not self.levels:
            raise ConfigError(f"feature {self.name!r}: a category needs its levels (codes)")


@dataclass(frozen=True)
class ModelCard:
    """Everything an explainer and an auditor need to know about one model version."""

    tenant_id: str
    model_id: str
    model_version: str
    kind: str
    task: str
    features: tuple[FeatureSpec, ...]
    baseline: tuple[float, ...]
    baseline_kind: str
    output_name: str
    output_description: str
    artifact: str = "model.pt"
    artifact_sha256: str = ""
    decision_threshold: float | None = None
    positive_class: str | None = None
    negative_class: str | None = None
    training: dict[str, Any] = field(default_factory=dict)
    # What the artifact is inside its kind: "mlp", "linear", "xgboost.Booster",
    # "sklearn.pipeline.Pipeline", "BertForSequenceClassification", ...
    architecture: str | None = None
    artifact_format: str = "torchscript"
    explained_output: str = "score"
    score_link: str = "identity"
    class_index: int | None = None  # the class whose output is explained (classifiers, text)
    source: str | None = None  # where it was registered from, e.g. mlflow:models:/credit-gbm/3
    # sha256 of what the registrant gave (a joblib file converted to skops, an MLflow model
    # folder): registering the same source again is a no-op, another one under the version fails.
    source_sha256: str = ""

    def __post_init__(self) -> None:
        if self.kind in LEGACY_TORCH_KINDS:
            # A card from before model kinds: a TorchScript module of that architecture.
            object.__setattr__(self, "architecture", self.architecture or self.kind)
            object.__setattr__(self, "kind", "torch")
        if self.kind not in MODEL_KINDS:
            raise ConfigError(f"model kind {self.kind!r} not in {MODEL_KINDS}")
        if self.task not in TASKS:
            raise ConfigError(f"task {self.task!r} not in {TASKS}")
        if not self.features and not self.is_text:
            raise ConfigError("a model card needs at least one feature")
        if self.is_text and self.features:
            raise ConfigError("a text model takes the record's text, not named features")
        if len(self.baseline) != len(self.features):
            raise ConfigError(
                f"baseline has {len(self.baseline)} values for {len(self.features)} features"
            )
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise ConfigError(f"duplicate feature names in {names}")
        if self.explained_output not in EXPLAINED_OUTPUTS:
            raise ConfigError(
                f"explained_output {self.explained_output!r} not in {EXPLAINED_OUTPUTS}"
            )
        if self.score_link not in SCORE_LINKS:
            raise ConfigError(f"score_link {self.score_link!r} not in {SCORE_LINKS}")

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    @property
    def is_text(self) -> bool:
        """A text model explains the record's `text`, token by token."""
        return self.kind == "hf-text"

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelCard:
        raw = json.loads(text)
        raw["features"] = tuple(FeatureSpec(**f) for f in raw["features"])
        raw["baseline"] = tuple(float(b) for b in raw["baseline"])
        return cls(**raw)
