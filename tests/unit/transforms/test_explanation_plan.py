"""What runs per row (trust tier, risk, flags) and what each record keeps about it."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from whylake.schemas.explanation_policy import CounterfactualConstraints
from whylake.schemas.ids import explanation_id
from whylake.transforms.explainers.agreement import rank_agreement
from whylake.transforms.explainers.config import ExplainConfig
from whylake.transforms.explanation_plan import (
    EXPLAINERS_DISAGREE,
    annotate_records,
    default_explanation_policies,
    group_by_plan,
    plan_row,
    policy_hash,
    review_route,
)
from whylake.transforms.sampling.policy import default_policy_file, load_policies

POLICY = default_explanation_policies().policy_for("acme")
SAMPLING = load_policies(default_policy_file()).policy_for("acme")
BASE = ExplainConfig()


def _row(**overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "tenant_id": "acme",
        "request_id": "r-1",
        "trust_tier": "silver",
        "confidence": 0.9,
        "risk_score": 0.1,
        "flags": None,
        "sampling_reason": "priority",
        "input_hash": None,
        "label": None,
    }
    row.update(overrides)
    return row


def test_depth_follows_the_trust_tier_and_escalation() -> None:
    silver = plan_row(BASE, POLICY, SAMPLING, _row())
    gold = plan_row(BASE, POLICY, SAMPLING, _row(trust_tier="gold"))
    bronze = plan_row(BASE, POLICY, SAMPLING, _row(trust_tier="bronze"))
    risky = plan_row(BASE, POLICY, SAMPLING, _row(trust_tier="bronze", risk_score=0.85))
    flagged = plan_row(BASE, POLICY, SAMPLING, _row(sampling_reason="always:flagged"))
    assert (silver.ig_steps, silver.shap, silver.counterfactuals) == (50, True, False)
    assert gold.ig_steps == 100 and not gold.counterfactuals
    assert bronze.shap is False
    # Escalated: counterfactuals, deeper IG and SHAP again, whatever the tier said.
    assert (risky.ig_steps, risky.shap, risky.counterfactuals, risky.escalated) == (
        100,
        True,
        True,
        True,
    )
    assert flagged.counterfactuals and flagged.escalated
    assert len(group_by_plan([silver, gold, silver, bronze])) == 3


def test_the_jobs_switches_cap_the_policy() -> None:
    capped = ExplainConfig(shap=False, counterfactuals=False)
    plan = plan_row(capped, POLICY, SAMPLING, _row(risk_score=0.99))
    assert plan.shap is False and plan.counterfactuals is False
    cfg = plan.explain_config(BASE)
    assert cfg.ig_steps == plan.ig_steps and cfg.digest() != BASE.digest()


def test_the_sampling_policys_older_counterfactuals_for_still_counts() -> None:
    sampling = replace(SAMPLING, counterfactuals_for=("low_confidence",))
    plan = plan_row(BASE, POLICY, sampling, _row(sampling_reason="always:low_confidence"))
    assert plan.counterfactuals and not plan.escalated


@pytest.mark.parametrize(
    ("kwargs", "route", "reasons"),
    [
        ({}, "auto", []),
        ({"confidence": 0.7}, "confirm", ["low_confidence"]),
        ({"confidence": 0.5}, "person", ["low_confidence"]),
        ({"risk": 0.85}, "confirm", ["high_risk"]),
        ({"risk": 0.97, "confidence": 0.7}, "person", ["high_risk", "low_confidence"]),
        ({"agreement": 0.2}, "person", [EXPLAINERS_DISAGREE]),
        ({"flags": ("disputed",)}, "person", ["flag:disputed"]),
        ({"input_hash_mismatch": True}, "person", ["input_hash_mismatch"]),
    ],
)
def test_review_routes(kwargs: dict[str, Any], route: str, reasons: list[str]) -> None:
    args: dict[str, Any] = dict(
        confidence=0.9, risk=0.1, agreement=0.9, flags=(), input_hash_mismatch=False
    )
    args.update(kwargs)
    assert review_route(POLICY, **args) == (route, reasons)


EVENT_TS = datetime(2026, 11, 3, 9, 30, tzinfo=UTC)


def _record(i: int, ig: np.ndarray, shap: np.ndarray | None, cfs: list | None) -> dict[str, Any]:
    names = [f"f{j}" for j in range(ig.shape[0])]
    return {
        "explanation_id": f"id-{i}",
        "tenant_id": "acme",
        "request_id": f"r-{i}",
        "event_ts": EVENT_TS,
        "model_sha256": "sha",
        "input_hash": f"ours-{i}",
        "explainer_config": json.dumps({"whylake": {}}),
        "explainer_config_hash": "cfg",
        "policy_version": "2026-11-01/priority",
        "attributions": [{"feature": n, "value": float(v)} for n, v in zip(names, ig, strict=True)],
        "shap_values": None if shap is None else [float(v) for v in shap],
        "counterfactual_status": "found" if cfs else "not_requested",
        "counterfactuals": cfs,
    }


def test_records_keep_what_the_producer_sent_and_the_policy_that_ran() -> None:
    rng = np.random.default_rng(3)
    ig = rng.normal(size=(3, 6))
    shap = ig.copy()
    shap[1] = -ig[1]  # the explainers disagree on row 1
    records = [_record(0, ig[0], shap[0], None), _record(1, ig[1], shap[1], None)]
    records.append(_record(2, ig[2], None, None))
    rows = [
        _row(request_id="r-0", input_hash="ours-0", trust_tier="gold", label="benign"),
        _row(request_id="r-1", input_hash="theirs", confidence=0.6),
        _row(request_id="r-2", confidence=float("nan"), risk_score=None),
    ]
    plan = plan_row(BASE, POLICY, SAMPLING, rows[0])
    out = annotate_records(records, rows, plan, POLICY, SAMPLING)
    expected_hash = policy_hash(SAMPLING, POLICY)
    assert [r["input_hash_mismatch"] for r in out] == [False, True, None]
    assert [r["producer_input_hash"] for r in out] == ["ours-0", "theirs", None]
    assert (out[0]["trust_tier"], out[0]["label"], out[0]["confidence"]) == ("gold", "benign", 0.9)
    assert out[2]["confidence"] is None and out[2]["risk_score"] is None  # NaN is "not sent"
    assert {r["policy_hash"] for r in out} == {r["policy_version"] for r in out} == {expected_hash}
    assert {r["template_version"] for r in out} == {"v2"}
    assert out[0]["explainer_agreement"] == pytest.approx(rank_agreement(ig[:1], shap[:1])[0])
    assert out[1]["explainer_agreement"] < 0 and out[2]["explainer_agreement"] is None
    assert out[1]["review_route"] == "person"
    assert EXPLAINERS_DISAGREE in out[1]["review_reasons"]
    assert "input_hash_mismatch" in out[1]["review_reasons"]
    assert out[0]["review_route"] == "auto" and out[0]["agreement_method"].startswith("spearman")
    assert json.loads(out[0]["explanation_plan"])["ig_steps"] == 100


def test_counterfactual_constraints_drop_long_changes_and_enter_the_id() -> None:
    long_cf = {"rank": 0, "sparsity": 7, "changes": [], "valid": True}
    short_cf = {"rank": 1, "sparsity": 2, "changes": [], "valid": True}
    ig = np.ones((1, 3))
    rows = [_row(request_id="r-0", risk_score=0.9)]
    plan = plan_row(BASE, POLICY, SAMPLING, rows[0])
    assert plan.counterfactuals and plan.constraints.max_features_changed == 5
    out = annotate_records(
        [_record(0, ig[0], None, [long_cf, short_cf])], rows, plan, POLICY, SAMPLING
    )[0]
    assert [cf["sparsity"] for cf in out["counterfactuals"]] == [2]
    assert out["counterfactuals"][0]["rank"] == 0
    assert "counterfactual_constraints" in json.loads(out["explainer_config"])
    assert out["explainer_config_hash"] != "cfg"
    assert out["explanation_id"] == explanation_id(
        "acme", "r-0", EVENT_TS, "sha", out["explainer_config_hash"], "ours-0"
    )
    only_long = annotate_records(
        [_record(0, ig[0], None, [long_cf])], rows, plan, POLICY, SAMPLING
    )[0]
    assert (
        only_long["counterfactual_status"] == "not_found" and only_long["counterfactuals"] is None
    )
    # Without limits beyond the defaults nothing is folded in.
    loose = replace(plan, constraints=CounterfactualConstraints())
    same = annotate_records([_record(0, ig[0], None, [long_cf])], rows, loose, POLICY, SAMPLING)[0]
    assert same["explanation_id"] == "id-0"
