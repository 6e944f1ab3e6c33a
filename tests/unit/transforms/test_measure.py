"""MeasureExplanations on beam.Create (one global window: the batch job) and on TestStream with
event-time windows (the streaming job): one metrics row per slice, counted right."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.test_stream import TestStream as BeamTestStream
from apache_beam.testing.util import assert_that, equal_to_per_window
from apache_beam.transforms.window import FixedWindows, IntervalWindow, TimestampedValue

from tests.unit.keys import TEST_PII
from whylake.schemas.arrow import strict_table
from whylake.schemas.dead_letter import dead_letter
from whylake.schemas.metrics import METRICS_ARROW_SCHEMA
from whylake.transforms.measure import MeasureConfig, MeasureExplanations

T0 = datetime(2026, 11, 21, 10, tzinfo=UTC)
INPUTS = ("valid", "strata", "sampled", "committed", "failed")


def _batch(n: int, at: datetime, model: str = "m") -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict(
        {
            "tenant_id": ["acme"] * n,
            "event_ts": pa.array([at] * n, pa.timestamp("us", tz="UTC")),
            "model_id": [model] * n,
            "model_version": ["1"] * n,
        }
    )


def _sampled(i: int, at: datetime, always: bool = False) -> dict[str, Any]:
    return {
        "tenant_id": "acme",
        "request_id": f"r{i}",
        "event_ts": at,
        "model_id": "m",
        "model_version": "1",
        "sampling_reason": "always:flagged" if always else "priority",
    }


def _explained(i: int, at: datetime, always: bool = False) -> dict[str, Any]:
    return {
        **_sampled(i, at, always),
        "attributions": [{"feature": "a", "value": 1.0}, {"feature": "b", "value": 2.0}],
        "inclusion_probability": 1.0 if always else 0.25,
        "completeness_error": 0.0,
        "shap_additivity_error": None,
        "stability": 1.0,
        "score_drift": 0.0,
        "explain_seconds": 0.01,
        "input_hash_mismatch": False,
        "device": "cpu",
    }


def _failure(i: int, at: datetime) -> Any:
    record = {**_sampled(i, at), "event_ts": at.isoformat()}
    return dead_letter(
        run_id="run-1", stage="explain", error="boom", record=record,
        source="test", tenant_id="acme", request_id=f"r{i}", pii=TEST_PII,
    )  # fmt: skip


def _slice(at: datetime, first: int) -> dict[str, list[Any]]:
    """One slice: 20 records, 4 sampled (1 always), 3 explained (2 committed now), 1 failed."""
    ms = int((at + timedelta(minutes=1)).timestamp() * 1000)
    count = {"tenant_id": "acme", "day": at.date().isoformat(), "records": 20,
             "always_explain": 1, "sampled": 4, "sampling_policy": "v/priority"}  # fmt: skip
    return {
        "valid": [_batch(12, at), _batch(8, at)],
        "strata": [count],
        "sampled": [_sampled(first, at, True), *(_sampled(first + k, at) for k in (1, 2, 3))],
        "committed": [(ms, _explained(first, at, True)), (ms, _explained(first + 1, at)),
                      (None, _explained(first + 2, at))],
        "failed": [_failure(first + 3, at)],
    }  # fmt: skip


def _check(rows: list[dict[str, Any]], windows: int, *, windowed: bool = False) -> None:
    assert len(rows) == windows, rows
    for row in rows:
        assert (row["records"], row["sampled"], row["sampled_always"]) == (20, 4, 1)
        assert (row["explained"], row["committed"], row["failed"]) == (3, 2, 1)
        assert row["coverage"] == 3 / 20 and row["error_rate"] == 1 / 4
        assert row["coverage_always"] == 1.0
        assert row["latency_rows"] == 2 and abs(row["latency_p99_s"] - 60) < 1e-6
        assert row["stratum_records"] == 20
        strict_table([row], METRICS_ARROW_SCHEMA)
        assert (row["window_start"] is not None) is windowed


def _measure(inputs: dict[str, beam.PCollection]) -> beam.PCollection:
    return inputs | "Measure" >> MeasureExplanations(MeasureConfig("run-1"))


def test_one_row_per_slice_in_the_global_window() -> None:
    data = _slice(T0, 0)
    with BeamTestPipeline(runner="FnApiRunner") as p:
        inputs = {name: p | f"Create{name}" >> beam.Create(data[name]) for name in INPUTS}
        assert_that(_measure(inputs) | beam.combiners.ToList(), lambda got: _check(got[0], 1))


def test_one_row_per_slice_and_window_under_test_stream() -> None:
    later = T0 + timedelta(minutes=5)
    slices = [(T0, _slice(T0, 0)), (later, _slice(later, 100))]
    stream = BeamTestStream()
    for at, data in slices:
        ts = at.timestamp()
        stream = stream.add_elements(
            [TimestampedValue((name, e), ts) for name in INPUTS for e in data[name]]
        ).advance_watermark_to(ts + 60)
    stream = stream.advance_watermark_to_infinity()
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    # The FnApiRunner has no TestStream; the bundle-based direct runner does, without Prism.
    with BeamTestPipeline(runner="BundleBasedDirectRunner", options=options) as p:
        tagged = p | "Stream" >> stream | "Window" >> beam.WindowInto(FixedWindows(60))
        inputs = {
            name: tagged
            | f"Only{name}" >> beam.Filter(lambda e, n=name: e[0] == n)
            | f"Untag{name}" >> beam.Map(lambda e: e[1])
            for name in INPUTS
        }
        rows = _measure(inputs)
        expected = {
            IntervalWindow(at.timestamp(), at.timestamp() + 60): [(20, 4, 3, 2, 1, at)]
            for at, _ in slices
        }
        projected = rows | "Project" >> beam.Map(_project)
        assert_that(projected, equal_to_per_window(expected), use_global_window=False)
        _ = rows | "Check" >> beam.Map(lambda row: _check([row], 1, windowed=True))


def _project(row: dict[str, Any]) -> tuple[Any, ...]:
    return (row["records"], row["sampled"], row["explained"], row["committed"], row["failed"],
            row["window_start"])  # fmt: skip


def test_a_dead_letter_without_a_model_is_counted_not_fatal() -> None:
    data = _slice(T0, 0)
    broken = dead_letter(run_id="r", stage="explain", error="x", record="not json",
                         source="s", tenant_id="acme", pii=TEST_PII)  # fmt: skip
    data["failed"].append(broken)
    with BeamTestPipeline(runner="FnApiRunner") as p:
        inputs = {name: p | f"Create{name}" >> beam.Create(data[name]) for name in INPUTS}
        assert_that(_measure(inputs) | beam.combiners.ToList(), lambda got: _check(got[0], 1))


def test_dead_letter_records_are_json() -> None:
    assert json.loads(_failure(1, T0).record)["model_id"] == "m"
