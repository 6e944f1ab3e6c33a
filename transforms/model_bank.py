"""The explain stage's worker state: models loaded once per worker, explained a group at a time."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import numpy as np

from whylake.registry.store import LoadedModel, ModelRegistry
from whylake.schemas.secrets import Secret
from whylake.transforms.explainers.config import ExplainConfig
from whylake.transforms.explainers.device import pick_device
from whylake.transforms.explanation_records import (
    Computed,
    RecordContext,
    assemble_records,
    feature_matrix,
    library_versions,
)
from whylake.transforms.sampling.policy import SamplingPolicies

Row = dict[str, Any]
ModelKey = tuple[str, str, str]  # (tenant, model id, version)


class ModelBank:
    """The models a worker has loaded, one per (tenant, model, version), loaded on first use."""

    def __init__(
        self,
        registry_root: str,
        config: ExplainConfig,
        policies: SamplingPolicies,
        hash_key: Secret,
        device: str | None = None,
    ) -> None:
        self.registry = ModelRegistry(registry_root)
        self.config = config
        self.policies = policies
        self.hash_key = hash_key
        self.device = pick_device(device)
        self._models: dict[ModelKey, LoadedModel] = {}
        self._versions = json.dumps(library_versions(), sort_keys=True)

    def model(self, key: ModelKey) -> LoadedModel:
        if key not in self._models:
            loaded = self.registry.load(*key)
            # The explainers run where the model lives: move it to this worker's device once.
            self._models[key] = replace(loaded, module=loaded.module.to(self.device))
        return self._models[key]

    def explain(self, rows: Iterable[Row], run_id: str) -> list[Row]:
        """Explain rows grouped by model; a group that fails yields error rows, not a crash."""
        groups: dict[ModelKey, list[Row]] = defaultdict(list)
        for row in rows:
            groups[(row["tenant_id"], row["model_id"], row["model_version"])].append(row)
        ctx = RecordContext(run_id, self.config, str(self.device), self._versions, self.hash_key)
        out: list[Row] = []
        for key, group in groups.items():
            try:
                model = self.model(key)
                x = feature_matrix(group, model.card.feature_names)
                out.extend(assemble_records(model, group, x, self._compute(model, group, x), ctx))
            except Exception as exc:  # noqa: BLE001 - each row goes to the dead letters with it
                out.extend({"_error": exc, "_row": row} for row in group)
        return out

    def _compute(self, model: LoadedModel, rows: list[Row], x: np.ndarray) -> Computed:
        from whylake.transforms.explainers.integrated_gradients import integrated_gradients
        from whylake.transforms.explainers.stability import attribution_stability

        card, cfg = model.card, self.config
        baseline = np.asarray(card.baseline, dtype=np.float64)
        ig = integrated_gradients(
            model.module, x, baseline, steps=cfg.ig_steps, device=self.device, rule=cfg.ig_rule
        )
        stability = attribution_stability(
            model.module,
            x,
            self._stability_baselines(model, baseline),
            steps=cfg.ig_steps,
            top_k=cfg.stability_top_k,
            device=self.device,
        )
        shap = None
        if cfg.shap:
            from whylake.transforms.explainers.shap_values import shap_attributions

            background = model.reference_rows[: cfg.shap_background]
            shap = shap_attributions(
                model.module, x, background, kind="auto", seed=cfg.seed, device=self.device
            )
        return Computed(ig, stability, shap, self._counterfactuals(model, rows, x))

    def _stability_baselines(self, model: LoadedModel, baseline: np.ndarray) -> np.ndarray:
        """The card's baseline plus seeded reference rows: how much does the choice matter?"""
        ref = model.reference_rows
        rng = np.random.default_rng(self.config.seed)
        picks = rng.choice(
            len(ref), size=min(self.config.stability_baselines, len(ref)), replace=False
        )
        return np.vstack([baseline[None, :], np.median(ref, axis=0)[None, :], ref[picks]])

    def _counterfactuals(
        self, model: LoadedModel, rows: list[Row], x: np.ndarray
    ) -> dict[int, tuple[str, list[Row] | None]]:
        """Counterfactuals for the rows whose tenant policy asks for them."""
        if not self.config.counterfactuals:
            return {}
        wanted = [
            i
            for i, row in enumerate(rows)
            if self.policies.policy_for(row["tenant_id"]).wants_counterfactuals(
                row["sampling_reason"], row.get("flags")
            )
        ]
        if not wanted:
            return {}
        from whylake.transforms.counterfactual_records import counterfactuals_for_rows

        return counterfactuals_for_rows(model, x, wanted, self.config, self.device)
