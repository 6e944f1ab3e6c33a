"""The model card: what a registered model takes, returns and how it is explained."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from whylake.schemas.errors import ConfigError

FEATURE_TYPES = ("float", "int", "bool", "onehot")
MODEL_KINDS = ("mlp", "linear")
TASKS = ("classification", "regression")


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

    def __post_init__(self) -> None:
        if self.type not in FEATURE_TYPES:
            raise ConfigError(f"feature {self.name!r}: type {self.type!r} not in {FEATURE_TYPES}")
        if self.lower is not None and self.upper is not None and self.lower > self.upper:
            raise ConfigError(f"feature {self.name!r}: lower {self.lower} > upper {self.upper}")
        if self.monotone not in (-1, 0, 1):
            raise ConfigError(f"feature {self.name!r}: monotone must be -1, 0 or 1")


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

    def __post_init__(self) -> None:
        if self.kind not in MODEL_KINDS:
            raise ConfigError(f"model kind {self.kind!r} not in {MODEL_KINDS}")
        if self.task not in TASKS:
            raise ConfigError(f"task {self.task!r} not in {TASKS}")
        if not self.features:
            raise ConfigError("a model card needs at least one feature")
        if len(self.baseline) != len(self.features):
            raise ConfigError(
                f"baseline has {len(self.baseline)} values for {len(self.features)} features"
            )
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise ConfigError(f"duplicate feature names in {names}")

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelCard:
        raw = json.loads(text)
        raw["features"] = tuple(FeatureSpec(**f) for f in raw["features"])
        raw["baseline"] = tuple(float(b) for b in raw["baseline"])
        return cls(**raw)
