"""Build Arrow tables that honour the schema's required fields (Arrow alone does not check them)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc


def missing_required(table: pa.Table | pa.RecordBatch, schema: pa.Schema) -> list[str]:
    """Names of required top-level fields that hold a null somewhere in the table."""
    return [f.name for f in schema if not f.nullable and table[f.name].null_count > 0]


def strict_table(rows: Sequence[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """Rows -> Arrow table, raising ValueError if a required field is absent or null.

    `pa.Table.from_pylist` fills absent keys with nulls even for non-nullable fields, so a
    record missing a required column would otherwise reach Iceberg's writer.
    """
    table = pa.Table.from_pylist(list(rows), schema=schema)
    missing = missing_required(table, schema)
    if missing:
        bad = pc.indices_nonzero(pc.is_null(table[missing[0]])).to_pylist()[:5]
        raise ValueError(f"required fields {missing} are null or absent (rows {bad})")
    return table
