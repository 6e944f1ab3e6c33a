"""Assemble explanation records (the audit log's rows) from what the explainers computed."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

import numpy as np

from whylake.registry.store import LoadedModel
from whylake.schemas.errors import RegistryScopeError
from whylake.schemas.explanation import EXPLANATION_SCHEMA_VERSION
from whylake.schemas.ids import explanation_id, hash_user_id, input_digest
from whylake.schemas.secrets import Secret
from whylake.transforms.explainers.config import ExplainConfig
from whylake.transforms.explainers.result import AttributionResult
from whylake.transforms.explainers.summary import summarize
from whylake.transforms.explainers.token_ig import TokenAttributions

Row = dict[str, Any]


def library_versions() -> dict[str, str]:
    """Versions of the libraries whose numbers end up in a record."""
    out = {}
    for name in (
        "whylake",
        "torch",
        "captum",
        "shap",
        "numpy",
        "xgboost",
        "lightgbm",
        "scikit-learn",
        "skops",
        "transformers",
    ):
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


def text_digest(text: str) -> str:
    """sha256 of a text model's input (its UTF-8 bytes)."""
    return hashlib.sha256(b"text\x1f" + text.encode()).hexdigest()


@dataclass(frozen=True)
class Computed:
    """What the explainers computed for one model's rows, in row order.

    ``ig`` is the primary attribution of a tabular model (IG for torch, TreeSHAP for boosters,
    Shapley values for anything else: the name is from when IG was the only one); a text
    model's are its ``tokens``. ``scores`` is the model's own output in the units the producer
    logs (a probability where the explained output is a log-odds or a logit).
    """

    ig: AttributionResult | None
    stability: np.ndarray | None
    shap: AttributionResult | None
    counterfactuals: dict[int, tuple[str, list[Row] | None]]  # row index -> (status, rows)
    explainer_kind: str = "integrated_gradients"
    scores: np.ndarray | None = None
    tokens: TokenAttributions | None = None
    counterfactual_method: str | None = None
    ig_steps: np.ndarray | None = None  # (n,) IG evaluations behind each row's attributions
    ig_convergence: np.ndarray | None = None  # (n,) max |IG_steps - IG_steps/2| / max |IG|

    @property
    def primary(self) -> AttributionResult | None:
        """The tabular attribution recorded in `attributions`."""
        return self.ig


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
    card, cfg, ig, shap, tokens = (
        model.card,
        ctx.config,
        computed.ig,
        computed.shap,
        computed.tokens,
    )
    names = card.feature_names
    baseline = np.asarray(card.baseline, dtype=np.float64)
    method_config = tokens.config if tokens is not None else (ig.config if ig else None)
    config_json = json.dumps(
        {
            "whylake": asdict(cfg),
            "model_kind": card.kind,
            "explainer_kind": computed.explainer_kind,
            "ig" if computed.explainer_kind == "integrated_gradients" else "method": method_config,
            "shap": shap.config if shap else None,
        },
        sort_keys=True,
        default=str,
    )
    config_hash = cfg.digest_for(card.kind)
    method = "token_integrated_gradients" if ig is None else ig.method
    explained_at = datetime.now(UTC)
    records = []
    for i, row in enumerate(rows):
        if row["tenant_id"] != card.tenant_id:  # the registry checks it; a record must too
            raise RegistryScopeError(
                f"record of tenant {row['tenant_id']!r} cannot be explained with "
                f"{card.tenant_id}/{card.model_id}/{card.model_version}"
            )
        if tokens is not None:
            text = str(row.get("text") or "")
            digest = text_digest(text)
            prediction, base = float(tokens.prediction[i]), float(tokens.base_value[i])
            error = float(tokens.error[i])
            summary = _text_summary(tokens.tokens[i], prediction, base, card)
            attributions: list[Row] = []
            std_error = None
        else:
            assert ig is not None
            text = None
            digest = input_digest(names, x[i])
            prediction, base = float(ig.prediction[i]), float(ig.base_value[i])
            error = float(ig.error[i])
            stability_i = None if computed.stability is None else float(computed.stability[i])
            summary = summarize(
                names,
                ig.values[i],
                x[i],
                prediction,
                base,
                _explained_name(card),
                stability_i,
            )
            attributions = [
                {
                    "feature": n,
                    "value": float(v),
                    "input_value": float(xi),
                    "baseline_value": float(b),
                }
                for n, v, xi, b in zip(names, ig.values[i], x[i], baseline, strict=True)
            ]
            std_error = None if ig.std_error is None else float(ig.std_error[i])
        score = prediction if computed.scores is None else float(computed.scores[i])
        cf_status, cf_rows = computed.counterfactuals.get(i, ("not_requested", None))
        stability = None if computed.stability is None else float(computed.stability[i])
        records.append(
            {
                "explanation_id": explanation_id(
                    row["tenant_id"],
                    row["request_id"],
                    row["event_ts"],
                    card.artifact_sha256,
                    config_hash,
                    digest,
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
                "prediction": prediction,
                "logged_score": float(row["score"]),
                "predicted_class": row.get("predicted_class"),
                "user_id_hash": hash_user_id(row["tenant_id"], row.get("user_id"), ctx.hash_key),
                "input_hash": digest,
                "source": row.get("source_id"),
                "policy_version": row["sampling_policy"],
                "schema_version": EXPLANATION_SCHEMA_VERSION,
                "summary": summary,
                "flags": row.get("flags"),
                "explainer_method": method,
                "explainer_config": config_json,
                "explainer_config_hash": config_hash,
                "explainer_versions": ctx.versions,
                "baseline_kind": card.baseline_kind,
                "seed": cfg.seed,
                "base_value": base,
                "device": ctx.device,
                "attributions": attributions,
                "shap_values": None if shap is None else [float(v) for v in shap.values[i]],
                "completeness_error": error,
                "ig_convergence": _optional(computed.ig_convergence, i, float),
                "ig_steps": _optional(computed.ig_steps, i, int),
                "shap_additivity_error": None if shap is None else float(shap.error[i]),
                "stability": stability,
                "score_drift": float(abs(score - row["score"])),
                "counterfactual_status": cf_status,
                "counterfactuals": cf_rows,
                "sampling_policy": row["sampling_policy"],
                "sampling_reason": row["sampling_reason"],
                "inclusion_probability": float(row["inclusion_probability"]),
                "ht_weight": float(row["ht_weight"]),
                "stratum_size": int(row["stratum_size"]),
                "model_kind": card.kind,
                "explainer_kind": computed.explainer_kind,
                "explained_output": card.explained_output,
                "token_attributions": None if tokens is None else tokens.tokens[i],
                "input_text": text,
                "attribution_std_error": std_error,
                "model_source": card.source,
                "counterfactual_method": computed.counterfactual_method if cf_rows else None,
                "explain_seconds": None,  # set by the caller, which timed the explainers
            }
        )
    return records


def _explained_name(card: Any) -> str:
    """What the attributions sum to, in words: the log-odds of p_default, or p_default itself."""
    if card.explained_output == "log_odds":
        return f"log-odds of {card.output_name}"
    if card.explained_output == "logit":
        return f"logit of {card.output_name}"
    return str(card.output_name)


def _text_summary(tokens: list[Row], prediction: float, base: float, card: Any) -> str:
    """One sentence naming the tokens that moved the explained logit most."""
    top = sorted(tokens, key=lambda t: (-abs(t["value"]), t["start"]))[:3]
    delta = prediction - base
    where = "above" if delta >= 0 else "below"
    head = (
        f"The {_explained_name(card)} = {prediction:.3g} is {abs(delta):.3g} {where} that of an "
        "empty text"
    )
    reasons = [
        f"'{t['token']}' {'raised' if t['value'] > 0 else 'lowered'} it by {abs(t['value']):.3g}"
        for t in top
        if t["value"] != 0.0
    ]
    if not reasons:
        return head + ", and no token has a non-zero attribution."
    tail = reasons[0] if len(reasons) == 1 else ", ".join(reasons[:-1]) + " and " + reasons[-1]
    return f"{head}, mainly because {tail}."


def _optional(values: np.ndarray | None, i: int, cast: Any) -> Any:
    return None if values is None else cast(values[i])
