"""SampleByPolicy in Beam: one sample however the input is batched, ordered or windowed."""

from __future__ import annotations

import datetime
import pickle
import random
from collections import Counter
from collections.abc import Callable
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.test_stream import TestStream as BeamTestStream
from apache_beam.testing.util import assert_that, equal_to, equal_to_per_window
from apache_beam.transforms.window import FixedWindows, IntervalWindow, TimestampedValue

from whylake.schemas.inference import INFERENCE_ARROW_SCHEMA
from whylake.transforms.sample import (
    COUNT_COLUMNS,
    SAMPLING_COLUMNS,
    ArrowRows,
    SampleAndCountByPolicy,
    SampleByPolicy,
    SampleConfig,
    _PreselectFn,
)
from whylake.transforms.sampling import SamplingPolicies

DAY0 = datetime.datetime(2026, 11, 21, tzinfo=datetime.UTC)
TENANTS = ("acme", "globex", "hooli", "initech")
SPLITS = ("OneBatch", "RaggedShuffled", "TinyBatches", "ChunkedTable")
Rows = list[dict[str, Any]]


def _project(row: dict[str, Any]) -> tuple[str, str, str, float, float, int]:
    return (
        row["request_id"],
        row["sampling_policy"],
        row["sampling_reason"],
        row["inclusion_probability"],
        row["ht_weight"],
        row["stratum_size"],
    )


def _splits(rows: Rows, to_batch: Callable[[Rows], pa.RecordBatch]) -> dict[str, list[Any]]:
    """The same records as differently cut and ordered inputs (batches, tiny batches, a Table)."""
    rng = random.Random(5)
    shuffled = rows[:]
    rng.shuffle(shuffled)
    ragged, i = [], 0
    while i < len(shuffled):
        size = rng.randint(1, 120)
        ragged.append(to_batch(shuffled[i : i + size]))
        i += size
    rng.shuffle(ragged)
    by_tenant = sorted(rows, key=lambda r: (r["tenant_id"], r["request_id"]), reverse=True)
    table = pa.Table.from_batches([to_batch(by_tenant[j : j + 50]) for j in range(0, 600, 50)])
    return {
        "OneBatch": [to_batch(rows)],
        "RaggedShuffled": ragged,
        # Tiny batches cost Beam time per element, so only the first records come one by three.
        "TinyBatches": [to_batch(shuffled[j : j + 3]) for j in range(0, 30, 3)]
        + [to_batch(shuffled[30:])],
        "ChunkedTable": [table, to_batch(by_tenant[600:])],
    }


def test_sample_is_independent_of_batching_and_order(
    policies: SamplingPolicies,
    rows_factory: Callable[..., Rows],
    batch_factory: Callable[[Rows], pa.RecordBatch],
    oracle: Callable[[Rows, SamplingPolicies], list[tuple[str, str, str, float, float, int]]],
) -> None:
    rows = rows_factory(700, seed=11, tenants=TENANTS)
    rows += rows_factory(3, seed=12, tenants=("tiny",), days=1)  # a stratum smaller than k
    pyrows = batch_factory(rows).to_pylist()  # the rows as Arrow gives them back
    expected = oracle(pyrows, policies)
    assert Counter(e[2] for e in expected).keys() >= {
        "priority",
        "reservoir",
        "always:flagged",
        "always:low_confidence",
        "always:high_risk",
    }
    assert sum(e[0].startswith("req-12-") and e[3] == 1.0 for e in expected) == 3
    by_id = {r["request_id"]: r for r in pyrows}
    stratum = {i: (r["tenant_id"], r["event_ts"].date().isoformat()) for i, r in by_id.items()}
    records = Counter(stratum.values())
    always = Counter(stratum[e[0]] for e in expected if e[2].startswith("always:"))
    sampled = Counter(stratum[e[0]] for e in expected)
    expected_counts = [
        (*s, records[s], always[s], sampled[s], policies.policy_for(s[0]).label, True)
        for s in records
    ]
    config = SampleConfig(policies)

    with BeamTestPipeline(runner="FnApiRunner") as p:
        # One assert over every split, each result tagged with its split: a Beam test pays per
        # transform, so fewer asserts keep it quick.
        results = []
        splits = _splits(rows, batch_factory)
        assert tuple(splits) == SPLITS
        for name, inputs in splits.items():
            out = (
                p | f"Create{name}" >> beam.Create(inputs) | name >> SampleAndCountByPolicy(config)
            )
            results.append(
                out.samples | f"Project{name}" >> beam.Map(lambda r, n=name: (n, _project(r)))
            )
            results.append(
                out.counts
                | f"Count{name}"
                >> beam.Map(lambda c, n=name: (n, (*c.values(), tuple(c) == COUNT_COLUMNS)))
            )
            if name == "OneBatch":
                # The sampled row is the input row plus the sampling columns, nothing dropped.
                results.append(
                    out.samples
                    | "StripSampling"
                    >> beam.Map(
                        lambda d: (
                            "row",
                            {k: v for k, v in d.items() if k not in SAMPLING_COLUMNS}
                            == by_id[d["request_id"]]
                            and set(SAMPLING_COLUMNS) <= d.keys(),
                        )
                    )
                )
        assert_that(
            results | "Flatten" >> beam.Flatten(),
            equal_to(
                [(n, e) for n in SPLITS for e in expected]
                + [(n, c) for n in SPLITS for c in expected_counts]
                + [("row", True)] * len(expected)
            ),
        )


def test_samples_per_window_under_test_stream(
    policies: SamplingPolicies,
    rows_factory: Callable[..., Rows],
    batch_factory: Callable[[Rows], pa.RecordBatch],
    oracle: Callable[[Rows, SamplingPolicies], list[tuple[str, str, str, float, float, int]]],
) -> None:
    window = 6 * 3600
    rows = rows_factory(400, seed=21, tenants=("acme", "globex"), days=1)
    pyrows = batch_factory(rows).to_pylist()
    per_window: dict[int, Rows] = {}
    for r in pyrows:
        start = int(r["event_ts"].timestamp()) // window * window
        per_window.setdefault(start, []).append(r)
    stream = BeamTestStream()
    for start, members in sorted(per_window.items()):
        # A streaming source batches records of one window together; two batches per window.
        half = len(members) // 2
        stream = stream.add_elements(
            [
                TimestampedValue(batch_factory(m), start + 1)
                for m in (members[:half], members[half:])
            ]
        ).advance_watermark_to(start + window)
    stream = stream.advance_watermark_to_infinity()
    expected = {
        IntervalWindow(start, start + window): oracle(members, policies)
        for start, members in per_window.items()
    }
    assert len(expected) == 4

    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    # The FnApiRunner has no TestStream; the bundle-based direct runner does, without Prism.
    with BeamTestPipeline(runner="BundleBasedDirectRunner", options=options) as p:
        samples = (
            p
            | "Stream" >> stream
            | "Window" >> beam.WindowInto(FixedWindows(window))
            | "Sample" >> SampleByPolicy(SampleConfig(policies))
            | "Project" >> beam.Map(_project)
        )
        assert_that(samples, equal_to_per_window(expected), label="PerWindow")


def _one_row_batch(batch_factory: Callable[[Rows], pa.RecordBatch], **changes: Any) -> Any:
    row = {
        "tenant_id": "acme",
        "request_id": "r1",
        "event_ts": DAY0,
        "model_id": "m",
        "model_version": "1",
        "features": [],
        "score": 0.5,
        **changes,
    }
    return batch_factory([row])


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b.drop_columns(["flags"]), r"this batch lacks \['flags'\]"),
        (
            lambda b: b.set_column(1, "request_id", pa.array([None], pa.large_string())),
            r"request_id has 1 nulls",
        ),
    ],
)
def test_invalid_batches_are_refused_with_a_clear_message(
    policies: SamplingPolicies,
    batch_factory: Callable[[Rows], pa.RecordBatch],
    mutate: Callable[[pa.RecordBatch], pa.RecordBatch],
    message: str,
) -> None:
    batch = mutate(_one_row_batch(batch_factory))
    with pytest.raises(ValueError, match=message):
        list(_PreselectFn(policies).process(batch))


def test_event_days_are_utc_days_whatever_the_timestamp_unit_or_zone(
    policies: SamplingPolicies, batch_factory: Callable[[Rows], pa.RecordBatch]
) -> None:
    late = DAY0 + datetime.timedelta(hours=23, minutes=59, seconds=59)
    batch = _one_row_batch(batch_factory, event_ts=late)
    event_ts = batch.column("event_ts")
    ns = batch.set_column(2, "event_ts", event_ts.cast(pa.timestamp("ns", "UTC")))
    # Already the 22nd in Tokyo: the stratum is still the UTC day.
    tokyo = batch.set_column(2, "event_ts", event_ts.cast(pa.timestamp("us", "Asia/Tokyo")))
    for b in (batch, ns, tokyo):
        [(key, _acc)] = list(_PreselectFn(policies).process(b))
        assert key == ("acme", "2026-11-21")


def test_config_refuses_a_wrong_policies_object() -> None:
    with pytest.raises(ValueError, match="policies must be a SamplingPolicies"):
        SampleConfig({"version": "v1"})  # type: ignore[arg-type]


def test_arrow_rows_concatenate_across_metadata_and_refuse_other_types(
    rows_factory: Callable[..., Rows], batch_factory: Callable[[Rows], pa.RecordBatch]
) -> None:
    rows = rows_factory(4, seed=1)
    contract = ArrowRows(pa.Table.from_batches([batch_factory(rows[:2])]))
    # The same types without the contract's metadata and not-null flags still concatenate.
    loose = pa.schema([pa.field(f.name, f.type) for f in INFERENCE_ARROW_SCHEMA])
    plain = ArrowRows(pa.Table.from_pylist(rows[2:], schema=loose))
    both = contract.concat([plain])
    assert both.to_pylist() == batch_factory(rows).to_pylist()
    assert pickle.loads(pickle.dumps(both)).to_pylist() == both.to_pylist()
    narrow = plain.table.set_column(0, "tenant_id", plain.table.column(0).cast(pa.string()))
    with pytest.raises(ValueError, match=r"tenant_id has incompatible types.*cast every batch"):
        contract.concat([ArrowRows(narrow)])
