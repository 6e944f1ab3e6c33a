"""The interface every model kind implements: detect, load, describe and call its artifact."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from whylake.schemas.model_card import ModelCard


@dataclass(frozen=True)
class KindFacts:
    """What a loaded artifact says about itself, for the card inferred at registration."""

    architecture: str
    task: str | None  # None: the artifact does not say (the training sample decides)
    feature_names: tuple[str, ...] | None  # None: the artifact does not name its inputs
    explained_output: str
    score_link: str
    class_index: int | None = None
    differentiable: bool = False


class ModelKind(Protocol):
    """One portable model format and the library that reads it.

    `store` copies (or converts) what the user gave into the version folder; `load` reads it
    back with the format's own library only, so anyone can load the artifact without whylake.
    """

    name: str

    def detect(self, source: Path) -> str:
        """The artifact format of `source` (raise UnsupportedArtifactError if it is none)."""
        ...

    def store(self, source: Path, fmt: str, target: Path) -> str:
        """Write the artifact into the folder `target`; return its file or folder name."""
        ...

    def load(self, path: Path, fmt: str) -> Any:
        """The model object, loaded with the format's own library."""
        ...

    def facts(self, model: Any, fmt: str) -> KindFacts:
        """What the artifact says about its task, inputs and outputs."""
        ...

    def predict(self, model: Any, x: np.ndarray, card: ModelCard) -> np.ndarray:
        """The explained output on `(n, d)` raw rows as float64 `(n,)` (text: see hf_text)."""
        ...


def to_score(explained: np.ndarray, link: str) -> np.ndarray:
    """The explained output in the units the producer logs (e.g. log-odds -> probability)."""
    out = np.asarray(explained, dtype=np.float64)
    if link == "logistic":
        return np.asarray(1.0 / (1.0 + np.exp(-out)), dtype=np.float64)
    return out


def logit(p: float) -> float:
    """log(p / (1 - p)), clipped so a threshold of 0 or 1 stays finite."""
    q = min(max(p, 1e-12), 1 - 1e-12)
    return math.log(q / (1 - q))
