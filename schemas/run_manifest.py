"""The run manifest: one row per job run, with what went in, what came out and where."""

from __future__ import annotations

import pyarrow as pa
from pyiceberg.schema import Schema
from pyiceberg.types import (
    DoubleType,
    ListType,
    LongType,
    NestedField,
    StringType,
    TimestamptzType,
)

RUN_SCHEMA = Schema(
    NestedField(1, "run_id", StringType(), required=True),
    NestedField(2, "job", StringType(), required=True, doc="batch / stream"),
    NestedField(
        3,
        "status",
        StringType(),
        required=True,
        doc="started / succeeded / succeeded_with_warnings / failed / stopped",
    ),
    NestedField(4, "started_at", TimestamptzType(), required=True),
    NestedField(5, "finished_at", TimestamptzType(), required=False, doc="None while started"),
    NestedField(6, "runner", StringType(), required=True),
    NestedField(7, "inputs", ListType(8, StringType(), element_required=True), required=True),
    NestedField(9, "tenants", ListType(10, StringType(), element_required=True), required=True),
    NestedField(11, "records_read", LongType(), required=True),
    NestedField(12, "records_invalid", LongType(), required=True),
    NestedField(13, "records_sampled", LongType(), required=True),
    NestedField(14, "records_explained", LongType(), required=True),
    NestedField(15, "records_failed", LongType(), required=True, doc="Sampled but not explained"),
    NestedField(16, "records_committed", LongType(), required=True, doc="New explanation rows"),
    NestedField(17, "records_already_present", LongType(), required=True, doc="Idempotent replays"),
    NestedField(18, "snapshot_ids", ListType(19, LongType(), element_required=True), required=True),
    NestedField(20, "elapsed_s", DoubleType(), required=False),
    NestedField(
        21, "config", StringType(), required=True, doc="Canonical JSON of the job settings"
    ),
    NestedField(
        22, "versions", StringType(), required=True, doc="JSON of code and library versions"
    ),
    NestedField(23, "warnings", ListType(24, StringType(), element_required=True), required=True),
    NestedField(
        25, "replica_lag", LongType(), required=False, doc="Explanations not yet in the hot replica"
    ),
    NestedField(
        26,
        "entry_id",
        StringType(),
        required=False,  # added after the first release: older rows have none (one per run)
        doc="<run_id>/started or <run_id>/final: a run writes one of each",
    ),
)

RUN_ARROW_SCHEMA: pa.Schema = RUN_SCHEMA.as_arrow()
