"""A small model card for tests: two float features, a zero baseline; any field overridable."""

from __future__ import annotations

from typing import Any

from whylake.schemas.model_card import FeatureSpec, ModelCard


def two_feature_card(**overrides: Any) -> ModelCard:
    fields: dict[str, Any] = dict(
        tenant_id="acme",
        model_id="m",
        model_version="1",
        kind="linear",
        task="regression",
        features=(FeatureSpec("a"), FeatureSpec("b")),
        baseline=(0.0, 0.0),
        baseline_kind="zeros",
        output_name="y",
        output_description="y",
    )
    fields.update(overrides)
    return ModelCard(**fields)
