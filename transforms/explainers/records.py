"""Turn sampled inference rows into explanation records: the pure core of the explain stage."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

import numpy as np

from registry.store import LoadedModel, ModelRegistry
from schemas.explanation import EXPLANATION_SCHEMA_VERSION

Row = dict[str, Any]

# A deployment sets its own key; the default only keeps the demo runnable. Keyed (HMAC) so a
# stored hash cannot be reversed by hashing a list of known user ids.
DEFAULT_HASH_KEY = "whylake-demo-key-change-me"


@dataclass(frozen=True)
class ExplainConfig:
    """Every setting that changes the numbers of an explanation (hashed into its id)."""

    ig_steps: int = 50
    ig_rule: str = "gauss_legendre"
    stability_baselines: int = 4
    stability_top_k: int = 5
    shap: bool = True
    shap_background: int = 100
    counterfactuals: bool = True
    counterfactuals_per_query: int = 3
    seed: int = 0
    max_relative_completeness_error: float = 0.05

    def __post_init__(self) -> None:
        if self.ig_steps < 2:
            raise ValueError(f"ig_steps must be at least 2, got {self.ig_steps}")
        if self.stability_baselines < 1:
            raise ValueError("stability_baselines must be at least 1")
        if not 0 < self.max_relative_completeness_error < 1:
            raise ValueError("max_relative_completeness_error must be in (0, 1)")

    def canonical(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    def digest(self) -> str:
        return hashlib.sha256(self.canonical().encode()).hexdigest()


def library_versions() -> dict[str, str]:
    """Versions of the libraries whose numbers end up in a record."""
    out = {}
    for name in ("whylake", "torch", "captum", "shap", "numpy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def hash_user_id(tenant_id: str, user_id: str | None, key: str | None = None) -> str | None:
    """Keyed hash of a user id, per tenant; the raw id is never stored."""
    if user_id is None:
        return None
    secret = (key or os.environ.get("WHYLAKE_HASH_KEY") or DEFAULT_HASH_KEY).encode()
    return hmac.new(secret, f"{tenant_id}\x1f{user_id}".encode(), hashlib.sha256).hexdigest()


def input_digest(feature_names: Sequence[str], x: np.ndarray) -> str:
    """sha256 of the canonical input: feature names and float64 values in model order."""
    h = hashlib.sha256("\x1f".join(feature_names).encode())
    h.update(np.ascontiguousarray(x, dtype="<f8").tobytes())
    return h.hexdigest()


def explanation_id(tenant_id: str, request_id: str, model_sha: str, config_hash: str,
                   input_hash: str) -> str:
    """Same input + same model + same explainer config = same id, so replays are idempotent."""
    key = "\x1f".join((tenant_id, request_id, model_sha, config_hash, input_hash))
    return hashlib.sha256(key.encode()).hexdigest()


def feature_matrix(rows: Sequence[Row], names: Sequence[str]) -> np.ndarray:
    """(n, d) float64 inputs in the model's feature order from the rows' feature maps."""
    x = np.empty((len(rows), len(names)), dtype=np.float64)
    for i, row in enumerate(rows):
        features = dict(row["features"])
        x[i] = [features[name] for name in names]
    return x


class ModelBank:
    """The models a worker has loaded, one per (tenant, model, version), loaded on first use."""

    def __init__(self, registry_root: str, config: ExplainConfig, policies: Any,
                 device: str | None = None) -> None:
        from transforms.explainers.device import pick_device

        self.registry = ModelRegistry(registry_root)
        self.config = config
        self.policies = policies
        self.device = pick_device(device)
        self._models: dict[tuple[str, str, str], LoadedModel] = {}
        self._versions = json.dumps(library_versions(), sort_keys=True)

    def model(self, key: tuple[str, str, str]) -> LoadedModel:
        if key not in self._models:
            loaded = self.registry.load(*key)
            # The explainers run where the model lives: move it to this worker's device once.
            self._models[key] = replace(loaded, module=loaded.module.to(self.device))
        return self._models[key]

    def explain(self, rows: Iterable[Row], run_id: str) -> list[Row]:
        """Explain rows grouped by model; a group that fails yields error rows, not a crash."""
        groups: dict[tuple[str, str, str], list[Row]] = defaultdict(list)
        for row in rows:
            groups[(row["tenant_id"], row["model_id"], row["model_version"])].append(row)
        out: list[Row] = []
        for key, group in groups.items():
            try:
                out.extend(self._explain_group(self.model(key), group, run_id))
            except Exception as exc:  # noqa: BLE001 - each row goes to the dead letters with it
                out.extend({"_error": exc, "_row": row} for row in group)
        return out

    def _explain_group(self, model: LoadedModel, rows: list[Row], run_id: str) -> list[Row]:
        from transforms.explainers.integrated_gradients import integrated_gradients
        from transforms.explainers.stability import attribution_stability
        from transforms.explainers.summary import summarize

        card, cfg = model.card, self.config
        names = card.feature_names
        x = feature_matrix(rows, names)
        baseline = np.asarray(card.baseline, dtype=np.float64)
        ig = integrated_gradients(model.module, x, baseline, steps=cfg.ig_steps,
                                  device=self.device, rule=cfg.ig_rule)
        baselines = self._stability_baselines(model, baseline)
        stability = attribution_stability(model.module, x, baselines, steps=cfg.ig_steps,
                                          top_k=cfg.stability_top_k, device=self.device)
        shap = None
        if cfg.shap:
            from transforms.explainers.shap_values import shap_attributions

            background = model.reference_rows[: cfg.shap_background]
            shap = shap_attributions(model.module, x, background, kind="auto", seed=cfg.seed,
                                     device=self.device)
        counterfactuals = self._counterfactuals(model, rows, x)
        config_json = json.dumps(
            {"whylake": asdict(cfg), "ig": ig.config, "shap": shap.config if shap else None},
            sort_keys=True, default=str)
        config_hash = cfg.digest()
        explained_at = datetime.now(UTC)
        records = []
        for i, row in enumerate(rows):
            digest = input_digest(names, x[i])
            cf_status, cf_rows = counterfactuals.get(i, ("not_requested", None))
            records.append({
                "explanation_id": explanation_id(row["tenant_id"], row["request_id"],
                                                 card.artifact_sha256, config_hash, digest),
                "tenant_id": row["tenant_id"],
                "request_id": row["request_id"],
                "event_ts": row["event_ts"],
                "explained_at": explained_at,
                "run_id": run_id,
                "model_id": card.model_id,
                "model_version": card.model_version,
                "model_sha256": card.artifact_sha256,
                "output_name": card.output_name,
                "prediction": float(ig.prediction[i]),
                "logged_score": float(row["score"]),
                "predicted_class": row.get("predicted_class"),
                "user_id_hash": hash_user_id(row["tenant_id"], row.get("user_id")),
                "input_hash": digest,
                "source": row.get("source_id"),
                "policy_version": row["sampling_policy"],
                "schema_version": EXPLANATION_SCHEMA_VERSION,
                "summary": summarize(names, ig.values[i], x[i], float(ig.prediction[i]),
                                     float(ig.base_value[i]), card.output_name,
                                     float(stability[i])),
                "flags": row.get("flags"),
                "explainer_method": ig.method,
                "explainer_config": config_json,
                "explainer_config_hash": config_hash,
                "explainer_versions": self._versions,
                "baseline_kind": card.baseline_kind,
                "seed": cfg.seed,
                "base_value": float(ig.base_value[i]),
                "device": str(self.device),
                "attributions": [
                    {"feature": n, "value": float(v), "input_value": float(xi),
                     "baseline_value": float(b)}
                    for n, v, xi, b in zip(names, ig.values[i], x[i], baseline, strict=True)
                ],
                "shap_values": None if shap is None else [float(v) for v in shap.values[i]],
                "completeness_error": float(ig.error[i]),
                "shap_additivity_error": None if shap is None else float(shap.error[i]),
                "stability": float(stability[i]),
                "score_drift": float(abs(ig.prediction[i] - row["score"])),
                "counterfactual_status": cf_status,
                "counterfactuals": cf_rows,
                "sampling_policy": row["sampling_policy"],
                "sampling_reason": row["sampling_reason"],
                "inclusion_probability": float(row["inclusion_probability"]),
                "ht_weight": float(row["ht_weight"]),
                "stratum_size": int(row["stratum_size"]),
            })
        return records

    def _stability_baselines(self, model: LoadedModel, baseline: np.ndarray) -> np.ndarray:
        """The card's baseline plus seeded reference rows: how much does the choice matter?"""
        ref = model.reference_rows
        rng = np.random.default_rng(self.config.seed)
        picks = rng.choice(len(ref), size=min(self.config.stability_baselines, len(ref)),
                           replace=False)
        return np.vstack([baseline[None, :], np.median(ref, axis=0)[None, :], ref[picks]])

    def _counterfactuals(self, model: LoadedModel, rows: list[Row],
                         x: np.ndarray) -> dict[int, tuple[str, list[Row] | None]]:
        """Counterfactuals for the rows whose tenant policy asks for them."""
        if not self.config.counterfactuals:
            return {}
        wanted = [
            i for i, row in enumerate(rows)
            if self.policies.policy_for(row["tenant_id"]).wants_counterfactuals(
                row["sampling_reason"], row.get("flags"))
        ]
        if not wanted:
            return {}
        from transforms.explainers.counterfactual_records import counterfactuals_for_rows

        return counterfactuals_for_rows(model, x, wanted, self.config, self.device)
