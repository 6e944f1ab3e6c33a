"""Assemble explanation records (the audit log's rows) from what the explainers computed."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

import numpy as np

from whylake.registry.store import LoadedModel
from whylake.schemas.explanation import EXPLANATION_SCHEMA_VERSION
from whylake.schemas.ids import explanation_id, hash_user_id, input_digest
from whylake.schemas.secrets import Secret
from whylake.transforms.explainers.config import ExplainConfig
from whylake.transforms.explainers.result import AttributionResult
from whylake.transforms.explainers.summary import summarize

Row = dict[str, Any]


def library_versions() -> dict[str, str]:
    """Versions of the libraries whose numbers end up in a record."""
    out = {}
    for name in ("whylake", "torch", "captum", "shap", "numpy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def feature_matrix(rows: Sequence[Row], names: Sequence[str]) -> np.ndarray:
    """(n, d) float64 inputs in the model's feature order from the rows' feature maps."""
    x = np.empty((len(rows), len(names)), dtype=np.float64)
    for i, row in enumerate(rows):
        features = dict(row["features"])
        x[i] = [features[name] for name in names]
    return x


@dataclass(frozen=True)
class Computed:
    """What the explainers computed for one model's rows, in row order."""

    ig: AttributionResult
    stability: np.ndarray
    shap: AttributionResult | None
    counterfactuals: dict[int, tuple[str, list[Row] | None]]  # row index -> (status, rows)


@dataclass(frozen=True)
class RecordContext:
    """What every record of one explain call shares: run, settings, where it ran, the key."""

    run_id: str
    config: ExplainConfig
    device: str
    versions: str  # JSON of library_versions()
    hash_key: Secret


def assemble_records(
    model: LoadedModel, rows: Sequence[Row], x: np.ndarray, computed: Computed, ctx: RecordContext
) -> list[Row]:
    """One explanation record per row, in the explanation schema's column names."""
    card, cfg, ig, shap = model.card, ctx.config, computed.ig, computed.shap
    names = card.feature_names
    baseline = np.asarray(card.baseline, dtype=np.float64)
    config_json = json.dumps(
        {"whylake": asdict(cfg), "ig": ig.config, "shap": shap.config if shap else None},
        sort_keys=True,
        default=str,
    )
    config_hash = cfg.digest()
    explained_at = datetime.now(UTC)
    records = []
    for i, row in enumerate(rows):
        digest = input_digest(names, x[i])
        cf_status, cf_rows = computed.counterfactuals.get(i, ("not_requested", None))
        stability = float(computed.stability[i])
        records.append(
            {
                "explanation_id": explanation_id(
                    row["tenant_id"], row["request_id"], card.artifact_sha256, config_hash, digest
                ),
                "tenant_id": row["tenant_id"],
                "request_id": row["request_id"],
                "event_ts": row["event_ts"],
                "explained_at": explained_at,
                "run_id": ctx.run_id,
                "model_id": card.model_id,
                "model_version": card.model_version,
                "model_sha256": card.artifact_sha256,
                "output_name": card.output_name,
                "prediction": float(ig.prediction[i]),
                "logged_score": float(row["score"]),
                "predicted_class": row.get("predicted_class"),
                "user_id_hash": hash_user_id(row["tenant_id"], row.get("user_id"), ctx.hash_key),
                "input_hash": digest,
                "source": row.get("source_id"),
                "policy_version": row["sampling_policy"],
                "schema_version": EXPLANATION_SCHEMA_VERSION,
                "summary": summarize(
                    names,
                    ig.values[i],
                    x[i],
                    float(ig.prediction[i]),
                    float(ig.base_value[i]),
                    card.output_name,
                    stability,
                ),
                "flags": row.get("flags"),
                "explainer_method": ig.method,
                "explainer_config": config_json,
                "explainer_config_hash": config_hash,
                "explainer_versions": ctx.versions,
                "baseline_kind": card.baseline_kind,
                "seed": cfg.seed,
                "base_value": float(ig.base_value[i]),
                "device": ctx.device,
                "attributions": [
                    {
                        "feature": n,
                        "value": float(v),
                        "input_value": float(xi),
                        "baseline_value": float(b),
                    }
                    for n, v, xi, b in zip(names, ig.values[i], x[i], baseline, strict=True)
                ],
                "shap_values": None if shap is None else [float(v) for v in shap.values[i]],
                "completeness_error": float(ig.error[i]),
                "shap_additivity_error": None if shap is None else float(shap.error[i]),
                "stability": stability,
                "score_drift": float(abs(ig.prediction[i] - row["score"])),
                "counterfactual_status": cf_status,
                "counterfactuals": cf_rows,
                "sampling_policy": row["sampling_policy"],
                "sampling_reason": row["sampling_reason"],
                "inclusion_probability": float(row["inclusion_probability"]),
                "ht_weight": float(row["ht_weight"]),
                "stratum_size": int(row["stratum_size"]),
            }
        )
    return records
