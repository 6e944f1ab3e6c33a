"""The dead letter: a record a stage could not process, kept with the reason."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import NamedTuple

import pyarrow as pa
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.transforms import DayTransform, IdentityTransform
from pyiceberg.types import NestedField, StringType, TimestamptzType

DEAD_LETTER_SCHEMA = Schema(
    NestedField(
        1,
        "dead_letter_id",
        StringType(),
        required=True,
        doc="sha256 of (stage, source, record): a replay adds no duplicate",
    ),
    NestedField(2, "run_id", StringType(), required=True),
    NestedField(3, "stage", StringType(), required=True, doc="read / validate / explain / check"),
    NestedField(4, "error_type", StringType(), required=True),
    NestedField(5, "error_message", StringType(), required=True),
    NestedField(6, "failed_at", TimestamptzType(), required=True),
    NestedField(7, "tenant_id", StringType(), required=True, doc="'_unknown' when unparseable"),
    NestedField(8, "request_id", StringType(), required=False),
    NestedField(9, "source", StringType(), required=False, doc="File and line, or topic/offset"),
    NestedField(10, "record", StringType(), required=True, doc="The offending record, as received"),
)

DEAD_LETTER_PARTITION_SPEC = PartitionSpec(
    PartitionField(source_id=7, field_id=1000, transform=IdentityTransform(), name="tenant_id"),
    PartitionField(source_id=6, field_id=1001, transform=DayTransform(), name="failed_day"),
)

DEAD_LETTER_ARROW_SCHEMA: pa.Schema = DEAD_LETTER_SCHEMA.as_arrow()
UNKNOWN_TENANT = "_unknown"


class DeadLetter(NamedTuple):
    """The Beam element type of a dead letter; a test checks it against DEAD_LETTER_SCHEMA."""

    dead_letter_id: str
    run_id: str
    stage: str
    error_type: str
    error_message: str
    failed_at: datetime
    tenant_id: str
    request_id: str | None
    source: str | None
    record: str


def dead_letter(
    *,
    run_id: str,
    stage: str,
    error: BaseException | str,
    record: object,
    source: str | None,
    tenant_id: str | None = None,
    request_id: str | None = None,
    error_type: str | None = None,
) -> DeadLetter:
    """Build a dead letter whose id depends only on (stage, source, record): replays dedupe."""
    text = record if isinstance(record, str) else json.dumps(record, sort_keys=True, default=str)
    key = hashlib.sha256(f"{stage}\x1f{source}\x1f{text}".encode()).hexdigest()
    return DeadLetter(
        dead_letter_id=key,
        run_id=run_id,
        stage=stage,
        error_type=error_type
        or (type(error).__name__ if isinstance(error, BaseException) else "InvalidRecord"),
        error_message=str(error)[:2000],
        failed_at=datetime.now(UTC),
        tenant_id=tenant_id or UNKNOWN_TENANT,
        request_id=request_id,
        source=source,
        record=text,
    )
