"""What to run for each sampled row, and what to record about it, from the explanation policy.

Pure functions (no Beam, no registry): the explain stage asks `plan_row` which explainers to
run how deep, groups rows by plan, and after the explainers ran calls `annotate_records` to
add what the producer sent, the policy hash, the template version, the agreement between
explainers and the review route to each record.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from whylake.schemas.errors import ConfigError
from whylake.schemas.explanation_policy import (
    CounterfactualConstraints,
    ExplainerDepth,
    ExplanationPolicies,
    TenantExplanationPolicy,
    canonical_json,
    content_hash,
    parse_explanation_policies,
)
from whylake.schemas.ids import explanation_id
from whylake.transforms.explainers.agreement import agreement_method, rank_agreement
from whylake.transforms.explainers.config import ExplainConfig
from whylake.transforms.sampling.policy import TenantPolicy

Row = dict[str, Any]

EXPLAINERS_DISAGREE = "explainers_disagree"
LOW_CONFIDENCE = "low_confidence"
HIGH_RISK = "high_risk"
INPUT_HASH_MISMATCH = "input_hash_mismatch"


def default_explanation_policy_file() -> Path:
    """The explanation policy shipped in the package (whylake/schemas/policies/explanation.yaml)."""
    return Path(str(files("whylake.schemas").joinpath("policies", "explanation.yaml")))


def load_explanation_policies(path: str | os.PathLike[str]) -> ExplanationPolicies:
    """Read and validate an explanation policy YAML file."""
    try:
        with open(path, encoding="utf-8") as handle:
            document = yaml.safe_load(handle)
    except OSError as err:
        raise ConfigError(f"cannot read explanation policy {os.fspath(path)}: {err}") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{os.fspath(path)}: not valid YAML: {err}") from err
    return parse_explanation_policies(document, source=os.fspath(path))


def default_explanation_policies() -> ExplanationPolicies:
    """The shipped policy, parsed."""
    return load_explanation_policies(default_explanation_policy_file())


def effective_policy(sampling: TenantPolicy, explanation: TenantExplanationPolicy) -> Row:
    """The canonical form of everything that decided what ran for one tenant's rows."""
    return {"sampling": asdict(sampling), "explanation": explanation.canonical()}


def policy_hash(sampling: TenantPolicy, explanation: TenantExplanationPolicy) -> str:
    """sha256 of the tenant's effective sampling + explanation policy, in canonical form.

    Computed from the validated policy with its defaults filled in, so a comment, a reordered
    key or another tenant's override changes nothing, and any rule that applied does.
    """
    return content_hash(effective_policy(sampling, explanation))


@dataclass(frozen=True)
class RowPlan:
    """What runs for one row. Rows with equal plans are explained together (hashable)."""

    ig_steps: int
    shap: bool
    counterfactuals: bool
    constraints: CounterfactualConstraints
    escalated: bool

    def explain_config(self, base: ExplainConfig) -> ExplainConfig:
        """The job's explainer settings with this plan's depth (hashed into the explanation id)."""
        return replace(
            base,
            ig_steps=self.ig_steps,
            # The plan's steps are where the per-row doubling starts (a policy may ask up to
            # 4,096): the cap leaves room for at least one doubling.
            ig_max_steps=max(base.ig_max_steps, 2 * self.ig_steps),
            shap=self.shap,
            counterfactuals=self.counterfactuals,
            counterfactuals_per_query=self.constraints.per_query,
        )

    def describe(self) -> Row:
        """What the row records as `explanation_plan` (JSON)."""
        return asdict(self)


def _flags(row: Row) -> tuple[str, ...]:
    """The producer's flags plus the always-explain reason, as flag names."""
    flags = tuple(row.get("flags") or ())
    reason = str(row.get("sampling_reason") or "")
    if reason.startswith("always:"):
        flags += (reason.removeprefix("always:"),)
    return flags


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def plan_row(
    base: ExplainConfig,
    explanation: TenantExplanationPolicy,
    sampling: TenantPolicy,
    row: Row,
) -> RowPlan:
    """The explainers to run for `row`: the job's settings, then the policy's defaults, then its
    trust tier's, then the escalation rule's when the row is flagged or high-risk.

    The job's `shap` / `counterfactuals` switches are caps (off means off, e.g. on a CPU-poor
    cluster); within them the policy decides. Counterfactuals are also computed where the
    sampling policy's older `counterfactuals_for` list asks for them, so existing sampling
    policy files keep their behaviour.
    """
    depth = ExplainerDepth(ig_steps=base.ig_steps, shap=base.shap, counterfactuals=False)
    depth = explanation.explainers.over(depth)
    tier = row.get("trust_tier")
    if isinstance(tier, str) and tier in explanation.trust_tiers:
        depth = explanation.trust_tiers[tier].over(depth)
    escalated = explanation.escalate.applies(_flags(row), _number(row.get("risk_score")))
    if escalated:
        depth = explanation.escalate.explainers.over(depth)
    legacy = sampling.wants_counterfactuals(str(row.get("sampling_reason") or ""), row.get("flags"))
    assert depth.ig_steps is not None and depth.shap is not None  # filled from `base`
    return RowPlan(
        ig_steps=depth.ig_steps,
        shap=bool(depth.shap and base.shap),
        counterfactuals=bool((depth.counterfactuals or legacy) and base.counterfactuals),
        constraints=explanation.counterfactuals,
        escalated=escalated,
    )


def group_by_plan(plans: Sequence[RowPlan]) -> dict[RowPlan, list[int]]:
    """Row indices per distinct plan, in first-seen order."""
    groups: dict[RowPlan, list[int]] = {}
    for i, plan in enumerate(plans):
        groups.setdefault(plan, []).append(i)
    return groups


def limit_counterfactuals(
    status: str, rows: list[Row] | None, constraints: CounterfactualConstraints
) -> tuple[str, list[Row] | None]:
    """Drop counterfactuals that change more features than the policy allows; re-rank the rest."""
    limit = constraints.max_features_changed
    if limit is None or not rows:
        return status, rows
    kept = [
        dict(cf, rank=rank) for rank, cf in enumerate(r for r in rows if r["sparsity"] <= limit)
    ]
    if kept:
        return status, kept
    return ("not_found" if status == "found" else status), None


def review_route(
    explanation: TenantExplanationPolicy,
    *,
    confidence: float | None,
    risk: float | None,
    agreement: float | None,
    flags: Sequence[str],
    input_hash_mismatch: bool | None,
) -> tuple[str, list[str]]:
    """auto / confirm / person, and the reasons, from the policy's review thresholds."""
    t = explanation.review
    person: list[str] = []
    confirm: list[str] = []
    if confidence is not None:
        if t.person_below_confidence is not None and confidence < t.person_below_confidence:
            person.append(LOW_CONFIDENCE)
        elif t.confirm_below_confidence is not None and confidence < t.confirm_below_confidence:
            confirm.append(LOW_CONFIDENCE)
    if risk is not None:
        if t.person_above_risk is not None and risk > t.person_above_risk:
            person.append(HIGH_RISK)
        elif t.confirm_above_risk is not None and risk > t.confirm_above_risk:
            confirm.append(HIGH_RISK)
    if agreement is not None and t.min_agreement is not None and agreement < t.min_agreement:
        person.append(EXPLAINERS_DISAGREE)
    person.extend(f"flag:{f}" for f in t.person_flags if f in flags)
    if input_hash_mismatch and t.person_on_input_hash_mismatch:
        person.append(INPUT_HASH_MISMATCH)
    if person:
        return "person", sorted(set(person + confirm))
    if confirm:
        return "confirm", sorted(set(confirm))
    return "auto", []


def annotate_records(
    records: list[Row],
    rows: Sequence[Row],
    plan: RowPlan,
    explanation: TenantExplanationPolicy,
    sampling: TenantPolicy,
) -> list[Row]:
    """Add the 120-149 columns to freshly assembled records (same order as `rows`).

    The counterfactual constraints are part of what produced the record, so when they limit
    anything they enter the explainer config (and with it the explanation id).
    """
    tenant_hash = policy_hash(sampling, explanation)
    top_k = explanation.review.agreement_top_k
    agreements = _agreements(records, top_k)
    plan_json = canonical_json(plan.describe())
    out = []
    for record, row, agreement in zip(records, rows, agreements, strict=True):
        record = dict(record)
        producer_hash = row.get("input_hash")
        mismatch = None if not producer_hash else producer_hash != record["input_hash"]
        status, cfs = limit_counterfactuals(
            record["counterfactual_status"], record["counterfactuals"], plan.constraints
        )
        if plan.counterfactuals and plan.constraints != CounterfactualConstraints():
            _fold_constraints(record, plan.constraints)
        confidence = _number(row.get("confidence"))
        risk = _number(row.get("risk_score"))
        route, reasons = review_route(
            explanation,
            confidence=confidence,
            risk=risk,
            agreement=agreement,
            flags=_flags(row),
            input_hash_mismatch=mismatch,
        )
        if cfs is None and "counterfactual_method" in record:
            record["counterfactual_method"] = None  # none kept: no method to name
        record.update(
            counterfactual_status=status,
            counterfactuals=cfs,
            policy_version=tenant_hash,
            trust_tier=row.get("trust_tier"),
            confidence=confidence,
            label=row.get("label"),
            risk_score=risk,
            producer_input_hash=producer_hash or None,
            input_hash_mismatch=mismatch,
            policy_hash=tenant_hash,
            template_version=explanation.templates.version,
            explainer_agreement=agreement,
            agreement_method=agreement_method(top_k) if agreement is not None else None,
            review_route=route,
            review_reasons=reasons,
            explanation_plan=plan_json,
        )
        out.append(record)
    return out


def _agreements(records: Sequence[Row], top_k: int) -> list[float | None]:
    """IG vs SHAP per record; None where SHAP did not run."""
    with_shap = [i for i, r in enumerate(records) if r.get("shap_values") is not None]
    out: list[float | None] = [None] * len(records)
    if not with_shap:
        return out
    ig = np.array([[a["value"] for a in records[i]["attributions"]] for i in with_shap])
    shap = np.array([records[i]["shap_values"] for i in with_shap], dtype=np.float64)
    for i, value in zip(with_shap, rank_agreement(ig, shap, top_k), strict=True):
        out[i] = float(value)
    return out


def _fold_constraints(record: Row, constraints: CounterfactualConstraints) -> None:
    """Record the constraints in the config JSON and re-derive its hash and the record's id."""
    config: Mapping[str, Any] = json.loads(record["explainer_config"])
    config = {**config, "counterfactual_constraints": asdict(constraints)}
    record["explainer_config"] = json.dumps(config, sort_keys=True, default=str)
    config_hash = content_hash({"base": record["explainer_config_hash"], **asdict(constraints)})
    record["explainer_config_hash"] = config_hash
    record["explanation_id"] = explanation_id(
        record["tenant_id"],
        record["request_id"],
        record["event_ts"],
        record["model_sha256"],
        config_hash,
        record["input_hash"],
    )
