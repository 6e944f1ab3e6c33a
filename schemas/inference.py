"""The inference record: one logged prediction, the input of every whylake job."""

from __future__ import annotations

import pyarrow as pa
from pyiceberg.schema import Schema
from pyiceberg.types import (
    DoubleType,
    ListType,
    MapType,
    NestedField,
    StringType,
    TimestamptzType,
)

INFERENCE_SCHEMA_VERSION = 1

# Field ids are fixed forever: Iceberg resolves columns by id, so renaming a column later
# keeps old files readable. Add new fields with new ids; never reuse one.
INFERENCE_SCHEMA = Schema(
    NestedField(1, "tenant_id", StringType(), required=True, doc="Tenant that owns the request"),
    NestedField(2, "request_id", StringType(), required=True, doc="Unique per tenant"),
    NestedField(
        3, "event_ts", TimestamptzType(), required=True, doc="When the prediction was made"
    ),
    NestedField(4, "model_id", StringType(), required=True),
    NestedField(5, "model_version", StringType(), required=True),
    NestedField(
        6,
        "features",
        MapType(7, StringType(), 8, DoubleType(), value_required=True),
        required=True,
        doc="Named feature values in the model's raw input units",
    ),
    NestedField(9, "score", DoubleType(), required=True, doc="The model output that is explained"),
    NestedField(10, "predicted_class", StringType(), required=False),
    NestedField(11, "confidence", DoubleType(), required=False, doc="max class probability"),
    NestedField(12, "label", StringType(), required=False, doc="Ground truth, when known"),
    NestedField(13, "user_id", StringType(), required=False, doc="Hashed before storage"),
    NestedField(14, "trust_tier", StringType(), required=False),
    NestedField(
        15,
        "flags",
        ListType(16, StringType(), element_required=True),
        required=False,
        doc="e.g. flagged, disputed, high_risk",
    ),
    NestedField(17, "risk_score", DoubleType(), required=False),
    NestedField(18, "source_id", StringType(), required=False, doc="Where the record came from"),
    NestedField(19, "input_hash", StringType(), required=False, doc="Producer's hash of the input"),
    NestedField(20, "text", StringType(), required=False, doc="The input of a text model"),
)

INFERENCE_ARROW_SCHEMA: pa.Schema = INFERENCE_SCHEMA.as_arrow()
REQUIRED_COLUMNS: tuple[str, ...] = tuple(f.name for f in INFERENCE_SCHEMA.fields if f.required)
