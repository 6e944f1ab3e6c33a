"""The OpenSearch mapping of the hot replica, derived from the explanation record's schema.

Attributions are stored whole but not indexed (`enabled: false`): as `nested` documents each
explanation cost 1 + n_features Lucene documents, which made indexing the replica's largest
cost. What search needs is a flat top-k instead: `top_features` (the TOP_K feature names by
|attribution|, largest first) and `attribution_top_1` ... `attribution_top_K` (feature, value,
abs_value). That keeps: "F among the top k", "F is the top feature", "F in the top k with
|attribution| >= t" (exact for top-k features), sorting by the largest |attribution|, and
every lookup by request, tenant, model or time. Lost: filters on features outside the top k,
or on input / baseline values; those are SQL over Iceberg (`whylake sql`), the system of record.
"""

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

# The replica's layout (mapping) version, part of every index name: an incompatible mapping
# change gets new indices instead of documents rejected by yesterday's strict mapping.
# Version 2: flat top-k attributions (version 1, unversioned names: nested attributions).
REPLICA_LAYOUT_VERSION = 2
LAYOUT = f"v{REPLICA_LAYOUT_VERSION}"

# Free text a person searches in; every other string is an exact-match keyword.
TEXT_FIELDS = frozenset({"summary", "input_text"})
# Stored for display, never searched: indexing them would only cost space.
UNINDEXED_FIELDS = frozenset({"explainer_config", "explainer_versions", "explanation_plan"})
# Kept whole in _source for display and reconstruction, not indexed at all.
STORED_ONLY_FIELDS = frozenset(
    {"attributions", "token_attributions", "counterfactuals", "shap_values"}
)
# The flat, searchable top-k of the attributions (derived by `top_attributions`).
TOP_K = 5
TOP_FEATURES = "top_features"


def top_field(rank: int) -> str:
    """The field holding the rank-th largest |attribution| (1-based)."""
    return f"attribution_top_{rank}"


def top_attributions(attributions: list[dict[str, Any]] | None) -> dict[str, Any]:
    """The derived top-k fields of one document, from its full attribution list."""
    ranked = sorted(attributions or (), key=lambda a: abs(a["value"]), reverse=True)[:TOP_K]
    out: dict[str, Any] = {TOP_FEATURES: [a["feature"] for a in ranked]}
    for rank, a in enumerate(ranked, start=1):
        out[top_field(rank)] = {
            "feature": a["feature"],
            "value": a["value"],
            "abs_value": abs(a["value"]),
        }
    return out


def _field_mapping(name: str, field_type: IcebergType) -> dict[str, Any]:
    if name in STORED_ONLY_FIELDS:
        return {"type": "object", "enabled": False}
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
        return _field_mapping(name, element)  # OpenSearch fields are multi-valued
    if isinstance(field_type, StructType):
        return {
            "type": "object",
            "properties": {f.name: _field_mapping(f.name, f.field_type) for f in field_type.fields},
        }
    raise TypeError(f"no OpenSearch mapping for {name}: {field_type}")


def explanation_mapping() -> dict[str, Any]:
    """Index mapping for explanation documents; `dynamic: strict` refuses unknown fields."""
    properties = {f.name: _field_mapping(f.name, f.field_type) for f in EXPLANATION_SCHEMA.fields}
    properties[TOP_FEATURES] = {"type": "keyword"}
    for rank in range(1, TOP_K + 1):
        properties[top_field(rank)] = {
            "properties": {
                "feature": {"type": "keyword"},
                "value": {"type": "double"},
                "abs_value": {"type": "double"},
            }
        }
    return {
        "dynamic": "strict",
        "_meta": {
            "whylake_schema_version": EXPLANATION_SCHEMA_VERSION,
            "replica_layout_version": REPLICA_LAYOUT_VERSION,
            "top_k": TOP_K,
        },
        "properties": properties,
    }


def index_template(
    prefix: str, *, shards: int = 1, replicas: int = 0, refresh_interval: str = "1s"
) -> dict[str, Any]:
    """The composable index template every `<prefix>-v<N>-<tenant>-<day>` index comes from.

    Indices are created by the first bulk write that names them (no per-call mapping), and
    each joins the read alias `<prefix>` (every tenant: for operators, never for tenants).
    """
    return {
        "index_patterns": [f"{prefix}-{LAYOUT}-*"],
        "priority": 100,
        "template": {
            "settings": {
                "number_of_shards": shards,
                "number_of_replicas": replicas,
                "refresh_interval": refresh_interval,
            },
            "mappings": explanation_mapping(),
            "aliases": {prefix: {}},
        },
        "_meta": {
            "whylake_schema_version": EXPLANATION_SCHEMA_VERSION,
            "replica_layout_version": REPLICA_LAYOUT_VERSION,
        },
    }
