"""No raw user id in anything whylake writes: tables, metadata, replica, reports, SQL answers."""

from __future__ import annotations

import json
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.integration.conftest import DAY, POLICY, TEST_HASH_KEY
from whylake.jobs.batch_job import run_batch
from whylake.jobs.demo_data import generate_day
from whylake.jobs.demo_models import register_demo_models
from whylake.lake.audit import run_tenant_sql
from whylake.lake.catalog import (
    DEAD_LETTERS,
    EXPLANATIONS,
    NAMESPACE,
    CatalogConfig,
    ensure_tables,
    open_catalog,
)
from whylake.lake.opensearch import OpenSearchConfig
from whylake.lake.reconstruct import reconstruct
from whylake.pipelines.configs import BatchJobConfig, StoreConfig
from whylake.registry.store import ModelRegistry
from whylake.schemas.model_card import FeatureSpec, ModelCard
from whylake.transforms.sampling.policy import load_policies
from whylake.views.report import render_html

pytestmark = pytest.mark.integration
OPENSEARCH = f"http://127.0.0.1:{os.environ.get('WHYLAKE_OPENSEARCH_PORT', '9200')}"
# The demo's user ids are user-<n>; this test's planted records use user-7<digits>.
RAW_USER_ID = re.compile(r"user-\d+")
RAISES, NOT_FINITE = 123.0, 777.0


class Tripwire(torch.nn.Module):
    """A model that raises on one input (explain fails) and returns inf on another (check)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool((x[:, 0] == 123.0).any()):  # RAISES
            raise ValueError("tripwire: this input is refused")
        y = self.lin(x).squeeze(-1)
        return torch.where(x[:, 0] == 777.0, torch.full_like(y, float("inf")), y)  # NOT_FINITE


def _register_tripwire(registry: ModelRegistry) -> None:
    torch.manual_seed(0)
    module = torch.jit.script(Tripwire().eval())
    ref = np.random.default_rng(0).normal(size=(40, 2))
    scores = module(torch.tensor(ref, dtype=torch.float32)).detach().double().numpy()
    card = ModelCard(
        tenant_id="acme",
        model_id="tripwire",
        model_version="1",
        kind="linear",
        task="regression",
        features=(FeatureSpec("a"), FeatureSpec("b")),
        baseline=(0.0, 0.0),
        baseline_kind="zeros",
        output_name="y",
        output_description="a test score",
        decision_threshold=0.0,
    )
    registry.register(card, module, ref, scores)


def _planted_lines(valid: dict[str, Any]) -> list[str]:
    """Records carrying a user id that each stage must dead-letter (read ... check)."""

    def record(i: int, **changes: Any) -> dict[str, Any]:
        return {**valid, "request_id": f"planted-{i}", "user_id": f"user-7{i:05d}", **changes}

    tripwire = dict(model_id="tripwire", model_version="1", flags=["flagged"])
    return [
        json.dumps(record(1))[:-40],  # read: cut off after the user id
        json.dumps([record(2)]),  # read: a list around the record
        "tenant_id=acme user_id=user-700003 request_id=planted-3",  # read: not JSON
        json.dumps(record(4, event_ts="9999-12-31T23:59:59Z")),  # validate: far future
        json.dumps(record(5, user_id={"id": "user-700005"})),  # read: a user id of a wrong type
        json.dumps(record(6, features={"a": RAISES, "b": 1.0}, **tripwire)),  # explain
        json.dumps(record(7, features={"a": NOT_FINITE, "b": 1.0}, **tripwire)),  # check
        json.dumps(record(8, features={"a": 1.0, "b": 2.0}, **tripwire)),  # explained
    ]


@dataclass
class Written:
    home: Path
    inputs: list[Path]
    replica: OpenSearchConfig
    reports: list[str]
    sql_answers: list[str]


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Written:
    home = tmp_path_factory.mktemp("pii-home")
    registry = ModelRegistry(home / "models")
    register_demo_models(registry)
    _register_tripwire(registry)
    generated = generate_day(registry, home / "input", DAY, per_tenant=300)
    first = json.loads(generated.paths[0].read_text().splitlines()[0])
    planted = home / "input" / "planted.jsonl"
    planted.write_bytes(
        "\n".join(_planted_lines(first)).encode() + b'\n{"user_id": "user-700009", \xff}\n'
    )
    replica = OpenSearchConfig(url=OPENSEARCH, index_prefix=f"test-pii-{uuid.uuid4().hex[:8]}")
    if not replica.client().ping():
        pytest.fail(f"no OpenSearch at {OPENSEARCH}: start it with `make up`")
    store = StoreConfig(
        registry_root=str(home / "models"),
        policies=load_policies(POLICY),
        hash_key=TEST_HASH_KEY,
        catalog=CatalogConfig.embedded(home),
        opensearch=replica,
    )
    inputs = [*generated.paths, planted]
    summary = run_batch(BatchJobConfig(inputs=tuple(map(str, inputs)), store=store, day=DAY))
    assert summary.status != "failed", summary.record.warnings
    catalog = open_catalog(CatalogConfig.embedded(home))
    reports, answers = [], []
    for tenant in ("acme", "globex", "initech"):
        rows = run_tenant_sql(catalog, tenant, "SELECT request_id FROM explanations LIMIT 3")
        for request_id in rows["request_id"].to_pylist():
            reports.append(render_html(reconstruct(catalog, tenant, request_id)))
        for relation in ("explanations", "dead_letters", "runs"):
            answer = run_tenant_sql(catalog, tenant, f"SELECT * FROM {relation}")
            answers.append(json.dumps(answer.to_pylist(), default=str))
    yield Written(home, inputs, replica, reports, answers)
    client = replica.client()
    client.indices.delete(index=f"{replica.index_prefix}-*", ignore_unavailable=True)
    client.close()


def _iceberg_texts(home: Path) -> dict[str, str]:
    """Every row of every table, and every table's metadata and file statistics, as text."""
    catalog = open_catalog(CatalogConfig.embedded(home))
    ensure_tables(catalog)
    texts = {}
    for identifier in catalog.list_tables(NAMESPACE):
        table = catalog.load_table(identifier)
        name = ".".join(identifier)
        texts[name] = json.dumps(table.scan().to_arrow().to_pylist(), default=str)
        # Column bounds in the manifests hold the first characters of string values. A table
        # nothing was written to (reviews, in this run) has no snapshot and no manifest.
        entries = [] if table.current_snapshot() is None else table.inspect.entries().to_pylist()
        texts[f"{name} manifests"] = json.dumps(entries, default=lambda v: repr(v))
    for path in (home / "warehouse").rglob("*.json"):  # table metadata: snapshot summaries
        texts[str(path)] = path.read_text()
    return texts


def _replica_texts(replica: OpenSearchConfig) -> str:
    client = replica.client()
    try:
        client.indices.refresh(index=f"{replica.index_prefix}-*")
        response = client.search(
            index=f"{replica.index_prefix}-*", body={"query": {"match_all": {}}, "size": 10_000}
        )
    finally:
        client.close()
    hits = response["hits"]["hits"]
    assert hits, "the replica holds the explanations"
    return json.dumps(hits)


def test_the_inputs_do_hold_raw_user_ids(written: Written) -> None:
    # Else the scan below would prove nothing.
    for path in written.inputs:
        assert RAW_USER_ID.search(path.read_bytes().decode("utf-8", errors="replace")), path


def test_every_stage_wrote_dead_letters_holding_personal_fields(written: Written) -> None:
    catalog = open_catalog(CatalogConfig.embedded(written.home))
    letters = catalog.load_table(DEAD_LETTERS).scan().to_arrow().to_pylist()
    stages = {d["stage"] for d in letters}
    assert {"read", "validate", "explain", "check"} <= stages, stages
    planted = [d for d in letters if "user_id_hash" in d["record"]]
    assert len(planted) >= 8
    explained = catalog.load_table(EXPLANATIONS).scan(row_filter="request_id == 'planted-8'")
    assert explained.to_arrow().num_rows == 1  # the tripwire's good row next to its bad ones


def test_no_table_index_report_or_answer_holds_a_raw_user_id(written: Written) -> None:
    stores = {
        **_iceberg_texts(written.home),
        "opensearch": _replica_texts(written.replica),
        **{f"report {i}": html for i, html in enumerate(written.reports)},
        **{f"tenant sql {i}": text for i, text in enumerate(written.sql_answers)},
    }
    found = {name: RAW_USER_ID.findall(text)[:3] for name, text in stores.items()}
    assert not {name: ids for name, ids in found.items() if ids}
    assert {"whylake.explanations", "whylake.dead_letters", "whylake.runs"} <= set(stores)
