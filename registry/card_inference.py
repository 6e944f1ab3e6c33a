"""A model card inferred from a training sample: features, types, bounds, levels, baseline."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from whylake.registry.kinds.base import KindFacts
from whylake.schemas.errors import ConfigError
from whylake.schemas.model_card import FeatureSpec

# An integer column with at most this many distinct values is read as categorical codes.
MAX_CATEGORY_LEVELS = 12
# Reference rows kept with the version: the SHAP background, CF plausibility, MAD scale.
REFERENCE_ROWS = 200


@dataclass(frozen=True)
class InferredInputs:
    """What the training sample says about the model's inputs."""

    features: tuple[FeatureSpec, ...]
    baseline: tuple[float, ...]
    baseline_kind: str
    reference_rows: np.ndarray
    reference_texts: tuple[str, ...]
    target: np.ndarray | None  # the labels / targets of the reference rows
    task: str
    rows: int


def infer_inputs(
    sample: pd.DataFrame,
    facts: KindFacts,
    *,
    target: str | None,
    immutable: Sequence[str] = (),
    text_column: str = "text",
    seed: int = 0,
    text: bool = False,
) -> InferredInputs:
    """Features in the model's order, typed and bounded from `sample`, and reference rows.

    The order is the artifact's own when it names its inputs (boosters, fitted pipelines),
    else the sample's column order without the target. A column is `bool` when it holds only
    0/1, `category` when it holds at most MAX_CATEGORY_LEVELS distinct integers (its codes are
    its levels, and a counterfactual moves only between them), `int` for other integers and
    `float` otherwise. The baseline is the training mean (a category's most frequent code).

    Raises:
        ConfigError: the sample lacks a feature the model takes, holds non-numeric features,
            or names an immutable feature the model does not take.
    """
    if target is not None and target not in sample.columns:
        raise ConfigError(f"--target {target!r} is not a column of the training sample")
    rng = np.random.default_rng(seed)
    picks = np.sort(rng.choice(len(sample), size=min(REFERENCE_ROWS, len(sample)), replace=False))
    labels = None if target is None else sample[target].to_numpy()
    task = facts.task or _task_of(labels)
    if text:
        if text_column not in sample.columns:
            raise ConfigError(f"a text model's training sample needs a {text_column!r} column")
        texts = tuple(str(t) for t in sample[text_column].iloc[picks])
        return InferredInputs(
            (),
            (),
            "pad tokens (the tokenizer's [PAD], keeping its special tokens)",
            np.zeros((len(picks), 0)),
            texts,
            None if labels is None else labels[picks],
            task,
            len(sample),
        )
    names = list(facts.feature_names or [c for c in sample.columns if c != target])
    missing = [n for n in names if n not in sample.columns]
    if missing:
        raise ConfigError(f"the training sample lacks features the model takes: {missing}")
    unknown = [n for n in immutable if n not in names]
    if unknown:
        raise ConfigError(f"--immutable names features the model does not take: {unknown}")
    features, baseline = [], []
    for name in names:
        column = sample[name]
        if column.dtype == bool:
            column = column.astype(np.int64)
        if not pd.api.types.is_numeric_dtype(column):
            raise ConfigError(
                f"feature {name!r} is {column.dtype}; inference records carry numbers: code it "
                "as integers (a category) before training"
            )
        values = column.to_numpy(dtype=np.float64)
        if not np.isfinite(values).all():
            raise ConfigError(f"feature {name!r} has missing or non-finite training values")
        spec, base = _feature(name, values, name in immutable)
        features.append(spec)
        baseline.append(base)
    rows = sample[names].to_numpy(dtype=np.float64)[picks]
    return InferredInputs(
        tuple(features),
        tuple(baseline),
        "training mean (most frequent code for categories)",
        rows,
        (),
        None if labels is None else labels[picks],
        task,
        len(sample),
    )


def _feature(name: str, values: np.ndarray, immutable: bool) -> tuple[FeatureSpec, float]:
    lower, upper = float(values.min()), float(values.max())
    integral = bool(np.all(values == np.round(values)))
    levels = np.unique(values)
    if integral and set(levels.tolist()) <= {0.0, 1.0}:
        kind, spec_levels = "bool", None
    elif integral and len(levels) <= MAX_CATEGORY_LEVELS:
        kind, spec_levels = "category", tuple(float(v) for v in levels)
    else:
        kind, spec_levels = ("int" if integral else "float"), None
    if kind in ("bool", "category"):
        codes, counts = np.unique(values, return_counts=True)
        base = float(codes[np.argmax(counts)])
    else:
        base = float(values.mean())
    spec = FeatureSpec(
        name=name, type=kind, lower=lower, upper=upper, immutable=immutable, levels=spec_levels
    )
    return spec, base


def _task_of(labels: np.ndarray | None) -> str:
    if labels is None:
        raise ConfigError(
            "the artifact does not say whether it classifies or regresses: give --target"
        )
    return "classification" if len(np.unique(labels)) <= 2 else "regression"


def read_sample(path: str) -> pd.DataFrame:
    """A training sample from Parquet or CSV."""
    if path.endswith(".parquet"):
        return pd.read_parquet(path)
    if path.endswith(".csv"):
        return pd.read_csv(path)
    raise ConfigError(f"--train-sample {path!r}: give a .parquet or .csv file")
