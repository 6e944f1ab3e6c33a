"""The OpenSearch mapping of the hot replica, derived from the explanation record's schema."""

from __future__ import annotations

from typing import Any

from pyiceberg.types import (
    BooleanType,
    DoubleType,
    IcebergType,
    IntegerType,
    ListType,
    LongType,
    StringType,
    StructType,
    TimestamptzType,
)

from whylake.schemas.explanation import EXPLANATION_SCHEMA, EXPLANATION_SCHEMA_VERSION

# Free text a person searches in; every other string is an exact-match keyword.
TEXT_FIELDS = frozenset({"summary", "input_text"})
# Stored for display, never searched: indexing them would only cost space.
UNINDEXED_FIELDS = frozenset({"explainer_config", "explainer_versions", "explanation_plan"})
# Lists of structs searched field-with-value (e.g. feature = x AND value > y) need `nested`.
NESTED_FIELDS = frozenset({"attributions"})


def _field_mapping(name: str, field_type: IcebergType) -> dict[str, Any]:
    if isinstance(field_type, StringType):
        if name in UNINDEXED_FIELDS:
            return {"type": "keyword", "index": False, "doc_values": False}
        return {"type": "text"} if name in TEXT_FIELDS else {"type": "keyword"}
    if isinstance(field_type, TimestamptzType):
        return {"type": "date", "format": "strict_date_optional_time||epoch_millis"}
    if isinstance(field_type, DoubleType):
        return {"type": "double"}
    if isinstance(field_type, LongType):
        return {"type": "long"}
    if isinstance(field_type, IntegerType):
        return {"type": "integer"}
    if isinstance(field_type, BooleanType):
        return {"type": "boolean"}
    if isinstance(field_type, ListType):
        element = field_type.element_field.field_type
        inner = _field_mapping(name, element)
        if isinstance(element, StructType) and name in NESTED_FIELDS:
            inner["type"] = "nested"
        return inner  # OpenSearch fields are multi-valued: a list maps like its element
    if isinstance(field_type, StructType):
        return {
            "type": "object",
            "properties": {f.name: _field_mapping(f.name, f.field_type) for f in field_type.fields},
        }
    raise TypeError(f"no OpenSearch mapping for {name}: {field_type}")


def explanation_mapping() -> dict[str, Any]:
    """Index mapping for explanation documents; `dynamic: strict` refuses unknown fields."""
    return {
        "dynamic": "strict",
        "_meta": {"whylake_schema_version": EXPLANATION_SCHEMA_VERSION},
        "properties": {
            f.name: _field_mapping(f.name, f.field_type) for f in EXPLANATION_SCHEMA.fields
        },
    }
