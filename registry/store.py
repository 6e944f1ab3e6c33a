"""Embedded model registry: <root>/<tenant>/<model_id>/<version>/{model.pt, card.json, ...}."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from whylake.schemas.errors import ModelNotFoundError, RegistryIntegrityError
from whylake.schemas.model_card import ModelCard


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, streamed."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class LoadedModel:
    """A model version ready to explain: card, TorchScript module and reference rows."""

    card: ModelCard
    module: torch.jit.ScriptModule
    reference_rows: np.ndarray  # (m, d) training rows: SHAP background, CF plausibility, MAD scale
    reference_scores: np.ndarray  # (m,) model scores on them


class ModelRegistry:
    """A folder per tenant / model / version; versions are immutable once written."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def _dir(self, tenant_id: str, model_id: str, version: str) -> Path:
        return self.root / tenant_id / model_id / version

    def register(
        self,
        card: ModelCard,
        module: torch.jit.ScriptModule,
        reference_rows: np.ndarray,
        reference_scores: np.ndarray,
    ) -> ModelCard:
        """Write a version; re-registering identical bytes is a no-op, different bytes an error."""
        target = self._dir(card.tenant_id, card.model_id, card.model_version)
        target.mkdir(parents=True, exist_ok=True)
        tmp = target / (card.artifact + ".tmp")
        torch.jit.save(module, str(tmp))
        sha = sha256_file(tmp)
        artifact = target / card.artifact
        if artifact.exists() and sha256_file(artifact) != sha:
            tmp.unlink()
            raise RegistryIntegrityError(
                f"{card.tenant_id}/{card.model_id}/{card.model_version} already holds a different "
                "artifact; register the new model under a new version"
            )
        os.replace(tmp, artifact)
        card = replace(card, artifact_sha256=sha)
        (target / "card.json").write_text(card.to_json() + "\n")
        np.savez(
            target / "reference.npz",
            rows=np.asarray(reference_rows, dtype=np.float64),
            scores=np.asarray(reference_scores, dtype=np.float64),
        )
        return card

    def versions(self) -> list[tuple[str, str, str]]:
        """Every (tenant, model_id, version) registered."""
        return sorted(
            (p.parts[-4], p.parts[-3], p.parts[-2]) for p in self.root.glob("*/*/*/card.json")
        )

    def card(self, tenant_id: str, model_id: str, version: str) -> ModelCard:
        """Just the model card (cheap: no artifact is loaded)."""
        card_path = self._dir(tenant_id, model_id, version) / "card.json"
        if not card_path.exists():
            raise ModelNotFoundError(
                f"no model {tenant_id}/{model_id}/{version} in registry {self.root}; "
                "register it first (make demo registers the demo models)"
            )
        return ModelCard.from_json(card_path.read_text())

    def load(self, tenant_id: str, model_id: str, version: str) -> LoadedModel:
        """Load a version and check the artifact still has the sha256 its card recorded."""
        target = self._dir(tenant_id, model_id, version)
        card = self.card(tenant_id, model_id, version)
        artifact = target / card.artifact
        sha = sha256_file(artifact)
        if sha != card.artifact_sha256:
            raise RegistryIntegrityError(
                f"{artifact} has sha256 {sha} but its card records {card.artifact_sha256}"
            )
        module = torch.jit.load(str(artifact), map_location="cpu")
        module.eval()
        with np.load(target / "reference.npz", allow_pickle=False) as ref:
            rows, scores = ref["rows"], ref["scores"]
        return LoadedModel(card=card, module=module, reference_rows=rows, reference_scores=scores)
