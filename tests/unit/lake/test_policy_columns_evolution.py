"""Rows written before the producer / policy columns (schema version 3) stay readable."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
from pyiceberg.schema import Schema

from tests.unit.lake.conftest import append_explanations, explanation_row
from whylake.lake.catalog import (
    EXPLANATIONS,
    TABLE_PROPERTIES,
    CatalogConfig,
    ensure_tables,
    open_catalog,
)
from whylake.lake.reconstruct import reconstruct
from whylake.schemas.explanation import EXPLANATION_PARTITION_SPEC, EXPLANATION_SCHEMA
from whylake.views.tiers import build_view

# The explanation table as version 2 wrote it: before field ids 120-149 (what the producer
# sent, the policy).
OLD_SCHEMA = Schema(*(f for f in EXPLANATION_SCHEMA.fields if f.field_id < 120))
NEW_COLUMNS = [f.name for f in EXPLANATION_SCHEMA.fields if 120 <= f.field_id < 150]


def test_old_rows_read_with_the_new_columns_null(tmp_path: Path) -> None:
    catalog = open_catalog(CatalogConfig.embedded(tmp_path))
    catalog.create_namespace("whylake")
    table = catalog.create_table(
        EXPLANATIONS,
        schema=OLD_SCHEMA,
        partition_spec=EXPLANATION_PARTITION_SPEC,
        properties=TABLE_PROPERTIES,
    )
    old = explanation_row("acme", "r-old", policy_version="2026-11-01/priority")
    for name in NEW_COLUMNS:
        del old[name]
    table.append(pa.Table.from_pylist([old], schema=table.schema().as_arrow()))
    assert "policy_hash" not in {f.name for f in table.schema().fields}

    tables = ensure_tables(catalog)  # what every job and the API run first
    evolved = {f.name: f for f in tables[EXPLANATIONS].schema().fields}
    assert set(NEW_COLUMNS) <= set(evolved)
    assert all(not evolved[n].required for n in NEW_COLUMNS)
    # Old columns keep the ids their files were written with (Iceberg resolves by id).
    before = {f.name: f.field_id for f in table.schema().fields}
    assert all(evolved[name].field_id == i for name, i in before.items())

    new = explanation_row("acme", "r-new", trust_tier="gold", policy_hash="ab" * 32)
    append_explanations(catalog, [new], "b-new")
    rows = {
        r["request_id"]: r for r in catalog.load_table(EXPLANATIONS).scan().to_arrow().to_pylist()
    }
    assert all(rows["r-old"][n] is None for n in NEW_COLUMNS)
    assert rows["r-old"]["policy_version"] == "2026-11-01/priority"
    assert (rows["r-new"]["trust_tier"], rows["r-new"]["policy_hash"]) == ("gold", "ab" * 32)

    # An old record still reconstructs and renders in every tier.
    rec = reconstruct(catalog, "acme", "r-old")
    for tier in (1, 2, 3, 4):
        view = build_view(rec, tier)
        assert view.template_version == "v2" and view.text.strip()
    assert rec.history[0]["policy_hash"] is None
