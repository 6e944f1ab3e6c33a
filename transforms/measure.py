"""Measure each slice of explanation work into `whylake.metrics`: coverage, latency, errors, cost.

A slice is a tenant x model version x UTC day within a window pane (the batch job has one
global window, so a day; the streaming job one row per window firing). Everything is keyed by
the sampler's stratum (tenant, day) and combined per window, so both jobs get the same figures
from the same code: traffic from the validated batches, the sampler's stratum counts, the
sampled rows, the committed rows with their Iceberg commit times, and the failures.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.metrics import Metrics
from apache_beam.pvalue import PCollection
from apache_beam.transforms.window import GlobalWindow

from whylake.monitor.sli import ALWAYS_PREFIX, ModelSlice, SliceKey, slice_figures
from whylake.schemas.dead_letter import DeadLetter
from whylake.schemas.errors import ConfigError

log = logging.getLogger(__name__)
StratumKey = tuple[str, str]  # (tenant_id, UTC day YYYY-MM-DD), as the sampler keys strata
ModelKey = tuple[str, str]  # (model_id, model_version)
_TICKS_PER_DAY = {"s": 86_400, "ms": 86_400_000, "us": 86_400_000_000, "ns": 86_400_000_000_000}
_EPOCH = date(1970, 1, 1).toordinal()
_KeyedPart = tuple[tuple[str, str], Any]  # (stratum key, a _Stratum partial)


@dataclass(frozen=True)
class MeasureConfig:
    """Which run the rows belong to and when a logged score counts as mismatched."""

    run_id: str
    score_tolerance: float = 1e-3

    def __post_init__(self) -> None:
        if not self.run_id:
            raise ConfigError("run_id must not be empty")
        if not self.score_tolerance >= 0:
            raise ConfigError(f"score_tolerance must be >= 0, got {self.score_tolerance}")


@dataclass
class _Stratum:
    """The combine accumulator of one (tenant, day): per model version, plus the sampler's row."""

    models: dict[ModelKey, ModelSlice] = field(default_factory=dict)
    sampler: dict[str, Any] | None = None

    def model(self, key: ModelKey) -> ModelSlice:
        return self.models.setdefault(key, ModelSlice())


class MeasureExplanations(
    beam.PTransform[dict[str, PCollection[Any]], PCollection[dict[str, Any]]]
):
    """{"valid", "strata", "sampled", "committed", "failed"} -> one metrics row per slice.

    valid: Arrow batches of valid records (traffic); strata: the sampler's count rows;
    sampled: the sampled rows; committed: (commit time ms or None, explanation row) from
    AppendToIceberg's `committed` output; failed: dead letters of the explain and check stages.
    """

    def __init__(self, config: MeasureConfig) -> None:
        super().__init__()
        self.config = config

    def expand(self, inputs: dict[str, PCollection[Any]]) -> PCollection[dict[str, Any]]:
        # One declared element type for every branch, so all five encode with the same coder:
        # a Flatten whose inputs inferred different coders failed to decode on the local
        # runner ("Unknown type tag" in Merge/Read) depending on how stages were fused.
        parts = (
            inputs["valid"] | "Traffic" >> beam.FlatMap(_traffic).with_output_types(_KeyedPart),
            inputs["strata"] | "Strata" >> beam.Map(_stratum).with_output_types(_KeyedPart),
            inputs["sampled"]
            | "Sampled" >> beam.FlatMap(_guarded, _sampled).with_output_types(_KeyedPart),
            inputs["committed"]
            | "Committed" >> beam.FlatMap(_guarded, _committed).with_output_types(_KeyedPart),
            inputs["failed"] | "Failed" >> beam.FlatMap(_failed).with_output_types(_KeyedPart),
        )
        return (
            parts
            | "Merge" >> beam.Flatten().with_output_types(_KeyedPart)
            # A GroupByKey and a fresh merge, not a lifted CombinePerKey of mutable accumulators:
            # with the combine, three test runs on the loaded shared machine grew past 10 GB
            # while the local runner decoded that shuffle (not reproduced on a quieter machine;
            # the cause is not pinned down). The parts are small and never mutated here.
            | "GroupPerStratum" >> beam.GroupByKey()
            | "MergeParts" >> beam.Map(_merge_parts)
            | "SliceRows" >> beam.ParDo(_SliceRowsFn(self.config))
        )

    def display_data(self) -> dict[str, Any]:
        return {"run_id": self.config.run_id, "score_tolerance": self.config.score_tolerance}


def _day(ts: datetime) -> str:
    return ts.astimezone(UTC).date().isoformat()


def _traffic(batch: pa.RecordBatch | pa.Table) -> Iterator[tuple[StratumKey, _Stratum]]:
    """Valid records per (tenant, UTC day, model, version) of one batch, counted in Arrow."""
    ts = batch.column("event_ts")
    ticks = ts.cast(pa.int64()).to_numpy(zero_copy_only=False)
    days = np.asarray(ticks // _TICKS_PER_DAY[ts.type.unit], dtype=np.int64)
    table = pa.table(
        {
            "tenant_id": batch.column("tenant_id"),
            "model_id": batch.column("model_id"),
            "model_version": batch.column("model_version"),
            "day": pa.array(days),
        }
    )
    grouped = table.group_by(["tenant_id", "day", "model_id", "model_version"]).aggregate(
        [("tenant_id", "count")]
    )
    for row in grouped.to_pylist():
        day = date.fromordinal(_EPOCH + int(row["day"])).isoformat()
        acc = _Stratum()
        acc.model((row["model_id"], row["model_version"])).records = int(row["tenant_id_count"])
        yield (row["tenant_id"], day), acc


def _guarded(element: Any, measure: Any) -> Iterator[tuple[StratumKey, _Stratum]]:
    """One row's part, or none: a row the metrics cannot read never fails the job.

    The row itself is committed (or dead-lettered) either way; only its share of a slice's
    figures is lost, and that is counted (`metrics_unmeasured_rows`) and logged.
    """
    try:
        yield measure(element)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        Metrics.counter("whylake", "metrics_unmeasured_rows").inc()
        log.warning("a row could not be measured (%s: %s)", type(exc).__name__, exc)


def _stratum(count: dict[str, Any]) -> tuple[StratumKey, _Stratum]:
    return (count["tenant_id"], count["day"]), _Stratum(sampler=dict(count))


def _sampled(row: dict[str, Any]) -> tuple[StratumKey, _Stratum]:
    acc = _Stratum()
    part = acc.model((row["model_id"], row["model_version"]))
    part.sampled = 1
    part.sampled_always = int(str(row["sampling_reason"]).startswith(ALWAYS_PREFIX))
    return (row["tenant_id"], _day(row["event_ts"])), acc


def _committed(element: tuple[int | None, dict[str, Any]]) -> tuple[StratumKey, _Stratum]:
    committed_at_ms, row = element
    acc = _Stratum()
    acc.model((row["model_id"], row["model_version"])).add_explained(row, committed_at_ms)
    return (row["tenant_id"], _day(row["event_ts"])), acc


def _failed(dead: DeadLetter) -> Iterator[tuple[StratumKey, _Stratum]]:
    """A sampled record that could not be explained, attributed to its model version and day."""
    try:
        record = json.loads(dead.record)
        day = _day(datetime.fromisoformat(str(record["event_ts"]).replace("Z", "+00:00")))
        key = (str(record["model_id"]), str(record["model_version"]))
    except (ValueError, KeyError, TypeError) as exc:
        # Counted, never silent: the failure itself is in the dead letters either way.
        Metrics.counter("whylake", "metrics_unattributed_failures").inc()
        log.warning(
            "dead letter %s has no model/day to measure it by: %s", dead.dead_letter_id, exc
        )
        return
    acc = _Stratum()
    acc.model(key).failed = 1
    yield (dead.tenant_id, day), acc


def _merge_parts(element: tuple[StratumKey, Any]) -> tuple[StratumKey, _Stratum]:
    """All parts of one stratum (and window) merged into a fresh accumulator."""
    key, parts = element
    out = _Stratum()
    for part in parts:
        for model, data in part.models.items():
            out.model(model).add(data)
        if part.sampler is not None:
            out.sampler = _add_sampler_counts(out.sampler, part.sampler)
    return key, out


def _add_sampler_counts(a: dict[str, Any] | None, b: dict[str, Any]) -> dict[str, Any]:
    if a is None:
        return dict(b)
    # One count row per stratum and pane is what the sampler emits; add up if ever more.
    return {
        **a,
        **{k: a[k] + b[k] for k in ("records", "always_explain", "sampled")},
    }


class _SliceRowsFn(beam.DoFn):  # type: ignore[misc]
    """A finished stratum -> one metrics row per model version, stamped with its window."""

    def __init__(self, config: MeasureConfig) -> None:
        self.config = config
        self.rows = Metrics.counter("whylake", "metrics_rows")

    def process(
        self,
        element: tuple[StratumKey, _Stratum],
        window: Any = beam.DoFn.WindowParam,
        pane: Any = beam.DoFn.PaneInfoParam,
    ) -> Iterator[dict[str, Any]]:
        (tenant, day), acc = element
        bounds: tuple[datetime, datetime] | None = None
        pane_index: int | None = None
        if not isinstance(window, GlobalWindow):
            bounds = (
                window.start.to_utc_datetime(has_tz=True),
                window.end.to_utc_datetime(has_tz=True),
            )
            pane_index = int(pane.index)
        computed_at = datetime.now(UTC)
        for (model_id, version), data in sorted(acc.models.items()):
            key = SliceKey(tenant, model_id, version, date.fromisoformat(day), bounds, pane_index)
            self.rows.inc()
            yield slice_figures(
                key,
                data,
                stratum=acc.sampler,
                run_id=self.config.run_id,
                computed_at=computed_at,
                score_tolerance=self.config.score_tolerance,
            )
