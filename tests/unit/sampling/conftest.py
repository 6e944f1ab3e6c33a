"""Shared fixtures for the sampling tests: seeded inference batches, a policy and an oracle."""

from __future__ import annotations

import copy
import datetime
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from whylake.schemas.inference import INFERENCE_ARROW_SCHEMA
from whylake.transforms.sampling import SamplingPolicies, parse_policies, uniform_from_hash

DAY0 = datetime.datetime(2026, 11, 21, tzinfo=datetime.UTC)

POLICY_DOC: dict[str, Any] = {
    "version": "2026-11-01",
    "seed": 20261122,
    "defaults": {
        "sampler": "priority",
        "weight": "uncertainty",
        "budget_per_day": 5,
        "always_explain": {
            "flags": ["flagged", "disputed", "high_risk"],
            "confidence_below": 0.2,
            "risk_above": 0.95,
        },
        "counterfactuals_for": ["flagged", "disputed"],
    },
    "tenants": {
        "acme": {"budget_per_day": 7},
        "globex": {"sampler": "reservoir"},
        "hooli": {"weight": "risk", "always_explain": {"risk_above": None}},
    },
}


def synthetic_rows(
    n: int, seed: int, tenants: Sequence[str] = ("acme", "globex", "initech"), days: int = 2
) -> list[dict[str, Any]]:
    """n inference records as Python rows, spread over tenants and UTC days, a few flagged."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        flags = rng.choice(["flagged", "disputed", "vip"], size=rng.integers(1, 3)).tolist()
        rows.append(
            {
                "tenant_id": tenants[int(rng.integers(len(tenants)))],
                "request_id": f"req-{seed}-{i:05d}",
                "event_ts": DAY0 + datetime.timedelta(seconds=float(rng.uniform(0, days * 86400))),
                "model_id": "m",
                "model_version": "1",
                "features": [("x0", float(rng.normal())), ("x1", float(rng.normal()))],
                "score": float(rng.random()),
                "predicted_class": "yes",
                "confidence": None if rng.random() < 0.05 else float(rng.uniform(0.15, 1.0)),
                "label": None,
                "user_id": None,
                "trust_tier": "gold",
                "flags": flags if rng.random() < 0.03 else None,
                "risk_score": float(rng.uniform(0, 1)),
                "source_id": "test",
                "input_hash": None,
            }
        )
    return rows


def to_batch(rows: Sequence[dict[str, Any]]) -> pa.RecordBatch:
    """A RecordBatch of the inference schema from Python rows."""
    return pa.RecordBatch.from_pylist(list(rows), schema=INFERENCE_ARROW_SCHEMA)


def oracle_sample(
    rows: Sequence[dict[str, Any]], policies: SamplingPolicies
) -> list[tuple[str, str, str, float, float, int]]:
    """The expected sample by brute force: (request_id, policy, reason, p, ht, stratum size).

    Written from the specification, independently of the vectorised code path: full sorts,
    the scalar reference hash, plain Python arithmetic.
    """
    strata: dict[tuple[str, datetime.date], list[dict[str, Any]]] = {}
    for row in rows:
        key = (row["tenant_id"], row["event_ts"].astimezone(datetime.UTC).date())
        strata.setdefault(key, []).append(row)
    expected = []
    for (tenant, _day), members in strata.items():
        policy = policies.policy_for(tenant)
        rules = policy.always_explain
        always: list[tuple[dict[str, Any], str]] = []
        rest: list[tuple[dict[str, Any], None]] = []
        for row in members:
            reason = next((f"always:{f}" for f in rules.flags if f in (row["flags"] or [])), None)
            c, r = row["confidence"], row["risk_score"]
            if reason is None and rules.confidence_below is not None and c is not None:
                reason = "always:low_confidence" if c < rules.confidence_below else None
            if reason is None and rules.risk_above is not None and r is not None:
                reason = "always:high_risk" if r > rules.risk_above else None
            if reason:
                always.append((row, reason))
            else:
                rest.append((row, None))
        for row, reason in always:
            expected.append((row["request_id"], policy.label, reason, 1.0, 1.0, len(always)))
        k, n = policy.budget_per_day, len(rest)
        ranked = []
        for row, _ in rest:
            if policy.sampler == "reservoir" or policy.weight == "uniform":
                w = 1.0
            elif policy.weight == "uncertainty":
                c = row["confidence"]
                w = 1.0 if c is None else max(1.0 - c, policy.weight_floor)
            else:
                r = row["risk_score"]
                w = 1.0 if r is None else max(r, policy.weight_floor)
            q = w / uniform_from_hash(row["request_id"], policies.seed)
            ranked.append((-q, row["request_id"], w))
        ranked.sort()
        tau = -ranked[k][0] if n > k else None
        for _, request_id, w in ranked[:k]:
            if tau is None:
                p = 1.0
            elif policy.sampler == "priority":
                p = min(1.0, w / tau)
            else:
                p = k / n
            expected.append((request_id, policy.label, policy.sampler, p, 1.0 / p, n))
    return expected


@pytest.fixture
def policy_doc() -> dict[str, Any]:
    """The small-budget policy as a parsed YAML document (a fresh copy per test)."""
    return copy.deepcopy(POLICY_DOC)


@pytest.fixture
def policies() -> SamplingPolicies:
    """Small budgets: acme k=7, globex reservoir, hooli risk-weighted, others the defaults."""
    return parse_policies(POLICY_DOC)


@pytest.fixture
def rows_factory() -> Callable[..., list[dict[str, Any]]]:
    """`synthetic_rows` as a fixture."""
    return synthetic_rows


@pytest.fixture
def batch_factory() -> Callable[[Sequence[dict[str, Any]]], pa.RecordBatch]:
    """`to_batch` as a fixture."""
    return to_batch


@pytest.fixture
def oracle() -> Callable[..., list[tuple[str, str, str, float, float, int]]]:
    """`oracle_sample` as a fixture."""
    return oracle_sample
