"""The dead-letter output every stage shares: one tag, and a dead letter built from a row.

Each composite that can refuse a record returns it on the tagged output `dead_letters`
(Beam's `with_outputs(DEAD_LETTERS, main=...)`), as a `DeadLetter` with the stage, the error,
the run id and the record itself (personal fields only as keyed hashes, see
`whylake.schemas.pii`); the jobs flatten them into `whylake.dead_letters`.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from whylake.schemas.dead_letter import DeadLetter, dead_letter
from whylake.schemas.pii import PiiPolicy

DEAD_LETTERS = "dead_letters"


def row_dead_letter(
    row: dict[str, Any], error: BaseException, run_id: str, stage: str, pii: PiiPolicy
) -> DeadLetter:
    """A dead letter for an inference row (its feature map made JSON-readable)."""
    printable = dict(row)
    if "features" in printable:
        with contextlib.suppress(TypeError, ValueError):  # not pairs: kept as it came
            printable["features"] = dict(printable.get("features") or [])
    return dead_letter(
        run_id=run_id,
        stage=stage,
        error=error,
        record=printable,
        source=row.get("source_id", row.get("source")),
        tenant_id=row.get("tenant_id"),
        request_id=row.get("request_id"),
        pii=pii,
    )


def arrow_row(batch: pa.RecordBatch | pa.Table, index: int) -> dict[str, Any]:
    """Row `index` as plain Python values, whatever it holds; it never raises.

    A dead letter must be buildable from any row, including the ones Python cannot represent:
    a Parquet time of year 20000 or -1199 fits an Arrow timestamp but not a `datetime`, so
    such a value is kept as Arrow's text of it, and anything else unreadable as its repr.
    """
    row: dict[str, Any] = {}
    for name in batch.schema.names:
        column = batch.column(name).slice(index, 1)
        try:
            value = column.to_pylist()[0]
        except Exception:  # noqa: BLE001 - any value at all must still become a dead letter
            try:
                value = pc.cast(column, pa.string()).to_pylist()[0]
            except Exception:  # noqa: BLE001
                value = f"<unreadable {column.type}>"
        if isinstance(batch.schema.field(name).type, pa.MapType) and isinstance(value, list):
            value = dict(value)
        row[name] = value
    return row
