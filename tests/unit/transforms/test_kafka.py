"""The Kafka reader's pure parts: offset bookkeeping, split refusal, and parsing into batches."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import window
from apache_beam.utils.timestamp import Timestamp

from tests.unit.keys import TEST_PII
from whylake.transforms.kafka import (
    KafkaBatch,
    KafkaReadConfig,
    OffsetLedger,
    ParseConfig,
    ParseKafkaRecords,
    advance_frontier,
)
from whylake.transforms.kafka.ledger import merge_ranges
from whylake.transforms.kafka.parse import _ParseToBatchesFn
from whylake.transforms.kafka.positions import _finished_from_metadata
from whylake.transforms.kafka.source import Positions, _PartitionWatermarks, _PositionsTracker

T0 = datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC).timestamp()


def test_ranges_merge_when_they_touch_or_overlap() -> None:
    assert merge_ranges([(5, 9), (0, 4), (20, 20), (8, 12)]) == [(0, 12), (20, 20)]
    assert merge_ranges([]) == []


def test_frontier_moves_only_over_a_contiguous_finished_prefix() -> None:
    # Offsets 0-9 finished (window 1000), 15-19 finished (window 3000), 10-14 still open.
    frontier, rest, ahead = advance_frontier(0, [(0, 9), (15, 19)], {1000: 9, 3000: 19})
    assert frontier == 10
    assert rest == [(15, 19)]
    assert ahead == {3000: 19}  # re-read after a restart: its records must be skipped
    frontier, rest, ahead = advance_frontier(frontier, [(10, 14), *rest], ahead)
    assert (frontier, rest, ahead) == (20, [], {})


def test_the_tracker_takes_checkpoints_but_declines_dynamic_splits() -> None:
    tracker = _PositionsTracker(Positions(((0, 5), (1, 7))))
    assert tracker.try_claim((0, 5)) and tracker.try_claim((0, 8))  # a gap: compacted offsets
    assert tracker.try_split(0.5) is None  # Prism asks for half of an unbounded range: declined
    with pytest.raises(ValueError, match="claimed after"):
        tracker.try_claim((0, 6))  # a partition's offsets are claimed in order
    primary, residual = tracker.try_split(0)
    assert primary == Positions(((0, 5), (1, 7)), ((0, 9), (1, 7)))
    assert residual == Positions(((0, 9), (1, 7)))
    assert not tracker.try_claim((1, 7))  # after a checkpoint this call claims nothing more
    assert tracker.check_done() and tracker.is_bounded()


def test_an_unbounded_restriction_must_end_in_a_checkpoint() -> None:
    tracker = _PositionsTracker(Positions(((0, 0),)))
    assert tracker.try_claim((0, 0))
    with pytest.raises(ValueError, match="without a checkpoint"):
        tracker.check_done()


def test_the_reader_watermark_is_the_slowest_partition_and_waits_for_all() -> None:
    watermarks = _PartitionWatermarks(((0, None), (1, None)))
    watermarks.advance(1, Timestamp.of(T0 + 600))  # an idle partition at wall-clock time
    assert watermarks.current_watermark() is None  # partition 0 unknown: holds everything
    watermarks.advance(0, Timestamp.of(T0))  # a backlog ten minutes behind
    assert watermarks.current_watermark() == Timestamp.of(T0)
    watermarks.advance(0, Timestamp.of(T0 - 5))  # never backwards
    assert watermarks.current_watermark() == Timestamp.of(T0)
    again = _PartitionWatermarks(watermarks.get_estimator_state())  # across a checkpoint
    assert again.current_watermark() == Timestamp.of(T0)


def test_offset_metadata_round_trips_and_tolerates_garbage() -> None:
    metadata = json.dumps({"finished": [[1000, 41], [3000, 97]]})
    assert _finished_from_metadata(metadata) == {1000: 41, 3000: 97}
    # Written by an older job: window ends only, each window skipped whole on a re-read.
    assert _finished_from_metadata(json.dumps({"finished": [1000, 3000]})) == {
        1000: None,
        3000: None,
    }
    assert _finished_from_metadata(None) == {}
    assert _finished_from_metadata("not json") == {}


def test_a_re_read_skips_only_the_offsets_its_finished_window_owned() -> None:
    # Window [T0, T0 + 5) finished owning offsets up to 11; offsets 12-13 have its event time
    # but went to a later window (they came in behind the watermark), maybe not committed yet.
    fn = _ParseToBatchesFn(
        ParseConfig("run-1", KafkaReadConfig(topic="t"), skip_finished_windows=False, pii=TEST_PII)
    )
    fn.setup()
    end_ms = int((T0 + 5) * 1000)
    fn.finished = {0: {end_ms: 11}}
    fn.start_bundle()
    offsets = (10, 11, 12, 13)
    batch = KafkaBatch(
        "t", 0, offsets, offsets, (int(T0 * 1000),) * 4, tuple(_event(f"r-{o}") for o in offsets)
    )
    win = window.IntervalWindow(T0, T0 + 5)
    assert list(fn.process(batch, win, Timestamp.of(T0))) == []  # batch_rows not reached
    outputs = list(fn.finish_bundle())
    (records,) = [o.value for o in outputs if not isinstance(o, beam.pvalue.TaggedOutput)]
    assert records.column("request_id").to_pylist() == ["r-12", "r-13"]
    (ledger,) = [o.value.value for o in outputs if isinstance(o, beam.pvalue.TaggedOutput)]
    assert ledger.entries == ((end_ms, 0, ((10, 13),)),)  # every offset still covered
    fn.finished = {0: {end_ms: None}}  # an older job's metadata: the whole window is skipped
    fn.start_bundle()
    assert list(fn.process(batch, win, Timestamp.of(T0))) == []
    assert [o for o in fn.finish_bundle() if not isinstance(o, beam.pvalue.TaggedOutput)] == []


def test_config_checks_itself() -> None:
    with pytest.raises(ValueError, match="topic"):
        KafkaReadConfig(topic="")
    with pytest.raises(ValueError, match="max_out_of_orderness_s"):
        KafkaReadConfig(topic="t", max_out_of_orderness_s=-1)


def _event(request_id: str) -> bytes:
    return json.dumps(
        {
            "tenant_id": "acme",
            "request_id": request_id,
            "event_ts": "2026-11-21T12:00:01+00:00",
            "model_id": "m",
            "model_version": "1",
            "features": {"a": 1.0},
            "score": 0.5,
        }
    ).encode()


def _record(offset: int, value: bytes, claimed_from: int | None = None) -> KafkaBatch:
    start = offset if claimed_from is None else claimed_from
    return KafkaBatch("t", 0, (offset,), (start,), (int(T0 * 1000),), (value,))


def _parse(records: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
    config = ParseConfig(
        "run-1", KafkaReadConfig(topic="t"), skip_finished_windows=False, pii=TEST_PII
    )
    return records | beam.WindowInto(window.FixedWindows(5)) | ParseKafkaRecords(config)


def _check(parsed: beam.pvalue.DoOutputsTuple) -> None:
    ids = parsed.records | "Ids" >> beam.FlatMap(lambda b: b.column("request_id").to_pylist())
    assert_that(ids, equal_to(["r-0", "r-2"]), label="valid")
    sources = parsed.dead_letters | "Sources" >> beam.Map(lambda d: (d.stage, d.source))
    assert_that(sources, equal_to([("read", "kafka://t/0@1")]), label="dead")
    covered = parsed.offsets | "Covered" >> beam.FlatMap(
        lambda ledger: [
            o for _, _, ranges in ledger.entries for lo, hi in ranges for o in range(lo, hi + 1)
        ]
    )
    # The three records tile offsets 0-3 (offset 2 was a control record: covered by r-2).
    assert_that(covered, equal_to([0, 1, 2, 3]), label="ledger")


def test_parse_on_create_batches_valid_records_and_dead_letters_the_rest() -> None:
    records = [_record(0, _event("r-0")), _record(1, b"{broken"), _record(3, _event("r-2"), 2)]
    with TestPipeline(runner="FnApiRunner") as p:
        stamped = (
            p
            | beam.Create(records)
            | beam.Map(lambda r: window.TimestampedValue(r, r.timestamps_ms[0] / 1000))
        )
        _check(_parse(stamped))


def test_parse_on_test_stream_gives_the_same_outputs() -> None:
    stream = (
        TestStream()
        .advance_watermark_to(T0)
        .add_elements([window.TimestampedValue(_record(0, _event("r-0")), T0)])
        .add_elements([window.TimestampedValue(_record(1, b"{broken"), T0)])
        .add_elements([window.TimestampedValue(_record(3, _event("r-2"), 2), T0)])
        .advance_watermark_to_infinity()
    )
    with TestPipeline(runner="DirectRunner", options=None) as p:
        _check(_parse(p | stream))


def test_a_ledger_is_a_plain_tuple() -> None:
    ledger = OffsetLedger("t", ((1000, 0, ((0, 3),)),))
    assert ledger.entries[0][2] == ((0, 3),)


def test_one_batch_of_many_messages_gives_the_same_outputs() -> None:
    (a,), (b,), (c,) = (
        _record(0, _event("r-0")).values,
        _record(1, b"{broken").values,
        _record(3, _event("r-2")).values,
    )
    ms = int(T0 * 1000)
    batch = KafkaBatch("t", 0, (0, 1, 3), (0, 1, 2), (ms, ms, ms), (a, b, c))
    with TestPipeline(runner="FnApiRunner") as p:
        stamped = p | beam.Create([batch]) | beam.Map(lambda b: window.TimestampedValue(b, T0))
        _check(_parse(stamped))


def test_a_late_batch_becomes_dead_letters_of_stage_late_and_still_covers_its_offsets() -> None:
    ms = int(T0 * 1000) - 600_000  # ten minutes before the watermark it is stamped at
    late = KafkaBatch("t", 0, (7, 8), (7, 8), (ms, ms), (_event("r-7"), b"{not json"), late=True)
    config = ParseConfig(
        "run-1",
        KafkaReadConfig(topic="t", window_s=5, allowed_lateness_s=30),
        skip_finished_windows=False,
        pii=TEST_PII,
    )
    with TestPipeline(runner="FnApiRunner") as p:
        parsed = (
            p
            | beam.Create([late])
            | beam.Map(lambda b: window.TimestampedValue(b, T0))
            | beam.WindowInto(window.FixedWindows(5))
            | ParseKafkaRecords(config)
        )
        assert_that(
            parsed.records | "Ids" >> beam.FlatMap(lambda b: b.column("request_id").to_pylist()),
            equal_to([]),
            label="none explained",
        )
        dead = parsed.dead_letters | "Dead" >> beam.Map(
            lambda d: (
                d.stage,
                d.error_type,
                d.source,
                d.request_id,
                "allowed lateness" in d.error_message,
            )
        )
        assert_that(
            dead,
            equal_to(
                [
                    ("late", "LateRecord", "kafka://t/0@7", "r-7", True),
                    ("late", "LateRecord", "kafka://t/0@8", None, True),
                ]
            ),
            label="dead",
        )
        covered = parsed.offsets | "Covered" >> beam.FlatMap(
            lambda ledger: [
                o for _, _, r in ledger.entries for lo, hi in r for o in range(lo, hi + 1)
            ]
        )
        assert_that(covered, equal_to([7, 8]), label="ledger")
