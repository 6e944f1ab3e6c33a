"""Tiered views: each reader gets what their tier holds, worded by a versioned template."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from whylake.lake.reconstruct import Reconstruction
from whylake.schemas.errors import ConfigError
from whylake.views.report import render_html
from whylake.views.tiers import build_view, template_versions

WHEN = datetime(2024, 6, 1, tzinfo=UTC)
SHA = "9" * 64
POLICY = "ab" * 32
REVIEW = {
    "review_id": "rv",
    "tenant_id": "acme",
    "request_id": "r-1",
    "explanation_id": None,  # set per record
    "reviewer_hash": "c" * 64,
    "decision": "escalate",
    "reason": "two methods disagree",
    "reviewed_at": WHEN,
}


def _counterfactual() -> list[dict[str, Any]]:
    change = {"feature": "late_payments", "from_value": 2.0, "to_value": 0.0}
    return [
        {
            "rank": 0,
            "score": 0.3,
            "valid": True,
            "proximity": 0.5,
            "sparsity": 1,
            "plausibility": 0.2,
            "changes": [change],
        }
    ]


@pytest.fixture
def rec(make_row: Any) -> Reconstruction:
    row = make_row(
        "acme",
        "r-1",
        counterfactuals=_counterfactual(),
        model_sha256=SHA,
        policy_hash=POLICY,
        policy_version=POLICY,
        template_version="v2",
        explainer_agreement=0.1,
        agreement_method="spearman_top5_union",
        review_route="person",
        review_reasons=["explainers_disagree"],
        shap_values=[0.2, -0.5, 0.4, -0.7],
        confidence=0.62,
        trust_tier="gold",
    )
    review = {**REVIEW, "explanation_id": row["explanation_id"]}
    history = [
        {
            "explanation_id": row["explanation_id"],
            "explained_at": WHEN,
            "model_version": "1.0.0",
            "explainer_method": "integrated_gradients",
            "run_id": "run-1",
            "latest_review": {"decision": "escalate", "reason": "x", "reviewed_at": WHEN},
        }
    ]
    return Reconstruction(row, 42, WHEN, history, reviews=[review])


def _blob(view: Any) -> str:
    return json.dumps(view.to_json(), sort_keys=True)


def test_tier1_is_words_for_the_affected_person(rec: Reconstruction) -> None:
    view = build_view(rec, 1)
    data = view.data
    assert [r["feature"] for r in data["reasons"]] == ["late_payments", "debt_ratio", "age"]
    assert data["what_could_change"] == [
        {"feature": "late_payments", "from_value": 2.0, "to_value": 0.0}
    ]
    assert "appeals@acme.example" in data["contest"]
    assert data["caveats"] == ["explainers_disagree"] and data["human_review"] is True
    text = view.text
    assert "The decision on your request r-1 was: approve." in text
    assert "late payments (2) pushed the result down" in text
    assert "late payments of 0 instead of 2" in text
    assert "did not fully agree" in text and "How to contest" in text
    assert "wording v2" in text
    # Nothing an affected person should not get: no provenance, no raw numbers of the model.
    blob = _blob(view)
    for secret in (SHA, POLICY, "explainer_config", "ht_weight", "reviewer_hash", "run_id"):
        assert secret not in blob, secret


def test_tier2_gives_the_operator_factors_confidence_and_review(rec: Reconstruction) -> None:
    view = build_view(rec, 2)
    factors = view.data["top_factors"]
    assert [f["feature"] for f in factors][:2] == ["late_payments", "debt_ratio"]
    assert factors[0]["direction"] == "lowers" and factors[0]["attribution"] == pytest.approx(-0.8)
    assert sum(f["share"] for f in factors) == pytest.approx(1.0)
    assert view.data["confidence"] == 0.62
    assert view.data["review"]["route"] == "person"
    assert view.data["review"]["latest"]["decision"] == "escalate"
    assert "CAVEAT: the explainers disagree" in view.text
    assert "latest escalate" in view.text and "confidence 0.62" in view.text
    assert SHA not in _blob(view)


def test_tier3_gives_the_auditor_provenance_and_every_number(rec: Reconstruction) -> None:
    view = build_view(rec, 3)
    p = view.data["provenance"]
    assert (p["model_sha256"], p["policy_hash"], p["snapshot_id"]) == (SHA, POLICY, 42)
    assert p["explainer_config_hash"] == rec.record["explainer_config_hash"]
    assert len(view.data["attributions"]) == 4
    assert [a["shap_value"] for a in view.data["attributions"]] == [0.2, -0.5, 0.4, -0.7]
    assert view.data["fidelity"]["completeness_error"] == pytest.approx(1e-7)
    assert view.data["sampling"]["ht_weight"] == 4.0
    assert view.data["reviews"][0]["reason"] == "two methods disagree"
    for text in (SHA, POLICY, "Snapshot 42", "weight 4", "DISAGREE", "two methods disagree"):
        assert text in view.text, text


def test_tier4_is_the_raw_record(rec: Reconstruction) -> None:
    view = build_view(rec, 4)
    assert json.loads(view.text)["record"]["model_sha256"] == SHA
    assert view.data["record"]["attributions"] == rec.record["attributions"]


def test_wording_changes_by_template_version_without_recomputing(rec: Reconstruction) -> None:
    assert template_versions() == ("v1", "v2")
    v1, v2 = build_view(rec, 1, template_version="v1"), build_view(rec, 1)
    assert v1.data["reasons"] == v2.data["reasons"]  # the same record, the same facts
    assert v1.text != v2.text
    assert "template v1" in v1.text and "wording v2" in v2.text
    # Without a request the record's own version is used; without one recorded, the policy's.
    older = Reconstruction({**rec.record, "template_version": "v1"}, 42, WHEN, [])
    assert build_view(older, 1).template_version == "v1"
    unrecorded = Reconstruction({**rec.record, "template_version": None}, 42, WHEN, [])
    assert build_view(unrecorded, 1).template_version == "v2"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tier": 5}, "tier must be one of"),
        ({"tier": 1, "template_version": "v9"}, "is not shipped"),
        ({"tier": 1, "lang": "xx"}, "has no 'xx' wording"),
    ],
)
def test_bad_requests_are_refused(
    rec: Reconstruction, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        build_view(rec, **kwargs)


def test_the_html_report_takes_the_tier(rec: Reconstruction) -> None:
    pages = {tier: render_html(rec, tier) for tier in (1, 2, 3, 4)}
    assert "How to contest this decision" in pages[1] and SHA not in pages[1]
    assert "Tier 2 (operator)" in pages[2] and "explainers disagree" in pages[2]
    assert POLICY in pages[3] and "Reviews (1)" in pages[3] and "template version v2" in pages[3]
    assert "Tier 4 (debug)" in pages[4] and SHA in pages[4]
    for page in pages.values():
        assert "<script" not in page
