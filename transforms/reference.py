"""A model's registered reference rows explained as production explains them: drift's baseline.

SageMaker Clarify baselines attribution drift on the training set's SHAP values; whylake's
equivalent is the reference rows registered with each model version (training rows), explained
by the explain stage's own ModelBank (the kind's explainer and settings: IG for torch models,
TreeSHAP for boosters, model-agnostic Shapley for scikit-learn), each with inclusion
probability 1. Text models have no feature rows to compare: they get no reference. No Beam:
the monitor calls it on the launcher, once per model version it reports on.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import numpy as np

from whylake.monitor.drift import Explained
from whylake.schemas.secrets import Secret
from whylake.transforms.explainers.config import ExplainConfig
from whylake.transforms.model_bank import ModelBank
from whylake.transforms.sampling.policy import SamplingPolicies, default_policy_file, load_policies

MAX_REFERENCE_ROWS = 1000
REFERENCE_REASON = "reference"


def registration_reference(
    registry_root: str,
    tenant_id: str,
    model_id: str,
    model_version: str,
    config: ExplainConfig | None = None,
    *,
    policies: SamplingPolicies | None = None,
    device: str | None = None,
) -> Explained | None:
    """The version's reference rows and their attributions (a seeded subset if very many)."""
    # Reference rows carry no user id, so the key is never used to hash one.
    key = Secret("unused: reference rows have no user ids", "monitor reference")
    cfg = replace(config or ExplainConfig(), shap=False, counterfactuals=False)
    bank = ModelBank(registry_root, cfg, policies or load_policies(default_policy_file()), key,
                     device=device)  # fmt: skip
    loaded = bank.model((tenant_id, model_id, model_version))
    card = loaded.card
    if card.is_text or not len(loaded.reference_rows):
        return None
    x = np.asarray(loaded.reference_rows, dtype=np.float64)
    scores = np.asarray(loaded.reference_scores, dtype=np.float64)
    if len(x) > MAX_REFERENCE_ROWS:
        pick = np.sort(
            np.random.default_rng(cfg.seed).choice(len(x), MAX_REFERENCE_ROWS, replace=False)
        )
        x, scores = x[pick], scores[pick]
    names = tuple(card.feature_names)
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = [
        {
            "tenant_id": tenant_id,
            "request_id": f"reference-row-{i}",
            "event_ts": now,
            "model_id": model_id,
            "model_version": model_version,
            "features": list(zip(names, (float(v) for v in x[i]), strict=True)),
            "score": float(scores[i]),
            "sampling_policy": REFERENCE_REASON,
            "sampling_reason": REFERENCE_REASON,
            "inclusion_probability": 1.0,
            "ht_weight": 1.0,
            "stratum_size": len(x),
        }
        for i in range(len(x))
    ]
    records = bank.explain(rows, run_id="monitor-reference")
    failed = [r for r in records if "_error" in r]
    if failed:
        raise failed[0]["_error"]
    order = {r["request_id"]: i for i, r in enumerate(rows)}
    records.sort(key=lambda r: order[r["request_id"]])
    return Explained(
        features=names,
        attributions=np.array([[a["value"] for a in r["attributions"]] for r in records]),
        inputs=np.array([[a["input_value"] for a in r["attributions"]] for r in records]),
        inclusion_probability=np.ones(len(records)),
        request_ids=tuple(r["request_id"] for r in records),
        population=float(len(records)),
    )
