"""Register a model of any kind: detect its format, infer its card, store it immutably."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from whylake.registry.card_inference import infer_inputs
from whylake.registry.kinds import kind_for, to_score
from whylake.registry.store import ModelRegistry, sha256_path
from whylake.schemas.errors import ConfigError
from whylake.schemas.ids import check_model_id, check_model_version, check_tenant
from whylake.schemas.model_card import ModelCard

# Metrics are measured on at most this many training rows (registration stays quick).
_METRIC_ROWS = 5000


@dataclass(frozen=True)
class Registration:
    """What `whylake models register` was told."""

    tenant_id: str
    model_id: str
    model_version: str
    kind: str
    artifact: Path
    sample: pd.DataFrame
    target: str | None = None
    immutable: tuple[str, ...] = ()
    output_name: str | None = None
    output_description: str | None = None
    decision_threshold: float | None = None
    source: str | None = None  # e.g. mlflow:models:/credit-gbm/3 (run ...)
    text_column: str = "text"
    seed: int = 0

    def __post_init__(self) -> None:
        check_tenant(self.tenant_id)
        check_model_id(self.model_id)
        check_model_version(self.model_version)
        if not self.artifact.exists():
            raise ConfigError(f"--artifact {self.artifact} does not exist")
        if len(self.sample) == 0:
            raise ConfigError("the training sample is empty")


def register_model(registry: ModelRegistry, request: Registration) -> ModelCard:
    """Detect, load (with the kind's library alone), describe and store one model version."""
    kind = kind_for(request.kind)
    fmt = kind.detect(request.artifact)
    source_sha = sha256_path(request.artifact)
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / kind.store(request.artifact, fmt, Path(tmp))
        fmt = "skops" if fmt == "joblib" else fmt  # what store() wrote
        model = kind.load(staged, fmt)
        facts = kind.facts(model, fmt)
        inputs = infer_inputs(
            request.sample,
            facts,
            target=request.target,
            immutable=request.immutable,
            text_column=request.text_column,
            seed=request.seed,
            text=request.kind == "hf-text",
        )
        classify = inputs.task == "classification"
        output_name = request.output_name or (
            f"p_{request.target}" if classify and request.target else (request.target or "score")
        )
        draft = ModelCard(
            tenant_id=request.tenant_id,
            model_id=request.model_id,
            model_version=request.model_version,
            kind=request.kind,
            task=inputs.task,
            features=inputs.features,
            baseline=inputs.baseline,
            baseline_kind=inputs.baseline_kind,
            output_name=output_name,
            output_description=request.output_description
            or f"{output_name} as {facts.architecture} computes it",
            artifact=staged.name,
            artifact_format=fmt,
            architecture=facts.architecture,
            explained_output=facts.explained_output,
            score_link=facts.score_link,
            class_index=facts.class_index,
            decision_threshold=request.decision_threshold
            if request.decision_threshold is not None
            else (0.5 if classify else None),
            source=request.source,
        )
        scores = score_rows(model, draft, inputs.reference_rows, inputs.reference_texts)
        metrics = _metrics(model, draft, request)
        card = ModelCard(
            **{
                **draft.__dict__,
                "decision_threshold": draft.decision_threshold
                if draft.decision_threshold is not None
                else float(np.median(scores)),
                "training": {"rows": inputs.rows, "seed": request.seed, **metrics},
            }
        )
        return registry.register_artifact(
            card,
            staged,
            inputs.reference_rows,
            scores,
            inputs.reference_texts,
            source_sha256=source_sha,
        )


def score_rows(
    model: Any, card: ModelCard, rows: np.ndarray, texts: Sequence[str] = ()
) -> np.ndarray:
    """The model's score in the units the producer logs (probability for classifiers)."""
    if card.is_text:
        from whylake.registry.kinds.hf_text import predict_texts

        return predict_texts(model, list(texts), card)
    return to_score(kind_for(card.kind).predict(model, rows, card), card.score_link)


def _metrics(model: Any, card: ModelCard, request: Registration) -> dict[str, float]:
    """Accuracy (classifiers) or R^2 (regressors) on the training sample, when it has labels."""
    if request.target is None:
        return {}
    sample = request.sample.iloc[:_METRIC_ROWS]
    y = sample[request.target].to_numpy(dtype=np.float64)
    if card.is_text:
        scores = score_rows(model, card, np.zeros((0, 0)), list(sample[request.text_column]))
    else:
        scores = score_rows(model, card, sample[list(card.feature_names)].to_numpy(np.float64))
    if card.task == "classification":
        threshold = card.decision_threshold if card.decision_threshold is not None else 0.5
        return {"accuracy": float(((scores > threshold) == (y > 0.5)).mean())}
    resid = scores - y
    return {"r2": float(1 - (resid**2).sum() / max(((y - y.mean()) ** 2).sum(), 1e-300))}
