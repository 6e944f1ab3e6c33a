"""The Kafka reader's watermark on Prism: one partition's backlog holds it, whatever the others do.

The fault test lost the last records of one partition after a restart: the other partition had
drained its backlog and gone idle (watermark -> wall-clock time), and Prism took that idle
partition's residual watermark as the whole reader's (it keeps the watermark of the last bundle's
residuals, not the minimum over all partitions). The backlog partition's remaining records were
then behind the watermark, dropped at the first aggregation, and their offsets committed anyway.

The timing here is the test's: partition 0 holds a backlog of records ten minutes old, read 10
per poll; partition 1 is empty from the start, so it is idle (and caught up) at its first poll.
Every record must come out of a downstream aggregation in an on-time pane.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.sdf_utils import RestrictionTrackerView, ThreadsafeRestrictionTracker
from apache_beam.transforms import trigger, window
from apache_beam.utils.timestamp import Duration, Timestamp
from apache_beam.utils.windowed_value import PaneInfoTiming

from tests.integration.test_streaming import KAFKA, PRISM, _create_topic, _require_services
from whylake.transforms.kafka import KafkaBatch, KafkaReadConfig, ReadFromKafkaTopic
from whylake.transforms.kafka.source import _ReadPartitionsFn

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

BACKLOG = 2000  # records on partition 0, read 10 per poll: 200 polls
PER_POLL = 10
WINDOW_S = 5.0
LATENESS_S = 5.0


class _RecordPanesFn(beam.DoFn):  # type: ignore[misc]
    """Appends each fired pane (window end, records, timing) to a file, one JSON line each."""

    _lock = threading.Lock()

    def __init__(self, path: str) -> None:
        self.path = path

    def process(
        self,
        element: tuple[str, int],
        win: Any = beam.DoFn.WindowParam,
        pane: Any = beam.DoFn.PaneInfoParam,
    ) -> None:
        key, records = element
        line = {"key": key, "end": float(win.end), "records": records, "timing": int(pane.timing)}
        with self._lock, open(self.path, "a") as out:
            out.write(json.dumps(line) + "\n")


def _produce_backlog(topic: str, oldest_s: float) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": KAFKA, "linger.ms": 5})
    for i in range(BACKLOG):
        ms = int((oldest_s + i * 30.0 / BACKLOG) * 1000)  # 30 s of event time, in order
        producer.produce(topic, json.dumps({"i": i}).encode(), partition=0, timestamp=ms)
    assert producer.flush(60) == 0


def _panes(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_a_backlog_partition_holds_the_watermark_while_another_partition_is_idle(
    tmp_path: Path,
) -> None:
    _require_services()
    topic = _create_topic(partitions=2)
    _produce_backlog(topic, oldest_s=time.time() - 600)
    config = KafkaReadConfig(
        topic,
        bootstrap_servers=KAFKA,
        group_id=f"test-{uuid.uuid4().hex[:8]}",
        max_records_per_poll=PER_POLL,
        window_s=WINDOW_S,
        allowed_lateness_s=LATENESS_S,
    )
    out = tmp_path / "panes.jsonl"
    options = PipelineOptions(
        [
            "--runner=PrismRunner",
            "--streaming",
            f"--prism_location={PRISM}",
            "--environment_type=LOOPBACK",
        ]
    )
    p = beam.Pipeline(options=options)
    _ = (
        p
        | ReadFromKafkaTopic(config)
        | beam.WindowInto(
            window.FixedWindows(WINDOW_S),
            trigger=trigger.AfterWatermark(late=trigger.AfterCount(1)),
            accumulation_mode=trigger.AccumulationMode.DISCARDING,
            allowed_lateness=Duration.of(2 * LATENESS_S),  # the job's lateness + margin
        )
        # Late-flagged batches (past the lateness) would be dead letters, not lost: keyed apart.
        | beam.Map(lambda b: ("late" if b.late else "on time", len(b.offsets))).with_input_types(
            KafkaBatch
        )
        | beam.CombinePerKey(sum)
        | beam.ParDo(_RecordPanesFn(str(out)))
    )
    result = p.run()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if sum(pane["records"] for pane in _panes(out)) >= BACKLOG:
                break
            time.sleep(1.0)
    finally:
        result.cancel()
    panes = _panes(out)
    seen = sum(pane["records"] for pane in panes)
    assert seen == BACKLOG, f"{BACKLOG - seen} of {BACKLOG} backlog records dropped: {panes}"
    # No pane is late: nothing was emitted behind the watermark (the offset barrier's premise).
    assert all(pane["timing"] == PaneInfoTiming.ON_TIME for pane in panes), panes
    assert all(pane["key"] == "on time" for pane in panes), "backlog records flagged late"


def _drive(fn: _ReadPartitionsFn, element: tuple[str, tuple[int, ...]], state: Any) -> Any:
    """One process() call as the SDK makes it: outputs, the watermark after, the residual."""
    restriction, estimator_state = state
    tracker = ThreadsafeRestrictionTracker(fn.create_tracker(restriction))
    estimator = fn.create_watermark_estimator(estimator_state)
    outputs = list(fn.process(element, RestrictionTrackerView(tracker), estimator))
    deferred = tracker.deferred_status()
    assert deferred is not None, "the reader returned without a checkpoint"
    return outputs, estimator.current_watermark(), (deferred[0], estimator.get_estimator_state())


def test_a_record_behind_the_watermark_is_stamped_at_it_and_one_past_the_lateness_is_late() -> None:
    from confluent_kafka import Producer

    _require_services()
    topic = _create_topic(partitions=2)
    now_ms = int(time.time() * 1000)
    producer = Producer({"bootstrap.servers": KAFKA})
    first_ms = now_ms - 20_000
    producer.produce(topic, b"a", partition=0, timestamp=first_ms)
    assert producer.flush(30) == 0
    config = KafkaReadConfig(
        topic,
        bootstrap_servers=KAFKA,
        group_id=f"test-{uuid.uuid4().hex[:8]}",
        window_s=WINDOW_S,
        allowed_lateness_s=LATENESS_S,
    )
    fn = _ReadPartitionsFn(config)
    fn.setup()
    try:
        element = (topic, (0, 1))
        restriction = fn.initial_restriction(element)
        state = (restriction, fn.initial_estimator_state(element, restriction))
        watermark = None
        for _ in range(50):  # until record a is read and both partitions have a watermark
            _, watermark, state = _drive(fn, element, state)
            if watermark is not None:
                break
        # Partition 1 is idle (wall-clock watermark); partition 0 holds the minimum at a - 1 s.
        assert watermark == Timestamp(micros=(first_ms - 1000) * 1000)
        behind_ms, late_ms = first_ms - 3000, first_ms - 60_000
        producer.produce(topic, b"b", partition=0, timestamp=behind_ms)
        producer.produce(topic, b"c", partition=0, timestamp=late_ms)
        assert producer.flush(30) == 0
        got: dict[bytes, Any] = {}
        for _ in range(50):
            outputs, after, state = _drive(fn, element, state)
            assert after == watermark  # neither record moves it
            for out in outputs:
                for value in out.value.values:
                    got[value] = out
            if len(got) == 2:
                break
        # b: 2 s behind the watermark, within the 5 s lateness: emitted at the watermark, on time.
        assert not got[b"b"].value.late and got[b"b"].timestamp == watermark
        assert got[b"b"].value.timestamps_ms == (behind_ms,)  # its own time is kept
        # c: a minute behind: a late batch (a dead letter downstream), at the watermark too.
        assert got[b"c"].value.late and got[b"c"].timestamp == watermark
    finally:
        fn.teardown()
