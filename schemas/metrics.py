"""The monitoring tables: per-slice SLIs of the explanation pipeline, and alerts raised on them."""

from __future__ import annotations

import pyarrow as pa
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.transforms import IdentityTransform, MonthTransform
from pyiceberg.types import (
    BooleanType,
    DateType,
    DoubleType,
    IntegerType,
    ListType,
    LongType,
    NestedField,
    StringType,
    StructType,
    TimestamptzType,
)

# Upper bounds (seconds) of the event-time -> committed latency histogram, Prometheus-style
# (`le`): bucket i counts latencies <= LATENCY_BOUNDS_S[i] and above the bound before it; one
# more bucket counts the rest. Fixed forever, so histograms of different slices add up; a
# latency SLO's threshold must be one of these bounds (its good events are read off the buckets).
LATENCY_BOUNDS_S: tuple[float, ...] = (
    1.0,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
    7200.0,
    21600.0,
    43200.0,
    86400.0,
    129600.0,
    172800.0,
    259200.0,
    604800.0,
)

IMPORTANCE_TYPE = StructType(
    NestedField(81, "feature", StringType(), required=True),
    NestedField(82, "value", DoubleType(), required=True, doc="HT-weighted mean |attribution|"),
    NestedField(83, "std_error", DoubleType(), required=True, doc="Its sampling standard error"),
)

# One row per tenant x model version x UTC day (batch) or window pane (streaming) x run. Field
# ids are fixed forever, grouped by section: 1-19 the slice, 20-39 counts and coverage,
# 40-49 latency, 50-54 cost, 55-64 fidelity, 65-69 stability, 70-79 offline vs runtime,
# 80-89 global importance.
METRICS_SCHEMA = Schema(
    NestedField(
        1,
        "metric_id",
        StringType(),
        required=True,
        doc="sha256 of (tenant, model, version, day, window, pane, run): a retry adds nothing",
    ),
    NestedField(2, "tenant_id", StringType(), required=True),
    NestedField(3, "model_id", StringType(), required=True),
    NestedField(4, "model_version", StringType(), required=True),
    NestedField(5, "day", DateType(), required=True, doc="UTC day of the records' event time"),
    NestedField(6, "window_start", TimestamptzType(), required=False, doc="Streaming window"),
    NestedField(7, "window_end", TimestamptzType(), required=False),
    NestedField(8, "pane_index", IntegerType(), required=False, doc="0 on time, then late panes"),
    NestedField(9, "run_id", StringType(), required=True),
    NestedField(10, "computed_at", TimestamptzType(), required=True),
    NestedField(11, "sampling_policy", StringType(), required=False),
    NestedField(20, "records", LongType(), required=True, doc="Valid records of this version"),
    NestedField(21, "records_always", LongType(), required=True, doc="Of which always-explain"),
    NestedField(22, "sampled", LongType(), required=True),
    NestedField(23, "sampled_always", LongType(), required=True),
    NestedField(
        24, "explained", LongType(), required=True, doc="In the explanations table (new or replay)"
    ),
    NestedField(25, "explained_always", LongType(), required=True),
    NestedField(
        26, "failed", LongType(), required=True, doc="Sampled, dead-lettered at explain/check"
    ),
    NestedField(27, "committed", LongType(), required=True, doc="New rows this run committed"),
    NestedField(
        28, "stratum_records", LongType(), required=False, doc="The sampler's (tenant, day) count"
    ),
    NestedField(29, "stratum_always", LongType(), required=False),
    NestedField(30, "stratum_sampled", LongType(), required=False),
    NestedField(31, "coverage", DoubleType(), required=False, doc="explained / records"),
    NestedField(
        32, "coverage_always", DoubleType(), required=False, doc="Always-explain stratum (1 = all)"
    ),
    NestedField(33, "coverage_sampled", DoubleType(), required=False, doc="Priority stratum"),
    NestedField(34, "error_rate", DoubleType(), required=False, doc="failed / sampled"),
    NestedField(40, "latency_rows", LongType(), required=True, doc="Rows this run committed"),
    NestedField(41, "latency_p50_s", DoubleType(), required=False, doc="event_ts -> committed"),
    NestedField(42, "latency_p95_s", DoubleType(), required=False),
    NestedField(43, "latency_p99_s", DoubleType(), required=False),
    NestedField(44, "latency_max_s", DoubleType(), required=False),
    NestedField(
        45,
        "latency_buckets",
        ListType(46, LongType(), element_required=True),
        required=True,
        doc="Counts per LATENCY_BOUNDS_S bucket, then the overflow bucket",
    ),
    NestedField(50, "explain_seconds", DoubleType(), required=False, doc="CPU or GPU seconds"),
    NestedField(51, "cost_per_explanation_s", DoubleType(), required=False),
    NestedField(52, "explain_device", StringType(), required=False),
    NestedField(55, "completeness_error_p50", DoubleType(), required=False),
    NestedField(56, "completeness_error_p95", DoubleType(), required=False),
    NestedField(57, "completeness_error_p99", DoubleType(), required=False),
    NestedField(58, "completeness_error_max", DoubleType(), required=False),
    NestedField(59, "shap_additivity_error_p50", DoubleType(), required=False),
    NestedField(60, "shap_additivity_error_p99", DoubleType(), required=False),
    NestedField(65, "stability_p05", DoubleType(), required=False),
    NestedField(66, "stability_p50", DoubleType(), required=False),
    NestedField(67, "stability_p95", DoubleType(), required=False),
    NestedField(68, "stability_mean", DoubleType(), required=False),
    NestedField(70, "score_drift_p50", DoubleType(), required=False, doc="|re-scored - logged|"),
    NestedField(71, "score_drift_p99", DoubleType(), required=False),
    NestedField(72, "score_drift_max", DoubleType(), required=False),
    NestedField(73, "score_mismatches", LongType(), required=True, doc="score_drift > tolerance"),
    NestedField(74, "score_tolerance", DoubleType(), required=True),
    NestedField(
        75, "input_hash_checked", LongType(), required=True, doc="Rows the producer sent a hash for"
    ),
    NestedField(76, "input_hash_mismatches", LongType(), required=True),
    NestedField(
        80,
        "importance",
        ListType(84, IMPORTANCE_TYPE, element_required=True),
        required=True,
        doc="Global importance (Horvitz-Thompson), in the model's feature order",
    ),
    NestedField(85, "ht_weight_sum", DoubleType(), required=False),
)

ALERTS_SCHEMA = Schema(
    NestedField(
        1,
        "alert_id",
        StringType(),
        required=True,
        doc="sha256 of (tenant, model, version, kind, slo, severity, day): re-evaluating adds none",
    ),
    NestedField(2, "tenant_id", StringType(), required=True),
    NestedField(3, "model_id", StringType(), required=True),
    NestedField(4, "model_version", StringType(), required=True),
    NestedField(5, "kind", StringType(), required=True, doc="attribution_drift / slo_burn"),
    NestedField(
        6, "slo", StringType(), required=False, doc="coverage / latency / error_rate / drift"
    ),
    NestedField(7, "severity", StringType(), required=True, doc="page / ticket"),
    NestedField(8, "day", DateType(), required=True, doc="The last day the evidence covers"),
    NestedField(9, "window_start", TimestamptzType(), required=True),
    NestedField(10, "window_end", TimestamptzType(), required=True),
    NestedField(11, "raised_at", TimestamptzType(), required=True),
    NestedField(12, "summary", StringType(), required=True, doc="One plain sentence"),
    NestedField(
        13, "evidence", StringType(), required=True, doc="Canonical JSON: figures, features"
    ),
    NestedField(
        14,
        "example_request_ids",
        ListType(15, StringType(), element_required=True),
        required=True,
        doc="Records to open with `whylake reconstruct`",
    ),
    NestedField(16, "config_version", StringType(), required=True, doc="The SLO file's version"),
    NestedField(17, "config_hash", StringType(), required=True, doc="sha256 of the SLO settings"),
    NestedField(18, "firing", BooleanType(), required=True),
)

# identity(tenant_id) keeps each tenant's monitoring rows in files of their own, as for the
# explanations; the tables are small, so a month partition is enough to prune by time.
METRICS_PARTITION_SPEC = PartitionSpec(
    PartitionField(source_id=2, field_id=1000, transform=IdentityTransform(), name="tenant_id"),
    PartitionField(source_id=5, field_id=1001, transform=MonthTransform(), name="month"),
)
ALERTS_PARTITION_SPEC = PartitionSpec(
    PartitionField(source_id=2, field_id=1000, transform=IdentityTransform(), name="tenant_id"),
    PartitionField(source_id=8, field_id=1001, transform=MonthTransform(), name="month"),
)

METRICS_ARROW_SCHEMA: pa.Schema = METRICS_SCHEMA.as_arrow()
ALERTS_ARROW_SCHEMA: pa.Schema = ALERTS_SCHEMA.as_arrow()
