"""Embedded model registry: <root>/<tenant>/<model_id>/<version>/{artifact, card.json, ...}.

Versions are immutable: a version folder is written once, under a temporary name, and renamed
into place; registering the same source again is a no-op and other bytes under an existing
version are refused. The artifact's sha256 (a folder's: over its files' names and sha256s) is
in the card and in every explanation, and is checked on every load.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from whylake.registry.kinds import kind_for
from whylake.schemas.errors import ModelNotFoundError, RegistryIntegrityError, RegistryScopeError
from whylake.schemas.ids import check_model_id, check_model_version, check_tenant
from whylake.schemas.model_card import ModelCard


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, streamed."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_path(path: Path) -> str:
    """sha256 of a file; of a folder, of its sorted "relative path NUL file sha256" lines.

    A folder's digest changes when any file is added, removed, renamed or edited, and does not
    depend on file times or the order the file system lists them in.
    """
    if path.is_file():
        return sha256_file(path)
    lines = [
        f"{p.relative_to(path).as_posix()}\0{sha256_file(p)}\n"
        for p in sorted(path.rglob("*"))
        if p.is_file()
    ]
    return hashlib.sha256("".join(lines).encode()).hexdigest()


@dataclass(frozen=True)
class LoadedModel:
    """A model version ready to explain: card, the loaded model and reference rows."""

    card: ModelCard
    model: Any  # what the kind loads: a torch module, a Booster, an estimator, a TextModel
    reference_rows: np.ndarray  # (m, d) training rows: SHAP background, CF plausibility, MAD scale
    reference_scores: np.ndarray  # (m,) model scores on them (the logged score's units)
    reference_texts: tuple[str, ...] = ()  # text models: training texts

    @property
    def module(self) -> Any:
        """The loaded model (the name from when every model was a TorchScript module)."""
        return self.model


class ModelRegistry:
    """A folder per tenant / model / version; versions are immutable once written."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def _dir(self, tenant_id: str, model_id: str, version: str) -> Path:
        """The version's folder, only ever inside the tenant's own folder.

        The ids come from inference records, i.e. from producers: each must be one folder name
        by the id grammar (no separator, no `..`, bounded length), and the resolved path (after
        symlinks) must stay below <root>/<tenant>, so neither `../globex/progression` nor a
        symlink planted in the registry can reach another tenant's model, card or rows.

        Raises:
            InvalidIdError: an id breaks the grammar (schemas/ids.py).
            RegistryScopeError: the folder resolves outside <root>/<tenant>.
        """
        root = self.root.resolve()
        inside = root / check_tenant(tenant_id)
        target = inside / check_model_id(model_id) / check_model_version(version)
        resolved = target.resolve()
        # The tenant's folder may not itself be a link elsewhere (e.g. acme -> globex).
        if inside.resolve() != inside or not resolved.is_relative_to(inside):
            raise RegistryScopeError(
                f"model {tenant_id}/{model_id}/{version} resolves to {resolved}, outside the "
                f"tenant's registry folder {inside}"
            )
        return resolved

    @staticmethod
    def _check_card(card: ModelCard, tenant_id: str, model_id: str, version: str) -> ModelCard:
        """The card must name the tenant, model and version it was looked up by."""
        if (card.tenant_id, card.model_id, card.model_version) != (tenant_id, model_id, version):
            raise RegistryScopeError(
                f"the card at {tenant_id}/{model_id}/{version} is for "
                f"{card.tenant_id}/{card.model_id}/{card.model_version}: a record of tenant "
                f"{tenant_id!r} may only be explained with that tenant's own models"
            )
        return card

    def register(
        self,
        card: ModelCard,
        module: Any,
        reference_rows: np.ndarray,
        reference_scores: np.ndarray,
    ) -> ModelCard:
        """Register a torch module as TorchScript (the demo's and the tests' shortcut)."""
        import torch

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.pt"
            torch.jit.save(module, str(path))
            return self.register_artifact(
                replace(card, kind="torch", artifact_format="torchscript"),
                path,
                reference_rows,
                reference_scores,
            )

    def register_artifact(
        self,
        card: ModelCard,
        source: Path,
        reference_rows: np.ndarray,
        reference_scores: np.ndarray,
        reference_texts: tuple[str, ...] = (),
        source_sha256: str | None = None,
    ) -> ModelCard:
        """Store `source` in its kind's format under the card's version; return the final card.

        Re-registering the same source (same sha256) returns the card already there; any other
        source under an existing version raises RegistryIntegrityError.
        """
        target = self._dir(card.tenant_id, card.model_id, card.model_version)
        kind = kind_for(card.kind)
        source_sha = source_sha256 or sha256_path(source)
        if (target / "card.json").exists():
            existing = ModelCard.from_json((target / "card.json").read_text())
            if source_sha in (existing.source_sha256, existing.artifact_sha256):
                return existing
            raise RegistryIntegrityError(
                f"{card.tenant_id}/{card.model_id}/{card.model_version} already holds a different "
                "artifact; register the new model under a new version"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        self._dir(card.tenant_id, card.model_id, card.model_version)  # still inside once made
        staging = target.parent / f".{card.model_version}.{uuid.uuid4().hex}.tmp"
        staging.mkdir()
        try:
            artifact = kind.store(source, card.artifact_format, staging)
            sha = sha256_path(staging / artifact)
            card = replace(card, artifact=artifact, artifact_sha256=sha, source_sha256=source_sha)
            (staging / "card.json").write_text(card.to_json() + "\n")
            np.savez(
                staging / "reference.npz",
                rows=np.asarray(reference_rows, dtype=np.float64),
                scores=np.asarray(reference_scores, dtype=np.float64),
                texts=np.asarray(list(reference_texts), dtype=np.str_),
            )
            try:
                os.rename(staging, target)  # atomic: the version appears whole or not at all
            except OSError:
                if (target / "card.json").exists():  # another registrant won the race
                    return self.register_artifact(
                        card, source, reference_rows, reference_scores, reference_texts, source_sha
                    )
                raise
        finally:
            if staging.exists():
                shutil.rmtree(staging)
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
                "register it first (whylake models register, or make demo)"
            )
        card = ModelCard.from_json(card_path.read_text())
        return self._check_card(card, tenant_id, model_id, version)

    def load(self, tenant_id: str, model_id: str, version: str) -> LoadedModel:
        """Load a version and check the artifact still has the sha256 its card recorded."""
        target = self._dir(tenant_id, model_id, version)
        card = self.card(tenant_id, model_id, version)
        artifact = (target / card.artifact).resolve()
        if artifact.parent != target:
            raise RegistryScopeError(
                f"the card of {tenant_id}/{model_id}/{version} names artifact {card.artifact!r}, "
                "which is not a file of the version's own folder"
            )
        sha = sha256_path(artifact)
        if sha != card.artifact_sha256:
            raise RegistryIntegrityError(
                f"{artifact} has sha256 {sha} but its card records {card.artifact_sha256}"
            )
        model = kind_for(card.kind).load(artifact, card.artifact_format)
        with np.load(target / "reference.npz", allow_pickle=False) as ref:
            rows, scores = ref["rows"], ref["scores"]
            texts = tuple(str(t) for t in ref["texts"]) if "texts" in ref.files else ()
        return LoadedModel(card, model, rows, scores, texts)
