"""The Great Expectations suite that guards the inference record (beside the schema it guards)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

SUITE_NAME = "inference_record"
TRUST_TIERS = ("gold", "silver", "bronze", "unknown")


def _expectations(gx: Any) -> list[Any]:
    e = gx.expectations
    return [
        *(
            e.ExpectColumnValuesToNotBeNull(column=c)
            for c in ("tenant_id", "request_id", "event_ts", "model_id", "model_version", "score")
        ),
        e.ExpectColumnValueLengthsToBeBetween(column="tenant_id", min_value=1, max_value=64),
        e.ExpectColumnValuesToMatchRegex(column="tenant_id", regex=r"^[a-z0-9][a-z0-9_-]*$"),
        e.ExpectColumnValueLengthsToBeBetween(column="request_id", min_value=1, max_value=256),
        e.ExpectColumnValuesToBeBetween(column="score", min_value=-1e12, max_value=1e12),
        e.ExpectColumnValuesToBeBetween(
            column="confidence", min_value=0.0, max_value=1.0, mostly=1.0
        ),
        e.ExpectColumnValuesToBeBetween(column="risk_score", min_value=0.0, max_value=1.0),
        e.ExpectColumnValuesToBeInSet(column="trust_tier", value_set=list(TRUST_TIERS)),
    ]


@dataclass(frozen=True)
class RowFailure:
    """One row that failed one expectation."""

    index: int
    expectation: str
    column: str


class InferenceSuite:
    """An ephemeral GX context holding the suite; validate() returns the failing rows."""

    def __init__(self) -> None:
        # GX is imported only here: it costs ~3 s and is needed only by the validate step.
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self._context = gx.get_context(mode="ephemeral")
        self._context.variables.progress_bars = ProgressBarsConfig(globally=False)
        source = self._context.data_sources.add_pandas("whylake")
        asset = source.add_dataframe_asset("inference_records")
        self._batch_definition = asset.add_batch_definition_whole_dataframe("batch")
        self._suite = self._context.suites.add(gx.ExpectationSuite(name=SUITE_NAME))
        for expectation in _expectations(gx):
            self._suite.add_expectation(expectation)

    def validate(self, frame: pd.DataFrame) -> list[RowFailure]:
        """Every (row, expectation) failure in the frame; empty when all rows pass."""
        batch = self._batch_definition.get_batch(batch_parameters={"dataframe": frame})
        result = batch.validate(self._suite, result_format={"result_format": "COMPLETE"})
        failures = []
        for item in result.results:
            if item.success:
                continue
            config = item.expectation_config
            if config is None:  # a result always names its expectation; refuse to guess
                raise RuntimeError("Great Expectations returned a result without its expectation")
            column = str(config.kwargs.get("column", ""))
            for index in item.result.get("unexpected_index_list") or []:
                failures.append(RowFailure(int(index), config.type, column))
        return failures
