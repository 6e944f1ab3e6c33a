"""Hugging Face sequence classifiers from a `save_pretrained` folder, with their tokenizer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from whylake.registry.kinds.base import KindFacts
from whylake.schemas.errors import UnsupportedArtifactError
from whylake.schemas.model_card import ModelCard

FORMATS = ("hf-save-pretrained",)
# What a folder must hold: the config, the weights (safetensors only: a pickled
# pytorch_model.bin runs code when read) and a fast tokenizer (its char offsets are recorded).
_WEIGHTS = "model.safetensors"
_NEEDED = ("config.json", _WEIGHTS, "tokenizer.json")


class HFTextKind:
    """`AutoModelForSequenceClassification.from_pretrained(path)` + `AutoTokenizer` read it."""

    name = "hf-text"

    def detect(self, source: Path) -> str:
        missing = [n for n in _NEEDED if not (source / n).is_file()] if source.is_dir() else None
        if missing is None or missing:
            raise UnsupportedArtifactError(
                f"{source}: a text model must be a save_pretrained folder with {list(_NEEDED)} "
                f"(missing {missing or 'the folder'}): save the model with "
                "safe_serialization and the tokenizer with save_pretrained into it"
            )
        config = json.loads((source / "config.json").read_text())
        if config.get("auto_map"):
            raise UnsupportedArtifactError(
                f"{source}: its config maps to remote code (auto_map); whylake loads only "
                "architectures that ship with transformers"
            )
        return "hf-save-pretrained"

    def store(self, source: Path, fmt: str, target: Path) -> str:
        shutil.copytree(source, target / "checkpoint")
        return "checkpoint"

    def load(self, path: Path, fmt: str) -> Any:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a worker's log is no terminal

        model = AutoModelForSequenceClassification.from_pretrained(
            str(path), local_files_only=True, use_safetensors=True
        )
        model.eval()
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        if not tokenizer.is_fast:
            raise UnsupportedArtifactError(f"{path}: needs a fast tokenizer (tokenizer.json)")
        return TextModel(model, tokenizer)

    def facts(self, model: Any, fmt: str) -> KindFacts:
        config = model.model.config
        labels = int(config.num_labels)
        return KindFacts(
            architecture=(config.architectures or [type(model.model).__name__])[0],
            task="classification",
            feature_names=(),
            explained_output="logit",
            score_link="softmax",
            class_index=1 if labels == 2 else 0,
            differentiable=True,
        )

    def predict(self, model: Any, x: np.ndarray, card: ModelCard) -> np.ndarray:
        raise UnsupportedArtifactError("a text model is called on texts: use predict_texts")


class TextModel:
    """A sequence classifier and its tokenizer, loaded from one folder."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model = model
        self.tokenizer = tokenizer

    def probabilities(self, texts: list[str], class_index: int) -> np.ndarray:
        """p(class) per text, batched."""
        import torch

        out = np.empty(len(texts), dtype=np.float64)
        for start in range(0, len(texts), 64):
            batch = self.tokenizer(
                texts[start : start + 64], padding=True, truncation=True, return_tensors="pt"
            )
            device = next(self.model.parameters()).device
            with torch.no_grad():
                logits = self.model(**{k: v.to(device) for k, v in batch.items()}).logits
            p = torch.softmax(logits.double(), dim=-1)[:, class_index]
            out[start : start + len(p)] = p.cpu().numpy()
        return out


def predict_texts(model: TextModel, texts: list[str], card: ModelCard) -> np.ndarray:
    """The logged score of a text classifier: p(class_index) per text."""
    return model.probabilities(texts, card.class_index or 0)


KIND = HFTextKind()
