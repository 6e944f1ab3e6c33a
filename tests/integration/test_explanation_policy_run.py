"""The explanation policy in a real batch run: what the producer sent kept, depth by tier and
risk, the policy hash and template version recorded, explainers compared, routes to review."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pyarrow.parquet as pq
import pytest

from tests.integration.conftest import DemoHome
from whylake.lake.catalog import EXPLANATIONS
from whylake.transforms.explanation_plan import (
    EXPLAINERS_DISAGREE,
    default_explanation_policies,
    policy_hash,
)
from whylake.transforms.sampling.policy import default_policy_file, load_policies

pytestmark = pytest.mark.integration


def _inputs(demo_home: DemoHome) -> dict[tuple[str, str], dict[str, Any]]:
    """Every valid input record by (tenant, request), as the producer logged it."""
    out = {}
    for path in demo_home.generated.paths:
        if path.suffix == ".parquet":
            rows = pq.read_table(path).to_pylist()
        else:
            rows = []
            for line in path.read_text().splitlines():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        for row in rows:
            if isinstance(row, dict) and "tenant_id" in row and "request_id" in row:
                out.setdefault((row["tenant_id"], row["request_id"]), row)
    return out


@pytest.fixture(scope="module")
def explained(demo_home: DemoHome) -> list[dict[str, Any]]:
    return demo_home.catalog().load_table(EXPLANATIONS).scan().to_arrow().to_pylist()


def test_what_the_producer_sent_is_kept_and_its_hash_checked(
    demo_home: DemoHome, explained: list[dict[str, Any]]
) -> None:
    sent = _inputs(demo_home)
    mismatches = 0
    for row in explained:
        source = sent[(row["tenant_id"], row["request_id"])]
        assert row["trust_tier"] == source["trust_tier"]
        assert row["risk_score"] == pytest.approx(source["risk_score"])
        assert row["label"] == source.get("label")
        if source.get("confidence") is None:
            assert row["confidence"] is None
        else:
            assert row["confidence"] == pytest.approx(source["confidence"])
        assert row["producer_input_hash"] == source["input_hash"]
        assert row["input_hash_mismatch"] == (source["input_hash"] != row["input_hash"])
        mismatches += row["input_hash_mismatch"]
        if row["input_hash_mismatch"]:
            assert row["review_route"] == "person"
            assert "input_hash_mismatch" in row["review_reasons"]
    # The generator logs a stale hash for about 0.2% of records; most rows match.
    assert mismatches < len(explained) // 10


def test_each_row_records_its_policy_hash_template_and_plan(
    explained: list[dict[str, Any]],
) -> None:
    sampling, explanation = load_policies(default_policy_file()), default_explanation_policies()
    for tenant in ("acme", "globex", "initech"):
        expected = policy_hash(sampling.policy_for(tenant), explanation.policy_for(tenant))
        rows = [r for r in explained if r["tenant_id"] == tenant]
        assert rows and {r["policy_hash"] for r in rows} == {expected}
        assert {r["policy_version"] for r in rows} == {expected}
    assert len({r["policy_hash"] for r in explained}) == 3
    assert {r["template_version"] for r in explained} == {"v2"}
    by_tier = Counter()
    for row in explained:
        plan = json.loads(row["explanation_plan"])
        steps = json.loads(row["explainer_config"])["whylake"]["ig_steps"]
        assert steps == plan["ig_steps"]
        if plan["escalated"]:
            assert steps == 100 and plan["shap"]
        elif row["trust_tier"] == "gold":
            assert steps == 100
        elif row["trust_tier"] == "bronze":
            assert not plan["shap"] and row["shap_values"] is None
        by_tier[(row["trust_tier"], steps)] += 1
    assert by_tier[("gold", 100)] and by_tier[("silver", 50)] and by_tier[("bronze", 50)]


def test_explainers_are_compared_and_disagreement_goes_to_a_person(
    explained: list[dict[str, Any]],
) -> None:
    with_shap = [r for r in explained if r["shap_values"] is not None]
    assert with_shap and all(-1 <= r["explainer_agreement"] <= 1 for r in with_shap)
    assert all(r["explainer_agreement"] is None for r in explained if r["shap_values"] is None)
    bar = default_explanation_policies().defaults.review.min_agreement
    assert bar is not None
    for row in with_shap:
        disagree = row["explainer_agreement"] < bar
        assert (EXPLAINERS_DISAGREE in row["review_reasons"]) == disagree
        if disagree:
            assert row["review_route"] == "person"
    routes = Counter(r["review_route"] for r in explained)
    assert routes["auto"] > routes["person"] > 0
