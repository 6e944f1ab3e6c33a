"""Read a Kafka topic as an unbounded splittable DoFn: one restriction for all its partitions."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.coders import PickleCoder
from apache_beam.io.iobase import RestrictionProgress, RestrictionTracker, WatermarkEstimator
from apache_beam.metrics import Metrics
from apache_beam.pvalue import PCollection
from apache_beam.transforms.core import RestrictionProvider, WatermarkEstimatorProvider
from apache_beam.utils.timestamp import Duration, Timestamp

from whylake.transforms.kafka.config import KafkaBatch, KafkaReadConfig
from whylake.transforms.kafka.positions import committed_positions
from whylake.transforms.progress import report

log = logging.getLogger(__name__)

_LATE = -1  # the batch key of records past the allowed lateness


class _BatchBuilder:
    """The messages of one poll of one partition that share a window, in offset order."""

    def __init__(self) -> None:
        self.offsets: list[int] = []
        self.claimed: list[int] = []
        self.timestamps: list[int] = []
        self.values: list[bytes | None] = []
        self.at_us: int | None = None  # the element's timestamp (micros): oldest record, or later

    def add(
        self, offset: int, claimed_from: int, ts_ms: int, at_us: int, value: bytes | None
    ) -> None:
        self.offsets.append(offset)
        self.claimed.append(claimed_from)
        self.timestamps.append(ts_ms)
        self.values.append(value)
        self.at_us = at_us if self.at_us is None else min(self.at_us, at_us)

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

    One element per poll, partition and event-time window (`KafkaReadConfig.window_s`), at the
    oldest timestamp it holds. Nothing is emitted behind the reader's watermark: a record behind
    it by less than the allowed lateness is stamped at the watermark (it joins the window open
    there; its event_ts is unchanged), and records past the allowed lateness come in `late`
    batches, stamped at the watermark too, for the dead letters.

    Producers set the record timestamp (CreateTime) to the event's time, so these are event-time
    timestamps; a topic with LogAppendTime yields arrival time instead.
    """

    def __init__(self, config: KafkaReadConfig, partitions: Sequence[int] | None = None) -> None:
        super().__init__()
        self.config = config
        self._partitions = tuple(partitions) if partitions is not None else None

    def expand(self, pbegin: pvalue.PBegin) -> PCollection[KafkaBatch]:
        partitions = self._partitions or tuple(self.config.partitions())
        # One element (one restriction) for all partitions: the reader's watermark is then the
        # minimum over the partitions, computed here. With one restriction per partition, Prism
        # 2.77 takes the watermark of whichever partition's bundle finished last (it keeps the
        # last bundle's residual watermark, "aggregated here until it makes a difference",
        # elementmanager.go), so an idle partition's wall-clock watermark overtook another
        # partition's backlog, whose records were then dropped as late at the first aggregation
        # while their offsets were committed: events lost (the fault test, issue 10).
        return (
            pbegin
            | "Partitions" >> beam.Create([(self.config.topic, tuple(sorted(partitions)))])
            | "ReadPartitions"
            >> beam.ParDo(_ReadPartitionsFn(self.config)).with_output_types(KafkaBatch)
        )

    def display_data(self) -> dict[str, Any]:
        return {
            "topic": self.config.topic,
            "bootstrap_servers": self.config.bootstrap_servers,
            "group_id": self.config.group_id,
            "max_records_per_poll": self.config.max_records_per_poll,
        }


class Positions(NamedTuple):
    """The reader's restriction: each partition's next offset, unbounded unless `end` is set.

    A checkpoint splits it into a bounded primary [start, end) (what this call claimed) and an
    unbounded residual from `end`.
    """

    start: tuple[tuple[int, int], ...]  # (partition, first offset not yet read), sorted
    end: tuple[tuple[int, int], ...] | None = None


class _PositionsTracker(RestrictionTracker):  # type: ignore[misc]
    """Claims (partition, offset) in each partition's order; splits only at a checkpoint.

    A runner's dynamic split at a fraction of an unbounded restriction would hand offsets no
    partition has to a second reader (Prism asks for 50%), so such splits are declined.
    """

    def __init__(self, restriction: Positions) -> None:
        self._restriction = restriction
        self._next = dict(restriction.start)
        self._claimed = 0
        self._checkpointed = restriction.end is not None

    def current_restriction(self) -> Positions:
        return self._restriction

    def try_claim(self, position: tuple[int, int]) -> bool:
        partition, offset = position
        if self._checkpointed:
            return False
        if partition not in self._next:
            raise ValueError(f"partition {partition} is not in this restriction")
        if offset < self._next[partition]:
            raise ValueError(
                f"offset {offset} of partition {partition} claimed after {self._next[partition]}"
            )
        self._next[partition] = offset + 1
        self._claimed += 1
        return True

    def try_split(self, fraction_of_remainder: float) -> tuple[Positions, Positions] | None:
        if fraction_of_remainder > 0 or self._checkpointed:
            return None
        here = tuple(sorted(self._next.items()))
        primary, residual = Positions(self._restriction.start, here), Positions(here)
        self._restriction, self._checkpointed = primary, True
        return primary, residual

    def check_done(self) -> bool:
        # Everything up to a checkpoint is claimed by construction; an unbounded restriction
        # is only ever finished by a checkpoint (or by the runner's drain, which truncates it).
        if not self._checkpointed:
            raise ValueError("the Kafka reader returned without a checkpoint")
        return True

    def current_progress(self) -> RestrictionProgress:
        return RestrictionProgress(completed=self._claimed, remaining=1)

    def is_bounded(self) -> bool:
        return self._restriction.end is not None


class _PartitionWatermarks(WatermarkEstimator):  # type: ignore[misc]
    """Each partition's watermark; the reader's is their minimum, None until all have one."""

    def __init__(self, state: tuple[tuple[int, int | None], ...]) -> None:
        self._micros = dict(state)

    def observe_timestamp(self, timestamp: Timestamp) -> None:
        pass  # set from the records' Kafka timestamps by the DoFn, per partition

    def current_watermark(self) -> Timestamp | None:
        if not self._micros or any(m is None for m in self._micros.values()):
            return None
        return Timestamp(micros=min(m for m in self._micros.values() if m is not None))

    def advance(self, partition: int, to: Timestamp) -> None:
        current = self._micros.get(partition)
        if current is None or to.micros > current:
            self._micros[partition] = to.micros

    def get_estimator_state(self) -> tuple[tuple[int, int | None], ...]:
        return tuple(sorted(self._micros.items()))


# The DoFn below is its own restriction and watermark-estimator provider (Beam's convention).
_RESTRICTION = beam.DoFn.RestrictionParam()
_WATERMARK = beam.DoFn.WatermarkEstimatorParam()


class _ReadPartitionsFn(beam.DoFn, RestrictionProvider, WatermarkEstimatorProvider):  # type: ignore[misc]
    """Reads a topic's partitions with one consumer; checkpoints after each poll."""

    def __init__(self, config: KafkaReadConfig) -> None:
        self.config = config
        self.records = Metrics.counter("whylake", "kafka_records_read")
        self.errors = Metrics.counter("whylake", "kafka_poll_errors")
        self.late = Metrics.counter("whylake", "kafka_records_late")
        self.behind = Metrics.counter("whylake", "kafka_records_behind_watermark")

    # -- restriction: offsets from the group's committed positions to ∞, never split up front

    def initial_restriction(self, element: tuple[str, tuple[int, ...]]) -> Positions:
        _, partitions = element
        positions = committed_positions(self.config, partitions)
        return Positions(tuple(sorted((p, start) for p, (start, _) in positions.items())))

    def create_tracker(self, restriction: Positions) -> RestrictionTracker:
        return _PositionsTracker(restriction)

    def split(self, element: Any, restriction: Positions) -> Iterator[Positions]:
        yield restriction  # one reader keeps every partition's offsets in order

    def restriction_size(self, element: Any, restriction: Positions) -> int:
        return 1  # unknown backlog; a constant keeps runners from splitting on size

    def restriction_coder(self) -> PickleCoder:
        return PickleCoder()

    def truncate(self, element: Any, restriction: Positions) -> None:
        return None  # on drain, stop reading; unread offsets stay uncommitted

    # -- watermark: per partition, set by process() from the records' timestamps

    def initial_estimator_state(
        self, element: tuple[str, tuple[int, ...]], restriction: Positions
    ) -> tuple[tuple[int, int | None], ...]:
        return tuple((p, None) for p, _ in restriction.start)

    def create_watermark_estimator(
        self, state: tuple[tuple[int, int | None], ...]
    ) -> _PartitionWatermarks:
        return _PartitionWatermarks(state)

    def estimator_state_coder(self) -> PickleCoder:
        return PickleCoder()

    def setup(self) -> None:
        # One consumer for the partitions this worker reads, kept across bundles (resumes), and
        # one that only asks for end offsets: on the reading consumer that query waits behind its
        # long-polling fetch of an idle partition (fetch.wait.max.ms, 0.5 s measured per call).
        self._consumer: Any = None
        self._ends: Any = None
        self._next: dict[int, int] = {}

    def _consumer_at(self, topic: str, positions: dict[int, int]) -> Any:
        from confluent_kafka import TopicPartition

        if self._consumer is None:
            self._consumer = self.config.consumer()
        if self._next != positions:
            self._consumer.assign([TopicPartition(topic, p, o) for p, o in positions.items()])
            self._next = dict(positions)
        return self._consumer

    @beam.DoFn.unbounded_per_element()
    def process(
        self,
        element: tuple[str, tuple[int, ...]],
        tracker: RestrictionTracker = _RESTRICTION,
        watermark: _PartitionWatermarks = _WATERMARK,
    ) -> Iterator[Any]:
        topic, _ = element
        start = dict(tracker.current_restriction().start)
        consumer = self._consumer_at(topic, start)
        messages = consumer.consume(self.config.max_records_per_poll, self.config.poll_timeout_s)
        # One Beam element per (poll, partition, window) instead of one per message: the
        # per-element cost of a Python runner (~10-20 us per step) was the profile's largest.
        batches: dict[tuple[int, int], _BatchBuilder] = {}
        current = watermark.current_watermark()
        current_ms = None if current is None else int(current.micros // 1000)
        late_before_ms = self._late_before_ms(current_ms)
        window_ms = int(self.config.window_s * 1000)
        claimed_from = dict(start)
        newest: dict[int, int] = {}
        oldest: dict[int, int] = {}
        read, behind, stopped, failed = 0, 0, False, False
        for message in messages:
            if message.error() is not None:
                # Transport errors (broker down) are retried by librdkafka; resume later.
                self.errors.inc()
                log.warning("kafka %s[%s]: %s", topic, message.partition(), message.error())
                failed = True
                break
            partition, offset = message.partition(), message.offset()
            if not tracker.try_claim((partition, offset)):
                stopped = True
                break
            _, ts_ms = message.timestamp()
            if ts_ms is None or ts_ms < 0:
                ts_ms = int(time.time() * 1000)
            if late_before_ms is not None and (ts_ms // window_ms + 1) * window_ms < late_before_ms:
                key, at_us = _LATE, ts_ms * 1000
            else:
                # Behind the watermark but within the lateness: stamped at the watermark, in the
                # window open there (its event_ts unchanged). An element behind the watermark
                # holds no watermark downstream, so the offset committer's barrier could pass it
                # while it is still on its way to Iceberg; stamped at the watermark, it holds it.
                at_us = ts_ms * 1000
                if current is not None and at_us < current.micros:
                    at_us = current.micros
                    behind += 1
                key = (at_us // 1000 // window_ms + 1) * window_ms
                oldest[partition] = min(oldest.get(partition, ts_ms), ts_ms)
            builder = batches.get((partition, key))
            if builder is None:
                builder = batches[(partition, key)] = _BatchBuilder()
            builder.add(offset, claimed_from[partition], ts_ms, at_us, message.value())
            claimed_from[partition], read = offset + 1, read + 1
            newest[partition] = max(newest.get(partition, ts_ms), ts_ms)
        for (partition, key), builder in batches.items():
            if key == _LATE:
                assert current is not None
                self.late.inc(len(builder.offsets))
                # Stamped at the watermark (on time: no runner may drop it); dead-lettered.
                yield beam.window.TimestampedValue(builder.build(topic, partition, True), current)
            else:
                assert builder.at_us is not None
                yield beam.window.TimestampedValue(
                    builder.build(topic, partition, False), Timestamp(micros=builder.at_us)
                )
        self._next = claimed_from
        if read:
            self.records.inc(read)
            report("kafka_read", read)
        if behind:
            self.behind.inc(behind)
            report("records_behind_watermark", behind)
        if stopped:
            return
        lag = self.config.max_out_of_orderness_s
        for partition in start:
            if partition in newest:
                to = newest[partition] * 1000 - int(lag * 1e6)  # micros, exact
                if self.config.allowed_lateness_s is not None and partition in oldest:
                    # One poll of a backlog (after a restart) can span minutes of event time. A
                    # watermark moved past all of it at once would make the next poll's records
                    # late, so it moves at most the allowed lateness past this poll's oldest.
                    lateness_us = int(self.config.allowed_lateness_s * 1e6)
                    to = min(to, oldest[partition] * 1000 + lateness_us)
                watermark.advance(partition, Timestamp(micros=to))
            elif not failed and self._caught_up(topic, partition, claimed_from[partition]):
                # Nothing new and the broker says we are at the end: event time goes on anyway,
                # or an idle partition would hold every window open forever. A record that
                # arrives behind this after all is stamped at the watermark (above).
                watermark.advance(partition, Timestamp.of(time.time() - lag))
        tracker.defer_remainder(Duration.of(0 if read else self.config.poll_timeout_s))

    def _late_before_ms(self, current_ms: int | None) -> int | None:
        """Windows ending before this (epoch ms) are past the allowed lateness, or None."""
        lateness = self.config.allowed_lateness_s
        if lateness is None or current_ms is None:
            return None
        return int(current_ms - lateness * 1000)

    def _caught_up(self, topic: str, partition: int, position: int) -> bool:
        from confluent_kafka import KafkaException, TopicPartition

        if self._ends is None:
            self._ends = self.config.consumer()
        try:
            _, high = self._ends.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=1.0, cached=False
            )
        except KafkaException:
            return False  # broker unreachable: we do not know, so the watermark waits
        return bool(position >= high)

    def teardown(self) -> None:
        for consumer in (getattr(self, "_consumer", None), getattr(self, "_ends", None)):
            if consumer is not None:
                consumer.close()
