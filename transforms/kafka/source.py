"""Read a Kafka topic as an unbounded splittable DoFn, one restriction per partition."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.coders import PickleCoder
from apache_beam.io.iobase import RestrictionTracker
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.metrics import Metrics
from apache_beam.pvalue import PCollection
from apache_beam.transforms.core import RestrictionProvider, WatermarkEstimatorProvider
from apache_beam.utils.timestamp import MIN_TIMESTAMP, Duration, Timestamp

from whylake.transforms.kafka.config import KafkaBatch, KafkaReadConfig
from whylake.transforms.kafka.positions import committed_positions
from whylake.transforms.progress import report

log = logging.getLogger(__name__)

_END_OF_PARTITION = sys.maxsize  # an unbounded restriction: Kafka offsets never run out
_LATE = -1  # the batch key of records past the allowed lateness


class _BatchBuilder:
    """The messages of one poll that share a window, in offset order."""

    def __init__(self) -> None:
        self.offsets: list[int] = []
        self.claimed: list[int] = []
        self.timestamps: list[int] = []
        self.values: list[bytes | None] = []

    def add(self, offset: int, claimed_from: int, ts_ms: int, value: bytes | None) -> None:
        self.offsets.append(offset)
        self.claimed.append(claimed_from)
        self.timestamps.append(ts_ms)
        self.values.append(value)

    def build(self, topic: str, partition: int, late: bool) -> KafkaBatch:
        return KafkaBatch(
            topic,
            partition,
            tuple(self.offsets),
            tuple(self.claimed),
            tuple(self.timestamps),
            tuple(self.values),
            late,
        )


class ReadFromKafkaTopic(beam.PTransform[pvalue.PBegin, PCollection[KafkaBatch]]):
    """PBegin -> unbounded PCollection[KafkaBatch], timestamped with the Kafka timestamp.

    One element per poll and event-time window (`KafkaReadConfig.window_s`), at the oldest
    timestamp it holds; records past the allowed lateness come in `late` batches instead.

    Producers set the record timestamp (CreateTime) to the event's time, so these are event-time
    timestamps; a topic with LogAppendTime yields arrival time instead.
    """

    def __init__(self, config: KafkaReadConfig, partitions: Sequence[int] | None = None) -> None:
        super().__init__()
        self.config = config
        self._partitions = tuple(partitions) if partitions is not None else None

    def expand(self, pbegin: pvalue.PBegin) -> PCollection[KafkaBatch]:
        partitions = self._partitions or tuple(self.config.partitions())
        return (
            pbegin
            | "Partitions" >> beam.Create([(self.config.topic, p) for p in partitions])
            | "ReadPartition"
            >> beam.ParDo(_ReadPartitionFn(self.config)).with_output_types(KafkaBatch)
        )

    def display_data(self) -> dict[str, Any]:
        return {
            "topic": self.config.topic,
            "bootstrap_servers": self.config.bootstrap_servers,
            "group_id": self.config.group_id,
            "max_records_per_poll": self.config.max_records_per_poll,
        }


class _CheckpointOnlyTracker(OffsetRestrictionTracker):  # type: ignore[misc]
    """Offsets claimed in order; splits only at the current position (a checkpoint).

    A runner's dynamic split at a fraction of [start, ∞) would hand offsets no partition has
    to a second reader (Prism asks for 50%), so such splits are declined.
    """

    def try_split(self, fraction_of_remainder: float) -> tuple[OffsetRange, OffsetRange] | None:
        if fraction_of_remainder > 0:
            return None
        return super().try_split(fraction_of_remainder)


# The DoFn below is its own restriction and watermark-estimator provider (Beam's convention).
_RESTRICTION = beam.DoFn.RestrictionParam()
_WATERMARK = beam.DoFn.WatermarkEstimatorParam()


class _ReadPartitionFn(beam.DoFn, RestrictionProvider, WatermarkEstimatorProvider):  # type: ignore[misc]
    """Reads one partition's offsets; checkpoints after each poll so bundles stay short."""

    def __init__(self, config: KafkaReadConfig) -> None:
        self.config = config
        self.records = Metrics.counter("whylake", "kafka_records_read")
        self.errors = Metrics.counter("whylake", "kafka_poll_errors")
        self.late = Metrics.counter("whylake", "kafka_records_late")

    # -- restriction: offsets from the group's committed position to ∞, never split up front

    def initial_restriction(self, element: tuple[str, int]) -> OffsetRange:
        _, partition = element
        start, _ = committed_positions(self.config, [partition])[partition]
        return OffsetRange(start, _END_OF_PARTITION)

    def create_tracker(self, restriction: OffsetRange) -> RestrictionTracker:
        return _CheckpointOnlyTracker(restriction)

    def split(self, element: Any, restriction: OffsetRange) -> Iterator[OffsetRange]:
        yield restriction  # one reader per partition keeps its offsets in order

    def restriction_size(self, element: Any, restriction: OffsetRange) -> int:
        return 1  # unknown backlog; a constant keeps runners from splitting on size

    def truncate(self, element: Any, restriction: OffsetRange) -> None:
        return None  # on drain, stop reading; unread offsets stay uncommitted

    # -- watermark: set by process() from the records' timestamps

    def initial_estimator_state(self, element: Any, restriction: OffsetRange) -> None:
        return None

    def create_watermark_estimator(self, state: Timestamp | None) -> ManualWatermarkEstimator:
        return ManualWatermarkEstimator(state)

    def estimator_state_coder(self) -> PickleCoder:
        return PickleCoder()

    def setup(self) -> None:
        # One consumer per partition this worker reads, kept across bundles (resumes).
        self._consumers: dict[int, Any] = {}
        self._next: dict[int, int] = {}

    def _consumer_at(self, topic: str, partition: int, offset: int) -> Any:
        from confluent_kafka import TopicPartition

        consumer = self._consumers.get(partition)
        if consumer is None:
            consumer = self._consumers[partition] = self.config.consumer()
        if self._next.get(partition) != offset:
            consumer.assign([TopicPartition(topic, partition, offset)])
            self._next[partition] = offset
        return consumer

    @beam.DoFn.unbounded_per_element()
    def process(
        self,
        element: tuple[str, int],
        tracker: OffsetRestrictionTracker = _RESTRICTION,
        watermark: ManualWatermarkEstimator = _WATERMARK,
    ) -> Iterator[Any]:
        topic, partition = element
        start = tracker.current_restriction().start
        consumer = self._consumer_at(topic, partition, start)
        messages = consumer.consume(self.config.max_records_per_poll, self.config.poll_timeout_s)
        # One Beam element per (poll, window) instead of one per message: the per-element cost
        # of a Python runner (~10-20 us per step) was the largest item of the profile.
        batches: dict[int, _BatchBuilder] = {}
        late_before_ms = self._late_before_ms(watermark)
        window_ms = int(self.config.window_s * 1000)
        claimed_from, newest_ms, oldest_ms, read, stopped = start, None, None, 0, False
        for message in messages:
            if message.error() is not None:
                # Transport errors (broker down) are retried by librdkafka; resume later.
                self.errors.inc()
                log.warning("kafka %s[%d]: %s", topic, partition, message.error())
                break
            offset = message.offset()
            if not tracker.try_claim(offset):
                stopped = True
                break
            _, ts_ms = message.timestamp()
            if ts_ms is None or ts_ms < 0:
                ts_ms = int(time.time() * 1000)
            end_ms = (ts_ms // window_ms + 1) * window_ms
            key = _LATE if late_before_ms is not None and end_ms < late_before_ms else end_ms
            builder = batches.get(key)
            if builder is None:
                builder = batches[key] = _BatchBuilder()
            builder.add(offset, claimed_from, ts_ms, message.value())
            claimed_from, read = offset + 1, read + 1
            newest_ms = ts_ms if newest_ms is None else max(newest_ms, ts_ms)
            if key != _LATE:
                oldest_ms = ts_ms if oldest_ms is None else min(oldest_ms, ts_ms)
        for key, builder in batches.items():
            if key == _LATE:
                assert late_before_ms is not None
                at = watermark.current_watermark()  # on time: no runner may drop it
                self.late.inc(len(builder.offsets))
                yield beam.window.TimestampedValue(builder.build(topic, partition, True), at)
            else:
                yield beam.window.TimestampedValue(
                    builder.build(topic, partition, False), min(builder.timestamps) / 1000.0
                )
        self._next[partition] = claimed_from
        if read:
            self.records.inc(read)
            report("kafka_read", read)
        if stopped:
            return
        lag = self.config.max_out_of_orderness_s
        if newest_ms is not None:
            to = newest_ms / 1000.0 - lag
            if self.config.allowed_lateness_s is not None and oldest_ms is not None:
                # One poll of a backlog (after a restart) can span minutes of event time. A
                # watermark moved past all of it at once makes this poll's own oldest records
                # late at the first aggregation downstream (Prism drops them there), so it
                # moves at most the allowed lateness past them; the next polls move it on.
                to = min(to, oldest_ms / 1000.0 + self.config.allowed_lateness_s)
            self._advance(watermark, Timestamp.of(to))
        elif not messages and self._caught_up(consumer, topic, partition, claimed_from):
            # Nothing new and the broker says we are at the end: event time goes on anyway,
            # or an idle partition would hold every window open forever.
            self._advance(watermark, Timestamp.of(time.time() - lag))
        tracker.defer_remainder(Duration.of(0 if read else self.config.poll_timeout_s))

    def _late_before_ms(self, watermark: ManualWatermarkEstimator) -> int | None:
        """Windows ending before this (epoch ms) are past the allowed lateness, or None."""
        lateness = self.config.allowed_lateness_s
        current = watermark.current_watermark()
        if lateness is None or current is None or current <= MIN_TIMESTAMP:
            return None
        return int(current.micros // 1000 - lateness * 1000)

    def _caught_up(self, consumer: Any, topic: str, partition: int, position: int) -> bool:
        from confluent_kafka import KafkaException, TopicPartition

        try:
            _, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=1.0, cached=False
            )
        except KafkaException:
            return False  # broker unreachable: we do not know, so the watermark waits
        return bool(position >= high)

    @staticmethod
    def _advance(watermark: ManualWatermarkEstimator, to: Timestamp) -> None:
        current = watermark.current_watermark()
        if current is None or to > current:
            watermark.set_watermark(to)

    def teardown(self) -> None:
        for consumer in getattr(self, "_consumers", {}).values():
            consumer.close()
