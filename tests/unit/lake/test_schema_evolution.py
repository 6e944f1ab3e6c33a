"""Rows written before the model-kind columns (schema version 1) stay readable and rebuildable."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from pyiceberg.schema import Schema
from pyiceberg.types import NestedField

from tests.unit.lake.conftest import append_explanations, explanation_row
from tests.unit.lake.test_duckdb_reader import _extension
from whylake.lake.catalog import (
    EXPLANATIONS,
    NAMESPACE,
    TABLE_PROPERTIES,
    CatalogConfig,
    ensure_tables,
    open_catalog,
)
from whylake.lake.reconstruct import reconstruct
from whylake.schemas.arrow import strict_table
from whylake.schemas.explanation import EXPLANATION_PARTITION_SPEC, EXPLANATION_SCHEMA
from whylake.schemas.opensearch import explanation_mapping

NEW_COLUMNS = {f.name for f in EXPLANATION_SCHEMA.fields if 90 <= f.field_id <= 119}
# The contract as schema version 1 wrote it: no model-kind columns, stability required.
V1 = Schema(
    *(
        NestedField(f.field_id, f.name, f.field_type, required=True, doc=f.doc)
        if f.name == "stability"
        else f
        for f in EXPLANATION_SCHEMA.fields
        # Nor the producer / policy columns of version 3 (test_policy_columns_evolution.py).
        if f.name not in NEW_COLUMNS and f.field_id < 120
    )
)


def _tokens() -> list[dict[str, object]]:
    return [
        {"token": "great", "value": 0.8, "start": 4, "end": 9, "token_id": 11},
        {"token": "food", "value": -0.1, "start": 10, "end": 14, "token_id": 9},
    ]


@pytest.fixture
def evolved(tmp_path: Path):  # type: ignore[no-untyped-def]
    catalog = open_catalog(CatalogConfig.embedded(tmp_path))
    catalog.create_namespace(NAMESPACE)
    old = catalog.create_table(
        EXPLANATIONS,
        schema=V1,
        partition_spec=EXPLANATION_PARTITION_SPEC,
        properties=TABLE_PROPERTIES,
    )
    ids_before = {f.name: f.field_id for f in old.schema().fields}
    row = explanation_row("acme", "r-old", schema_version=1)
    # What a version-1 writer committed (cast to the table's own field ids, as lake.commit does).
    old.append(strict_table([row], V1.as_arrow()).cast(old.schema().as_arrow()))
    old_snapshot = old.current_snapshot().snapshot_id
    table = ensure_tables(catalog)[EXPLANATIONS]
    new_row = {
        **explanation_row("globex", "r-new", stability=None, attributions=[]),
        "model_kind": "hf-text",
        "explainer_kind": "token_integrated_gradients",
        "explained_output": "logit",
        "token_attributions": _tokens(),
        "input_text": "the great food",
    }
    append_explanations(catalog, [new_row], "b2")
    return catalog, table, ids_before, old_snapshot, tmp_path


def test_evolution_adds_the_columns_with_new_ids_and_keeps_the_old_ones(evolved) -> None:  # type: ignore[no-untyped-def]
    catalog, table, ids_before, _, _ = evolved
    schema = catalog.load_table(EXPLANATIONS).schema()
    fields = {f.name: f for f in schema.fields}
    assert set(fields) >= NEW_COLUMNS
    assert all(not fields[n].required for n in NEW_COLUMNS)
    assert not fields["stability"].required  # relaxed: non-IG explainers have none
    assert all(fields[n].field_id == i for n, i in ids_before.items())  # old ids untouched
    assert min(fields[n].field_id for n in NEW_COLUMNS) > max(ids_before.values())


def test_old_snapshots_and_old_rows_stay_readable(evolved) -> None:  # type: ignore[no-untyped-def]
    catalog, table, _, old_snapshot, _ = evolved
    table = catalog.load_table(EXPLANATIONS)
    then = table.scan(snapshot_id=old_snapshot).to_arrow()
    assert then.column("request_id").to_pylist() == ["r-old"]
    now = {r["request_id"]: r for r in table.scan().to_arrow().to_pylist()}
    assert set(now) == {"r-old", "r-new"}
    assert now["r-old"]["model_kind"] is None and now["r-old"]["stability"] == 0.95
    assert now["r-new"]["token_attributions"][0]["token"] == "great"
    # Reconstruction of a version-1 row, as of its own snapshot and today.
    for snapshot_id in (old_snapshot, None):
        record = reconstruct(catalog, "acme", "r-old", snapshot_id=snapshot_id).record
        assert record["schema_version"] == 1 and record["attributions"]
    assert reconstruct(catalog, "globex", "r-new").record["input_text"] == "the great food"


def test_duckdb_reads_both_schema_versions(evolved) -> None:  # type: ignore[no-untyped-def]
    catalog, _, _, old_snapshot, _ = evolved
    path = catalog.load_table(EXPLANATIONS).metadata_location
    con = duckdb.connect(config={"autoinstall_known_extensions": False})
    con.execute(f"LOAD '{_extension('duckdb_extension_avro', 'avro')}'")
    con.execute(f"LOAD '{_extension('duckdb_extension_iceberg', 'iceberg')}'")
    rows = con.execute(
        f"SELECT request_id, model_kind, len(token_attributions) FROM iceberg_scan('{path}') "
        "ORDER BY request_id"
    ).fetchall()
    assert rows == [("r-new", "hf-text", 2), ("r-old", None, None)]
    then = con.execute(
        f"SELECT count(*) FROM iceberg_scan('{path}', snapshot_from_id => {old_snapshot})"
    ).fetchone()
    assert then == (1,)


def test_the_replica_mapping_has_the_new_columns() -> None:
    mapping = explanation_mapping()["properties"]
    assert set(mapping) >= NEW_COLUMNS
    assert mapping["input_text"]["type"] == "text"
    # nested attributions are kept in the document but not indexed (the flat top-k fields are)
    assert mapping["token_attributions"] == {"type": "object", "enabled": False}
