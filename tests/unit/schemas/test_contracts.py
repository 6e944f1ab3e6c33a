"""The Iceberg schemas are the source: Arrow schemas and Beam element types must agree with them."""

from __future__ import annotations

import typing
from datetime import datetime

import pyarrow as pa
import pytest
from pyiceberg.types import StringType, TimestamptzType

from tests.unit.cards import two_feature_card
from whylake.schemas.arrow import strict_table
from whylake.schemas.commit_log import COMMIT_LOG_ARROW_SCHEMA, COMMIT_LOG_SCHEMA
from whylake.schemas.dead_letter import DEAD_LETTER_ARROW_SCHEMA, DEAD_LETTER_SCHEMA, DeadLetter
from whylake.schemas.explanation import (
    EXPLANATION_ARROW_SCHEMA,
    EXPLANATION_PARTITION_SPEC,
    EXPLANATION_SCHEMA,
)
from whylake.schemas.inference import INFERENCE_ARROW_SCHEMA, INFERENCE_SCHEMA
from whylake.schemas.model_card import FeatureSpec, ModelCard
from whylake.schemas.run_manifest import RUN_ARROW_SCHEMA, RUN_SCHEMA


@pytest.mark.parametrize(
    "iceberg, arrow",
    [
        (INFERENCE_SCHEMA, INFERENCE_ARROW_SCHEMA),
        (EXPLANATION_SCHEMA, EXPLANATION_ARROW_SCHEMA),
        (DEAD_LETTER_SCHEMA, DEAD_LETTER_ARROW_SCHEMA),
        (RUN_SCHEMA, RUN_ARROW_SCHEMA),
        (COMMIT_LOG_SCHEMA, COMMIT_LOG_ARROW_SCHEMA),
    ],
)
def test_arrow_schema_carries_the_iceberg_field_ids(iceberg, arrow) -> None:
    assert arrow.names == [f.name for f in iceberg.fields]
    for field in iceberg.fields:
        meta = arrow.field(field.name).metadata
        assert int(meta[b"PARQUET:field_id"]) == field.field_id
        assert arrow.field(field.name).nullable == (not field.required)


def test_field_ids_are_unique_across_nesting() -> None:
    for schema in (
        INFERENCE_SCHEMA,
        EXPLANATION_SCHEMA,
        DEAD_LETTER_SCHEMA,
        RUN_SCHEMA,
        COMMIT_LOG_SCHEMA,
    ):
        ids = list(schema._lazy_id_to_field.keys())  # every id, nested ones included
        assert len(ids) == len(set(ids)) == len(schema._lazy_id_to_name)


def test_dead_letter_element_type_matches_the_table() -> None:
    hints = typing.get_type_hints(DeadLetter)
    assert list(hints) == [f.name for f in DEAD_LETTER_SCHEMA.fields]
    for field in DEAD_LETTER_SCHEMA.fields:
        hint = hints[field.name]
        if isinstance(field.field_type, TimestamptzType):
            assert hint is datetime
        elif isinstance(field.field_type, StringType):
            assert hint == (str if field.required else str | None), field.name


def test_explanations_are_partitioned_by_tenant_and_day() -> None:
    by_source = {f.source_id: str(f.transform) for f in EXPLANATION_PARTITION_SPEC.fields}
    assert by_source == {
        EXPLANATION_SCHEMA.find_field("tenant_id").field_id: "identity",
        EXPLANATION_SCHEMA.find_field("event_ts").field_id: "day",
    }


def test_explanation_schema_has_counterfactual_columns() -> None:
    cf = EXPLANATION_SCHEMA.find_field("counterfactuals")
    names = {f.name for f in cf.field_type.element_field.field_type.fields}
    assert {"changes", "score", "valid", "proximity", "sparsity", "plausibility"} <= names


def test_a_record_missing_a_required_field_is_refused() -> None:
    # Arrow itself fills the gap with nulls even in a non-nullable field ...
    loose = pa.Table.from_pylist([{"dead_letter_id": "x"}], schema=DEAD_LETTER_ARROW_SCHEMA)
    assert loose["run_id"].null_count == 1
    # ... so every writer goes through strict_table, which names the missing fields.
    with pytest.raises(ValueError, match="run_id"):
        strict_table([{"dead_letter_id": "x"}], DEAD_LETTER_ARROW_SCHEMA)


def _card(**kw) -> ModelCard:
    args = dict(
        tenant_id="t",
        kind="mlp",
        task="classification",
        output_name="p",
        output_description="probability",
    )
    return two_feature_card(**{**args, **kw})


def test_model_card_round_trips_through_json() -> None:
    card = _card(
        features=(
            FeatureSpec("a", lower=0.0, upper=1.0, immutable=True),
            FeatureSpec("b", type="int"),
        )
    )
    assert ModelCard.from_json(card.to_json()) == card
    assert "Infinity" not in card.to_json()  # portable JSON for readers without our code


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"baseline": (0.0,)}, "baseline has 1 values"),
        ({"kind": "forest"}, "model kind"),
        ({"features": (FeatureSpec("a"), FeatureSpec("a")), "baseline": (0.0, 0.0)}, "duplicate"),
    ],
)
def test_model_card_rejects_inconsistent_cards(kw, message) -> None:
    with pytest.raises(ValueError, match=message):
        _card(**kw)
