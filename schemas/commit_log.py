"""The commit log: one row per snapshot of a whylake table, kept after the snapshot expires."""

from __future__ import annotations

import pyarrow as pa
from pyiceberg.schema import Schema
from pyiceberg.types import IntegerType, LongType, NestedField, StringType, TimestamptzType

# Snapshot expiry removes a snapshot's id, time and lineage from the table's metadata, while
# its data files stay live in every later snapshot of an append-only table. These rows keep
# what time travel needs of it: the state as of T is every file whose data sequence number is
# at most that of the commit current at T (lake/history.py).
COMMIT_LOG_SCHEMA = Schema(
    NestedField(
        1, "commit_id", StringType(), required=True, doc="<table>@<snapshot id>: one row each"
    ),
    NestedField(2, "table_name", StringType(), required=True, doc="e.g. whylake.explanations"),
    NestedField(3, "snapshot_id", LongType(), required=True),
    NestedField(4, "parent_snapshot_id", LongType(), required=False),
    NestedField(
        5,
        "sequence_number",
        LongType(),
        required=True,
        doc="Iceberg data sequence number: the files this commit added carry it",
    ),
    NestedField(6, "committed_at", TimestamptzType(), required=True, doc="The snapshot's time"),
    NestedField(7, "operation", StringType(), required=False, doc="append, overwrite, ..."),
    NestedField(8, "run_id", StringType(), required=False, doc="whylake.run-id of the summary"),
    NestedField(9, "batch_id", StringType(), required=False, doc="whylake.batch-id"),
    NestedField(10, "schema_id", IntegerType(), required=False, doc="The schema it was read by"),
    NestedField(11, "added_records", LongType(), required=False),
    NestedField(12, "recorded_at", TimestamptzType(), required=True, doc="When it was logged"),
)

COMMIT_LOG_ARROW_SCHEMA: pa.Schema = COMMIT_LOG_SCHEMA.as_arrow()
