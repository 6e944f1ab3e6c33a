"""A small real lake (SQLite catalog, local warehouse) with a few tenants and several snapshots."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.expressions import In

from tests.unit.keys import TEST_PII
from whylake.lake.catalog import (
    DEAD_LETTERS,
    EXPLANATIONS,
    RUNS,
    CatalogConfig,
    ensure_tables,
    open_catalog,
)
from whylake.lake.commit import append_once
from whylake.schemas.arrow import strict_table
from whylake.schemas.dead_letter import DEAD_LETTER_ARROW_SCHEMA, dead_letter
from whylake.schemas.explanation import EXPLANATION_ARROW_SCHEMA, EXPLANATION_SCHEMA_VERSION
from whylake.schemas.ids import explanation_id as make_explanation_id
from whylake.schemas.run_manifest import RUN_ARROW_SCHEMA

EVENT_DAY = datetime(2024, 5, 1, 9, 30, tzinfo=UTC)

# A linear model f(x) = b + sum(w_i * x_i) with a zero baseline: Integrated Gradients gives
# exactly w_i * x_i per feature (Sundararajan et al. 2017), so the rows are self-consistent.
_WEIGHTS = {"income": 0.002, "debt_ratio": -1.5, "age": 0.01, "late_payments": -0.4}
_INPUTS = {"income": 120.0, "debt_ratio": 0.35, "age": 41.0, "late_payments": 2.0}
_BASE_VALUE = 0.1


def explanation_row(
    tenant_id: str,
    request_id: str,
    *,
    model_version: str = "1.0.0",
    explainer_method: str = "integrated_gradients",
    explained_at: datetime = EVENT_DAY + timedelta(hours=1),
    event_ts: datetime = EVENT_DAY,
    inputs: dict[str, float] | None = None,
    counterfactuals: list[dict[str, Any]] | None = None,
    run_id: str = "run-1",
    **overrides: Any,
) -> dict[str, Any]:
    """One explanation record matching EXPLANATION_ARROW_SCHEMA; overrides replace any field."""
    inputs = dict(inputs or _INPUTS)
    attributions = [
        {
            "feature": name,
            "value": _WEIGHTS.get(name, 0.1) * x,
            "input_value": x,
            "baseline_value": 0.0,
        }
        for name, x in inputs.items()
    ]
    prediction = _BASE_VALUE + sum(a["value"] for a in attributions)
    config = json.dumps({"method": explainer_method, "steps": 50}, sort_keys=True)
    sha = hashlib.sha256(f"model-{model_version}".encode()).hexdigest()
    # The production id (event time included): the commit protocol's time-bounded key check
    # relies on rows with one id having one event time.
    explanation_id = make_explanation_id(
        tenant_id, request_id, event_ts, sha, hashlib.sha256(config.encode()).hexdigest(), "-"
    )
    row: dict[str, Any] = {
        "explanation_id": explanation_id,
        "tenant_id": tenant_id,
        "request_id": request_id,
        "event_ts": event_ts,
        "explained_at": explained_at,
        "run_id": run_id,
        "model_id": "credit-risk",
        "model_version": model_version,
        "model_sha256": sha,
        "output_name": "probability of default",
        "prediction": prediction,
        "logged_score": prediction,
        "predicted_class": "approve" if prediction < 0.5 else "decline",
        "user_id_hash": None,
        "input_hash": hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest(),
        "source": f"file:///logs/{tenant_id}/2024-05-01.jsonl",
        "policy_version": "p1",
        "schema_version": EXPLANATION_SCHEMA_VERSION,
        "summary": f"The score of {prediction:.2f} was driven mostly by late_payments.",
        "flags": [],
        "explainer_method": explainer_method,
        "explainer_config": config,
        "explainer_config_hash": hashlib.sha256(config.encode()).hexdigest(),
        "explainer_versions": json.dumps({"captum": "0.9.0", "torch": "2.13.0"}),
        "baseline_kind": "zeros",
        "seed": 7,
        "base_value": _BASE_VALUE,
        "device": "cpu",
        "attributions": attributions,
        "shap_values": None,
        "completeness_error": 1e-7,
        "shap_additivity_error": None,
        "stability": 0.95,
        "score_drift": 0.0,
        "counterfactual_status": "found" if counterfactuals else "not_requested",
        "counterfactuals": counterfactuals,
        "sampling_policy": "priority-v1",
        "sampling_reason": "priority",
        "inclusion_probability": 0.25,
        "ht_weight": 4.0,
        "stratum_size": 1000,
        # 120-149: what the producer sent and the explanation policy (optional columns).
        "trust_tier": "silver",
        "confidence": 0.8,
        "label": None,
        "risk_score": 0.2,
        "producer_input_hash": None,
        "input_hash_mismatch": None,
        "policy_hash": None,
        "template_version": None,
        "explainer_agreement": None,
        "agreement_method": None,
        "review_route": None,
        "review_reasons": None,
        "explanation_plan": None,
    }
    unknown = set(overrides) - set(row)
    if unknown:
        raise KeyError(f"explanation_row got fields not in the schema: {sorted(unknown)}")
    row.update(overrides)
    return row


def explanation_table(rows: Iterable[dict[str, Any]]) -> pa.Table:
    """Rows as an Arrow table with the exact explanation schema (required fields checked)."""
    return strict_table(list(rows), EXPLANATION_ARROW_SCHEMA)


def append_explanations(catalog: Catalog, rows: list[dict[str, Any]], batch_id: str) -> int:
    """Commit rows in one idempotent snapshot; return its id."""
    tenants = sorted({r["tenant_id"] for r in rows})
    result = append_once(
        catalog,
        EXPLANATIONS,
        explanation_table(rows),
        key="explanation_id",
        scope=In("tenant_id", tenants),
        run_id=rows[0]["run_id"],
        batch_id=batch_id,
    )
    assert result.snapshot_id is not None, f"batch {batch_id} committed nothing"
    return result.snapshot_id


@dataclass(frozen=True)
class SeededLake:
    """The seeded lake and the facts the tests check against."""

    home: Path
    catalog: Catalog
    first_snapshot_id: int  # acme r-1 (v1), acme r-2, globex r-1, globex r-2
    second_snapshot_id: int  # acme r-1 re-explained (v2, SHAP), acme r-3, globex r-9
    between: datetime  # a time after the first commit and before the second


def _counterfactual() -> list[dict[str, Any]]:
    return [
        {
            "rank": 0,
            "score": 0.31,
            "valid": True,
            "proximity": 0.8,
            "sparsity": 2,
            "plausibility": 0.4,
            "changes": [
                {"feature": "late_payments", "from_value": 2.0, "to_value": 0.0},
                {"feature": "debt_ratio", "from_value": 0.35, "to_value": 0.2},
            ],
        }
    ]


def _run_row(run_id: str, tenants: list[str], snapshot_ids: list[int]) -> dict[str, Any]:
    start = EVENT_DAY + timedelta(days=1)
    return {
        "run_id": run_id,
        "job": "batch",
        "status": "succeeded",
        "started_at": start,
        "finished_at": start + timedelta(minutes=3),
        "runner": "FnApiRunner",
        "inputs": [f"file:///logs/{t}/2024-05-01.jsonl" for t in tenants],
        "tenants": tenants,
        "records_read": 1000,
        "records_invalid": 3,
        "records_sampled": 40,
        "records_explained": 40,
        "records_failed": 0,
        "records_committed": 40,
        "records_already_present": 0,
        "snapshot_ids": snapshot_ids,
        "elapsed_s": 180.0,
        "config": json.dumps({"tenants": tenants}),
        "versions": json.dumps({"whylake": "0.1.0"}),
        "warnings": [f"{t}: 3 invalid records" for t in tenants],
        "replica_lag": None,
    }


@pytest.fixture(scope="session")
def seeded_lake(tmp_path_factory: pytest.TempPathFactory) -> SeededLake:
    """Two tenants, two explanation snapshots, dead letters and runs; read-only for tests."""
    home = tmp_path_factory.mktemp("lake")
    catalog = open_catalog(CatalogConfig.embedded(home))
    ensure_tables(catalog)
    first = append_explanations(
        catalog,
        [
            explanation_row("acme", "r-1", counterfactuals=_counterfactual()),
            explanation_row("acme", "r-2", inputs={"income": 80.0, "debt_ratio": 0.6}),
            explanation_row("globex", "r-1", model_version="9.9.9"),
            explanation_row("globex", "r-2"),
        ],
        batch_id="b-1",
    )
    first_ms = catalog.load_table(EXPLANATIONS).snapshot_by_id(first).timestamp_ms
    # Iceberg time travel has millisecond resolution: make sure the second commit is later.
    while datetime.now(UTC).timestamp() * 1000 < first_ms + 5:
        pass
    second = append_explanations(
        catalog,
        [
            explanation_row(
                "acme",
                "r-1",
                model_version="2.0.0",
                explainer_method="kernel_shap",
                explained_at=EVENT_DAY + timedelta(days=30),
                run_id="run-2",
            ),
            explanation_row("acme", "r-3", run_id="run-2", event_ts=EVENT_DAY + timedelta(days=1)),
            explanation_row("globex", "r-9", run_id="run-2"),
        ],
        batch_id="b-2",
    )
    second_ms = catalog.load_table(EXPLANATIONS).snapshot_by_id(second).timestamp_ms
    assert second_ms > first_ms
    between = datetime.fromtimestamp((first_ms + 1) / 1000, UTC)

    letters = [
        dead_letter(
            run_id="run-1",
            stage="validate",
            error="score is NaN",
            record={"x": t},
            source=f"{t}.jsonl:1",
            tenant_id=t,
            request_id=f"{t}-bad",
            pii=TEST_PII,
        )
        for t in ("acme", "globex", "globex")
    ]
    letters[2] = letters[2]._replace(dead_letter_id="other", request_id="globex-bad-2")
    append_once(
        catalog,
        DEAD_LETTERS,
        pa.Table.from_pylist([d._asdict() for d in letters], schema=DEAD_LETTER_ARROW_SCHEMA),
        key="dead_letter_id",
        scope=In("tenant_id", ["acme", "globex"]),
        run_id="run-1",
        batch_id="dl-1",
    )
    runs = [
        _run_row("run-1", ["acme", "globex"], [first]),
        _run_row("run-2", ["acme", "globex"], [second]),
        _run_row("run-3", ["globex"], []),
    ]
    append_once(
        catalog,
        RUNS,
        pa.Table.from_pylist(runs, schema=RUN_ARROW_SCHEMA),
        key="run_id",
        scope=In("run_id", [r["run_id"] for r in runs]),
        run_id="run-3",
        batch_id="runs-1",
    )
    return SeededLake(home, catalog, first, second, between)


@pytest.fixture
def lake_catalog(tmp_path: Path) -> Catalog:
    """A fresh, empty catalog with the whylake tables, for tests that write."""
    catalog = open_catalog(CatalogConfig.embedded(tmp_path))
    ensure_tables(catalog)
    return catalog


@pytest.fixture
def make_row() -> Callable[..., dict[str, Any]]:
    """The explanation row factory (`explanation_row`), for tests outside this module."""
    return explanation_row


@pytest.fixture
def commit_rows() -> Callable[[Catalog, list[dict[str, Any]], str], int]:
    """Commit explanation rows as one snapshot and return its id (`append_explanations`)."""
    return append_explanations
