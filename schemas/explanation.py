"""The explanation record: the immutable audit log of why one prediction came out as it did."""

from __future__ import annotations

import pyarrow as pa
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.transforms import DayTransform, IdentityTransform
from pyiceberg.types import (
    BooleanType,
    DoubleType,
    IntegerType,
    ListType,
    LongType,
    NestedField,
    StringType,
    StructType,
    TimestamptzType,
)

# 2: model kinds (columns 90-119: model / explainer kind, the output explained, token
# attributions, the estimator's standard error). Rows of version 1 read them as null.
# 3: what the producer sent and the explanation policy (columns 120-149: trust tier,
# confidence, label, risk, the producer's input hash, policy hash, template version, explainer
# agreement, review route, the plan). Rows of versions 1 and 2 read them as null.
# 4: IG you can recompute (columns 150-151: the per-row convergence figure and the steps
# behind it). Rows of versions 1-3 read them as null; replica indices get the fields.
# 5: no new column; the explanation id hashes the event time too (schemas/ids.py), which the
# commit protocol's time-bounded key check relies on. Ids of versions 1-4 do not.
EXPLANATION_SCHEMA_VERSION = 5

ATTRIBUTION_TYPE = StructType(
    NestedField(41, "feature", StringType(), required=True),
    NestedField(42, "value", DoubleType(), required=True, doc="Attribution in output units"),
    NestedField(43, "input_value", DoubleType(), required=True, doc="The recorded input"),
    NestedField(
        44, "baseline_value", DoubleType(), required=True, doc="Reference it is measured from"
    ),
)

CHANGE_TYPE = StructType(
    NestedField(61, "feature", StringType(), required=True),
    NestedField(62, "from_value", DoubleType(), required=True),
    NestedField(63, "to_value", DoubleType(), required=True),
)

COUNTERFACTUAL_TYPE = StructType(
    NestedField(65, "rank", IntegerType(), required=True, doc="0 = the closest valid one"),
    NestedField(66, "changes", ListType(67, CHANGE_TYPE, element_required=True), required=True),
    NestedField(68, "score", DoubleType(), required=True, doc="The model re-scored on it"),
    NestedField(69, "valid", BooleanType(), required=True),
    NestedField(70, "proximity", DoubleType(), required=True, doc="L1 scaled by per-feature MAD"),
    NestedField(71, "sparsity", IntegerType(), required=True, doc="Features changed"),
    NestedField(
        72, "plausibility", DoubleType(), required=True, doc="Distance to nearest target-class row"
    ),
)

TOKEN_ATTRIBUTION_TYPE = StructType(
    NestedField(
        94, "token", StringType(), required=True, doc="The token as the tokenizer wrote it"
    ),
    NestedField(95, "value", DoubleType(), required=True, doc="Attribution in output units"),
    NestedField(96, "start", IntegerType(), required=True, doc="First character in the text"),
    NestedField(97, "end", IntegerType(), required=True, doc="One past its last character"),
    NestedField(98, "token_id", LongType(), required=True),
)

# Field ids are fixed forever (Iceberg resolves by id). Grouped in ranges per section so a
# later column can be added in its section without renumbering: 1-29 identity/provenance,
# 30-39 explainer, 40-49 attributions, 50-59 quality, 60-79 counterfactuals, 80-89 sampling.
# Reserved for columns added later (each appended at the end, optional, by schema evolution):
# 90-119 model kinds and their explainers (token attributions, model / explainer kind),
# 120-149 what the producer sent and the explanation policy (trust tier, confidence, label,
# risk, the producer's input hash, policy hash, template version, explainer agreement),
# 150-169 quality added later (convergence), 170-199 monitoring and operations.
EXPLANATION_SCHEMA = Schema(
    NestedField(
        1,
        "explanation_id",
        StringType(),
        required=True,
        doc="sha256 of (tenant, request, model artifact, explainer config): replays are idempotent",
    ),
    NestedField(2, "tenant_id", StringType(), required=True),
    NestedField(3, "request_id", StringType(), required=True),
    NestedField(4, "event_ts", TimestamptzType(), required=True),
    NestedField(5, "explained_at", TimestamptzType(), required=True),
    NestedField(6, "run_id", StringType(), required=True),
    NestedField(7, "model_id", StringType(), required=True),
    NestedField(8, "model_version", StringType(), required=True),
    NestedField(
        9, "model_sha256", StringType(), required=True, doc="sha256 of the TorchScript artifact"
    ),
    NestedField(
        10, "output_name", StringType(), required=True, doc="What the explained score means"
    ),
    NestedField(
        11, "prediction", DoubleType(), required=True, doc="Score as the model recomputed it"
    ),
    NestedField(
        12, "logged_score", DoubleType(), required=True, doc="Score as logged by the producer"
    ),
    NestedField(13, "predicted_class", StringType(), required=False),
    NestedField(
        14, "user_id_hash", StringType(), required=False, doc="Keyed hash, never the raw id"
    ),
    NestedField(15, "input_hash", StringType(), required=True, doc="sha256 of the canonical input"),
    NestedField(
        16, "source", StringType(), required=False, doc="Input file / table / topic pointer"
    ),
    NestedField(
        17,
        "policy_version",
        StringType(),
        required=True,
        doc="Since policy hashes: the same sha256 as policy_hash; earlier rows: a hand label",
    ),
    NestedField(18, "schema_version", IntegerType(), required=True),
    NestedField(19, "summary", StringType(), required=True, doc="One plain-language sentence"),
    NestedField(20, "flags", ListType(21, StringType(), element_required=True), required=False),
    NestedField(30, "explainer_method", StringType(), required=True),
    NestedField(
        31, "explainer_config", StringType(), required=True, doc="Canonical JSON of every setting"
    ),
    NestedField(32, "explainer_config_hash", StringType(), required=True),
    NestedField(
        33, "explainer_versions", StringType(), required=True, doc="JSON of library versions"
    ),
    NestedField(34, "baseline_kind", StringType(), required=True),
    NestedField(35, "seed", LongType(), required=True),
    NestedField(
        36, "base_value", DoubleType(), required=True, doc="f(baseline) or E[f(background)]"
    ),
    NestedField(37, "device", StringType(), required=True, doc="cpu or cuda device it ran on"),
    NestedField(
        40, "attributions", ListType(45, ATTRIBUTION_TYPE, element_required=True), required=True
    ),
    NestedField(
        46,
        "shap_values",
        ListType(47, DoubleType(), element_required=True),
        required=False,
        doc="SHAP values in feature order, when computed",
    ),
    NestedField(
        50,
        "completeness_error",
        DoubleType(),
        required=True,
        doc="|sum(attr) - (prediction - base_value)|",
    ),
    NestedField(51, "shap_additivity_error", DoubleType(), required=False),
    NestedField(
        52,
        "stability",
        DoubleType(),
        required=False,  # required in schema version 1; IG rows only since version 2
        doc="1 = top-k ranking unchanged across IG baselines (IG rows only)",
    ),
    NestedField(53, "score_drift", DoubleType(), required=True, doc="|prediction - logged_score|"),
    NestedField(
        60,
        "counterfactual_status",
        StringType(),
        required=False,
        doc="found / not_found / already_met / not_requested",
    ),
    NestedField(
        64,
        "counterfactuals",
        ListType(73, COUNTERFACTUAL_TYPE, element_required=True),
        required=False,
    ),
    NestedField(80, "sampling_policy", StringType(), required=True),
    NestedField(81, "sampling_reason", StringType(), required=True),
    NestedField(82, "inclusion_probability", DoubleType(), required=True),
    NestedField(83, "ht_weight", DoubleType(), required=True, doc="1 / inclusion_probability"),
    NestedField(84, "stratum_size", LongType(), required=True),
    # 90-119: model kinds and their explainers (schema version 2), all optional.
    NestedField(
        90, "model_kind", StringType(), required=False, doc="torch, sklearn, xgboost, lightgbm, ..."
    ),
    NestedField(
        91,
        "explainer_kind",
        StringType(),
        required=False,
        doc="integrated_gradients, tree_shap, permutation_shapley, token_integrated_gradients",
    ),
    NestedField(
        92,
        "explained_output",
        StringType(),
        required=False,
        doc="What the attributions sum to: score, probability, log_odds or logit",
    ),
    NestedField(
        93,
        "token_attributions",
        ListType(99, TOKEN_ATTRIBUTION_TYPE, element_required=True),
        required=False,
        doc="Text models: one attribution per token, with its character offsets",
    ),
    NestedField(100, "input_text", StringType(), required=False, doc="The explained text"),
    NestedField(
        101,
        "attribution_std_error",
        DoubleType(),
        required=False,
        doc="Sampling estimators: largest standard error of an attribution",
    ),
    NestedField(
        102,
        "model_source",
        StringType(),
        required=False,
        doc="Where the model was registered from, e.g. mlflow:models:/credit-gbm/3",
    ),
    NestedField(
        103,
        "counterfactual_method",
        StringType(),
        required=False,
        doc="gradient (differentiable models) or search (gradient-free)",
    ),
    # 120-149: what the producer sent (kept as it came) and the explanation policy that ran.
    # All optional: rows written before these columns existed read them as null.
    NestedField(120, "trust_tier", StringType(), required=False, doc="As the producer sent it"),
    NestedField(121, "confidence", DoubleType(), required=False, doc="As the producer sent it"),
    NestedField(122, "label", StringType(), required=False, doc="Ground truth, when sent"),
    NestedField(123, "risk_score", DoubleType(), required=False, doc="As the producer sent it"),
    NestedField(
        124, "producer_input_hash", StringType(), required=False, doc="The producer's input_hash"
    ),
    NestedField(
        125,
        "input_hash_mismatch",
        BooleanType(),
        required=False,
        doc="producer_input_hash != input_hash; null when the producer sent none",
    ),
    NestedField(
        126,
        "policy_hash",
        StringType(),
        required=False,
        doc="sha256 of the canonical form of the tenant's sampling + explanation policy",
    ),
    NestedField(
        127, "template_version", StringType(), required=False, doc="Views' template set, e.g. v2"
    ),
    NestedField(
        128,
        "explainer_agreement",
        DoubleType(),
        required=False,
        doc="Rank correlation of IG and SHAP over their top features; null with one method",
    ),
    NestedField(129, "agreement_method", StringType(), required=False),
    NestedField(130, "review_route", StringType(), required=False, doc="auto / confirm / person"),
    NestedField(
        131,
        "review_reasons",
        ListType(132, StringType(), element_required=True),
        required=False,
        doc="Why the route is not auto, e.g. explainers_disagree, low_confidence",
    ),
    NestedField(
        133,
        "explanation_plan",
        StringType(),
        required=False,
        doc="Canonical JSON of what the policy ran for this row (IG steps, SHAP, CF, limits)",
    ),
    # 150-169: quality added later (optional: rows written before stay readable).
    NestedField(
        150,
        "ig_convergence",
        DoubleType(),
        required=False,
        doc="max over features |IG(steps) - IG(steps/2)| / max |IG(steps)|: quadrature error",
    ),
    NestedField(
        151,
        "ig_steps",
        IntegerType(),
        required=False,
        doc="Gauss-Legendre points behind this row's IG attributions (recompute with these)",
    ),
    # 170-199 monitoring: what the explain stage cost (the producer's input hash is checked by
    # input_hash_mismatch, field 125).
    NestedField(
        170,
        "explain_seconds",
        DoubleType(),
        required=False,
        doc="CPU seconds (GPU seconds on cuda) of the explain call, this row's share",
    ),
)

# identity(tenant_id) keeps every tenant's rows in files of their own; day(event_ts) prunes
# an auditor's date-range query to the days it names.
EXPLANATION_PARTITION_SPEC = PartitionSpec(
    PartitionField(source_id=2, field_id=1000, transform=IdentityTransform(), name="tenant_id"),
    PartitionField(source_id=4, field_id=1001, transform=DayTransform(), name="event_day"),
)

EXPLANATION_ARROW_SCHEMA: pa.Schema = EXPLANATION_SCHEMA.as_arrow()
