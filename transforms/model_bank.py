"""The explain stage's worker state: models loaded once per worker, explained a group at a time.

A thin dispatcher: rows are grouped by (tenant, model, version), each group's model is loaded
once (checked against its sha256) and prepared for its kind on this worker's device, and the
kind's family of explainers (`transforms/kind_explainers.py`) computes what the records hold.
"""

from __future__ import annotations

import functools
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from whylake.registry.store import LoadedModel, ModelRegistry
from whylake.schemas.explanation_policy import ExplanationPolicies
from whylake.schemas.secrets import Secret
from whylake.transforms.explainers.config import ExplainConfig
from whylake.transforms.explainers.device import ExplainClock, pick_device
from whylake.transforms.explanation_plan import (
    RowPlan,
    annotate_records,
    default_explanation_policies,
    group_by_plan,
    plan_row,
)
from whylake.transforms.explanation_records import (
    Computed,
    RecordContext,
    assemble_records,
    feature_matrix,
    library_versions,
)
from whylake.transforms.isolate import explain_isolating_failures
from whylake.transforms.kind_explainers import ExplainContext, explain_group, prepare
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
        explanation: ExplanationPolicies | None = None,
    ) -> None:
        self.registry = ModelRegistry(registry_root)
        self.config = config
        self.policies = policies
        self.explanation = explanation or default_explanation_policies()
        self.hash_key = hash_key
        self.device = pick_device(device)
        self._models: dict[ModelKey, tuple[LoadedModel, Any]] = {}
        self._versions = json.dumps(library_versions(), sort_keys=True)

    def model(self, key: ModelKey) -> LoadedModel:
        return self._loaded(key)[0]

    def _loaded(self, key: ModelKey) -> tuple[LoadedModel, Any]:
        if key not in self._models:
            loaded = self.registry.load(*key)
            # The explainers run where the model lives: prepare it on this worker's device once.
            self._models[key] = (loaded, prepare(loaded, self.device))
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
                loaded, _ = self._loaded(key)
            except Exception as exc:  # noqa: BLE001 - the group's model: each row fails with it
                out.extend({"_error": exc, "_row": row} for row in group)
                continue
            # A batch that raises is bisected: good rows are explained, bad ones fail alone.
            explain = functools.partial(self._explain, loaded, ctx=ctx)
            out.extend(explain_isolating_failures(group, explain))
        return out

    def _explain(
        self, loaded: LoadedModel, rows: Sequence[Row], *, ctx: RecordContext
    ) -> list[Row]:
        part = list(rows)
        return self._explain_planned(loaded, part, self._inputs(loaded, part), ctx)

    def _inputs(self, loaded: LoadedModel, rows: list[Row]) -> np.ndarray:
        if loaded.card.is_text:
            return np.zeros((len(rows), 0))
        return feature_matrix(rows, loaded.card.feature_names)

    def _explain_planned(
        self, loaded: LoadedModel, rows: list[Row], x: np.ndarray, ctx: RecordContext
    ) -> list[Row]:
        """Rows split by the plan their tenant's explanation policy gives them (depth by trust
        tier and risk), each part explained with its plan; records come back in row order."""
        tenant = rows[0]["tenant_id"]  # a group is one (tenant, model, version)
        sampling = self.policies.policy_for(tenant)
        explanation = self.explanation.policy_for(tenant)
        plans = [plan_row(self.config, explanation, sampling, row) for row in rows]
        placed: dict[int, Row] = {}
        for plan, idx in group_by_plan(plans).items():
            sub, xs, cfg = [rows[i] for i in idx], x[idx], plan.explain_config(self.config)
            with ExplainClock(self.device) as clock:
                computed = self._compute(loaded, sub, xs, cfg, plan)
            records = assemble_records(loaded, sub, xs, computed, replace(ctx, config=cfg))
            for record in records:  # the part's cost, shared evenly by its rows
                record["explain_seconds"] = clock.seconds / len(records)
            annotated = annotate_records(records, sub, plan, explanation, sampling)
            placed.update(zip(idx, annotated, strict=True))
        return [placed[i] for i in range(len(rows))]

    def _compute(
        self,
        loaded: LoadedModel,
        rows: list[Row],
        x: np.ndarray,
        config: ExplainConfig | None = None,
        plan: RowPlan | None = None,
    ) -> Computed:
        prepared = self._loaded(
            (loaded.card.tenant_id, loaded.card.model_id, loaded.card.model_version)
        )[1]
        ctx = ExplainContext(config or self.config, self.policies, self.device, plan)
        return explain_group(loaded, prepared, rows, x, ctx)
