"""Check explanation records before they are committed: finite, complete, schema-conformant."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam import pvalue
from apache_beam.metrics import Metrics
from apache_beam.pvalue import PCollection

from whylake.schemas.arrow import strict_table
from whylake.schemas.dead_letter import dead_letter
from whylake.schemas.errors import ConfigError, ExplanationCheckError
from whylake.schemas.explanation import EXPLANATION_ARROW_SCHEMA
from whylake.schemas.pii import PiiPolicy
from whylake.transforms.dead_letters import DEAD_LETTERS

Row = dict[str, Any]


@dataclass(frozen=True)
class CheckConfig:
    """How far IG's completeness may miss f(x) - f(baseline), relative to that difference."""

    run_id: str
    max_relative_completeness_error: float = 0.05
    min_absolute_tolerance: float = 1e-3
    pii: PiiPolicy = field(kw_only=True)
    # The IG convergence figure a record may carry (ExplainConfig.ig_tolerance); None: any.
    max_ig_convergence: float | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        if not isinstance(self.pii, PiiPolicy):
            raise ConfigError("CheckConfig needs pii: a PiiPolicy with the user-id hash key")
        if not 0 < self.max_relative_completeness_error < 1:
            raise ConfigError("max_relative_completeness_error must be in (0, 1)")


def check_record(record: Row, config: CheckConfig, *, schema: bool = True) -> None:
    """Raise ExplanationCheckError saying what is wrong with a record, or return None."""
    numbers = [
        record["prediction"],
        record["base_value"],
        record["completeness_error"],
        *([] if record.get("stability") is None else [record["stability"]]),
        *(a["value"] for a in record["attributions"]),
        *(t["value"] for t in record.get("token_attributions") or ()),
    ]
    if not all(math.isfinite(v) for v in numbers):
        raise ExplanationCheckError(f"{record['request_id']}: non-finite attribution or score")
    # Relative to the attributions' own scale: when large attributions cancel, |f(x) - f(x')|
    # is small and would make any quadrature error look large.
    delta = abs(record["prediction"] - record["base_value"])
    mass = sum(abs(a["value"]) for a in record["attributions"]) + sum(
        abs(t["value"]) for t in record.get("token_attributions") or ()
    )
    tolerance = max(
        config.max_relative_completeness_error * max(delta, mass), config.min_absolute_tolerance
    )
    if record["completeness_error"] > tolerance:
        raise ExplanationCheckError(
            f"{record['request_id']}: completeness error {record['completeness_error']:.3g} "
            f"exceeds {tolerance:.3g} (|f(x) - f(baseline)| = {delta:.3g}, sum |attribution| = "
            f"{mass:.3g}); raise ig_steps (or the explainer's own budget)"
        )
    convergence = record.get("ig_convergence")
    if (
        config.max_ig_convergence is not None
        and convergence is not None
        and not convergence <= config.max_ig_convergence
    ):
        raise ExplanationCheckError(
            f"{record['request_id']}: IG did not converge: its attributions still moved by "
            f"{convergence:.3g} of the largest at {record.get('ig_steps')} steps (tolerance "
            f"{config.max_ig_convergence:.3g}); raise ig_max_steps"
        )
    if not 0.0 < record["inclusion_probability"] <= 1.0:
        raise ExplanationCheckError(
            f"{record['request_id']}: inclusion probability {record['inclusion_probability']}"
        )
    if schema:
        _check_schema([record])


def _check_schema(records: list[Row]) -> None:
    """Arrow (through strict_table) refuses a missing required field or a wrong type."""
    try:
        strict_table(records, EXPLANATION_ARROW_SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowTypeError, KeyError, TypeError, ValueError) as exc:
        first = records[0].get("request_id") if len(records) == 1 else f"{len(records)} records"
        raise ExplanationCheckError(f"{first}: breaks the schema: {exc}") from exc


class CheckExplanations(beam.PTransform[PCollection[Row], pvalue.DoOutputsTuple]):
    """Pass records that hold up; dead-letter the rest with the reason (tag `dead_letters`)."""

    def __init__(self, config: CheckConfig) -> None:
        super().__init__()
        self.config = config

    def expand(self, records: PCollection[Row]) -> pvalue.DoOutputsTuple:
        # Batched: one Arrow conversion per batch instead of one per record.
        return (
            records
            | "BatchRecords" >> beam.BatchElements(min_batch_size=64, max_batch_size=2048)
            | "CheckBatch"
            >> beam.ParDo(_CheckFn(self.config))
            .with_output_types(Row)
            .with_outputs(DEAD_LETTERS, main="checked")
        )

    def display_data(self) -> dict[str, Any]:
        return {
            "max_relative_completeness_error": self.config.max_relative_completeness_error,
            "min_absolute_tolerance": self.config.min_absolute_tolerance,
            "max_ig_convergence": str(self.config.max_ig_convergence),
        }


class _CheckFn(beam.DoFn):  # type: ignore[misc]
    def __init__(self, config: CheckConfig) -> None:
        self.config = config
        self.rejected = Metrics.counter("whylake", "records_failed_check")

    def process(self, records: list[Row]) -> Iterator[Any]:
        passed, failed = [], []
        for record in records:
            try:
                check_record(record, self.config, schema=False)
                passed.append(record)
            except ExplanationCheckError as exc:
                failed.append((record, exc))
        try:
            _check_schema(passed)
        except ExplanationCheckError:
            # Rare: find the records that break the schema, one by one.
            kept = []
            for record in passed:
                try:
                    _check_schema([record])
                    kept.append(record)
                except ExplanationCheckError as exc:
                    failed.append((record, exc))
            passed = kept
        for record, exc in failed:
            self.rejected.inc()
            yield pvalue.TaggedOutput(DEAD_LETTERS, self._dead_letter(record, exc))
        yield from passed

    def _dead_letter(self, record: Row, exc: ExplanationCheckError) -> Any:
        return dead_letter(
            run_id=self.config.run_id,
            stage="check",
            error=exc,
            record={k: v for k, v in record.items() if k != "attributions"},
            source=record.get("source"),
            tenant_id=record.get("tenant_id"),
            request_id=record.get("request_id"),
            pii=self.config.pii,
        )
