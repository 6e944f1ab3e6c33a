"""The dead-letter output every stage shares: one tag, and a dead letter built from a row.

Each composite that can refuse a record returns it on the tagged output `dead_letters`
(Beam's `with_outputs(DEAD_LETTERS, main=...)`), as a `DeadLetter` with the stage, the error,
the run id and the record itself; the jobs flatten them into `whylake.dead_letters`.
"""

from __future__ import annotations

from typing import Any

from whylake.schemas.dead_letter import DeadLetter, dead_letter

DEAD_LETTERS = "dead_letters"


def row_dead_letter(
    row: dict[str, Any], error: BaseException, run_id: str, stage: str
) -> DeadLetter:
    """A dead letter for an inference row (its feature map made JSON-readable)."""
    printable = dict(row)
    if "features" in printable:
        printable["features"] = dict(printable.get("features") or [])
    return dead_letter(
        run_id=run_id,
        stage=stage,
        error=error,
        record=printable,
        source=row.get("source_id", row.get("source")),
        tenant_id=row.get("tenant_id"),
        request_id=row.get("request_id"),
    )
