"""Read a Kafka topic in Beam (Python-native, confluent-kafka) and commit offsets after Iceberg.

Three pieces, used together by `pipelines/streaming.py`:

- `ReadFromKafkaTopic`: an unbounded splittable DoFn, one restriction per partition: an
  `OffsetRange(start, ∞)` claimed offset by offset, a watermark estimator (bounded
  out-of-orderness over the records' Kafka timestamps, advanced to wall-clock time while the
  partition is caught up), and a checkpoint (`ProcessContinuation.resume`) every poll so each
  bundle stays short. Each record carries `claimed_from`: the first offset it covers, so the
  records of a partition tile its offsets without gaps (control records, compaction).
- `ParseKafkaRecords`: JSON -> Arrow RecordBatches of the inference schema, one batch per
  window per bundle (a batch takes one window); malformed values -> dead letters; and one
  offset ledger per bundle: which offsets fell into which window.
- `CommitKafkaOffsets`: commits, per partition, the offset below which every record's window
  is *finished* — the watermark after the Iceberg commits has passed the window's end plus the
  allowed lateness, so every pane of it, on time or late, is durable in Iceberg.

Exactly once in the tables, argued:

1. Delivery is at least once: the reader starts at the group's committed offset, and an
   offset is committed only when every record below it belongs to a finished window. The
   committer's input is the ledger flattened with the Iceberg commit results, so its event-time
   timer for window W (at W.end + allowed lateness + margin) cannot fire before the commit
   steps have processed every element of W: a Beam watermark never passes an element in flight.
2. Redelivered records are deduplicated by the tables: explanation and dead-letter ids are
   deterministic (input + model + explainer config; stage + source + record), and
   `lake.commit.append_once` appends only keys that are not yet present, re-checking on retry.
3. The sample itself is reproducible: priorities are hashes of (seed, request id), and a
   window that was not finished before a restart is re-read whole (its records all lie at or
   after the committed offset), so it is sampled from the same population again. Records of
   windows that *were* finished but lie after the committed offset (out-of-order neighbours)
   are dropped on re-read: the finished windows are listed in the offset commit's metadata.

Known limit: a window with late panes that was committed pane by pane but not finished when
the job died is re-read as one pane on restart, so its late records may be sampled with a
different (still correct for that pane) inclusion probability; ids stay unique.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import apache_beam as beam
import pyarrow as pa
from apache_beam import pvalue
from apache_beam.coders import PickleCoder
from apache_beam.io.iobase import RestrictionTracker
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.metrics import Metrics
from apache_beam.transforms.core import RestrictionProvider, WatermarkEstimatorProvider
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import GlobalWindows
from apache_beam.utils.timestamp import Duration, Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from schemas.dead_letter import dead_letter
from schemas.errors import InvalidRecordError
from schemas.inference import INFERENCE_ARROW_SCHEMA
from transforms.progress import report
from transforms.read import coerce_json_row

log = logging.getLogger(__name__)

DEAD = "dead_letters"
OFFSETS = "offsets"
_END_OF_PARTITION = sys.maxsize  # an unbounded restriction: Kafka offsets never run out
_METADATA_MAX_CHARS = 3500  # Kafka's default offset.metadata.max.bytes is 4096


@dataclass(frozen=True)
class KafkaReadConfig:
    """Which topic, how to reach it, and how the reader polls and estimates its watermark."""

    topic: str
    bootstrap_servers: str = "127.0.0.1:9092"
    group_id: str = "whylake-stream"
    max_records_per_poll: int = 5000
    poll_timeout_s: float = 0.2
    max_out_of_orderness_s: float = 1.0  # the watermark trails the newest timestamp by this
    consumer_config: tuple[tuple[str, str], ...] = ()  # extra librdkafka settings (TLS, SASL)

    def __post_init__(self) -> None:
        if not self.topic:
            raise ValueError("topic must not be empty")
        if not self.bootstrap_servers:
            raise ValueError("bootstrap_servers must not be empty, e.g. 127.0.0.1:9092")
        if self.max_records_per_poll <= 0 or self.poll_timeout_s <= 0:
            raise ValueError("max_records_per_poll and poll_timeout_s must be positive")
        if self.max_out_of_orderness_s < 0:
            raise ValueError("max_out_of_orderness_s must not be negative")

    def consumer(self, **overrides: Any) -> Any:
        """A consumer of this group that never subscribes (partitions are assigned by Beam)."""
        from confluent_kafka import Consumer

        settings: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "group.id": self.group_id,
            "enable.auto.commit": False,  # offsets are committed after Iceberg, never before
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
            "socket.connection.setup.timeout.ms": 5000,
            **dict(self.consumer_config),
            **overrides,
        }
        return Consumer(settings)

    def partitions(self, timeout_s: float = 10.0) -> list[int]:
        """The topic's partitions, asking the broker; raises if it cannot be reached."""
        from confluent_kafka.admin import AdminClient

        admin = AdminClient(
            {"bootstrap.servers": self.bootstrap_servers, **dict(self.consumer_config)}
        )
        meta = admin.list_topics(topic=self.topic, timeout=timeout_s)
        topic = meta.topics.get(self.topic)
        if topic is None or topic.error is not None or not topic.partitions:
            raise InvalidRecordError(
                f"Kafka topic {self.topic!r} on {self.bootstrap_servers} does not exist "
                f"({topic.error if topic else 'unknown topic'}); create it first"
            )
        return sorted(topic.partitions)


class KafkaRecord(NamedTuple):
    """One Kafka message; it covers offsets [claimed_from, offset] of its partition."""

    topic: str
    partition: int
    offset: int
    claimed_from: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None


def committed_positions(
    config: KafkaReadConfig, partitions: Sequence[int], timeout_s: float = 60.0
) -> dict[int, tuple[int, set[int]]]:
    """Per partition: where to resume (committed offset, else the earliest) and the finished
    windows (their end, epoch ms) recorded with that commit.

    Retries while the broker is unreachable or its group coordinator is still loading (a
    freshly started broker answers NOT_COORDINATOR for a few seconds); raises after timeout_s.
    """
    from confluent_kafka import KafkaException

    deadline = time.monotonic() + timeout_s
    wait = 0.2
    while True:
        try:
            return _committed_positions_once(config, partitions)
        except KafkaException as exc:
            if time.monotonic() + wait > deadline:
                raise
            log.info("committed offsets of %s not readable yet (%s); retrying", config.topic, exc)
            time.sleep(wait)
            wait = min(2.0, wait * 2)


def _committed_positions_once(
    config: KafkaReadConfig, partitions: Sequence[int]
) -> dict[int, tuple[int, set[int]]]:
    from confluent_kafka import OFFSET_INVALID, TopicPartition

    consumer = config.consumer()
    try:
        wanted = [TopicPartition(config.topic, p) for p in partitions]
        found = {tp.partition: tp for tp in consumer.committed(wanted, timeout=10)}
        out = {}
        for p in partitions:
            tp = found[p]
            if tp.offset == OFFSET_INVALID or tp.offset < 0:
                low, _ = consumer.get_watermark_offsets(TopicPartition(config.topic, p), timeout=10)
                out[p] = (low, set())
            else:
                out[p] = (tp.offset, _finished_from_metadata(tp.metadata))
        return out
    finally:
        consumer.close()


def _finished_from_metadata(metadata: str | None) -> set[int]:
    if not metadata:
        return set()
    try:
        return {int(end) for end in json.loads(metadata).get("finished", [])}
    except (ValueError, AttributeError, TypeError):
        log.warning("ignoring unreadable offset metadata %r", metadata)
        return set()


class ReadFromKafkaTopic(beam.PTransform):  # type: ignore[type-arg]
    """PBegin -> unbounded PCollection[KafkaRecord], timestamped with the Kafka timestamp.

    Producers set the record timestamp (CreateTime) to the event's time, so these are event-time
    timestamps; a topic with LogAppendTime yields arrival time instead.
    """

    def __init__(self, config: KafkaReadConfig, partitions: Sequence[int] | None = None) -> None:
        super().__init__()
        self.config = config
        self._partitions = tuple(partitions) if partitions is not None else None

    def expand(self, pbegin: pvalue.PBegin) -> beam.PCollection:
        partitions = self._partitions or tuple(self.config.partitions())
        return (
            pbegin
            | "Partitions" >> beam.Create([(self.config.topic, p) for p in partitions])
            | "ReadPartition" >> beam.ParDo(_ReadPartitionFn(self.config))
        )


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
        claimed_from, newest_ms, read = start, None, 0
        for message in messages:
            if message.error() is not None:
                # Transport errors (broker down) are retried by librdkafka; resume later.
                self.errors.inc()
                log.warning("kafka %s[%d]: %s", topic, partition, message.error())
                break
            offset = message.offset()
            if not tracker.try_claim(offset):
                return
            _, ts_ms = message.timestamp()
            if ts_ms is None or ts_ms < 0:
                ts_ms = int(time.time() * 1000)
            yield beam.window.TimestampedValue(
                KafkaRecord(
                    topic, partition, offset, claimed_from, ts_ms, message.key(), message.value()
                ),
                ts_ms / 1000.0,
            )
            claimed_from, read = offset + 1, read + 1
            newest_ms = ts_ms if newest_ms is None else max(newest_ms, ts_ms)
        self._next[partition] = claimed_from
        if read:
            self.records.inc(read)
            report("kafka_read", read)
        lag = self.config.max_out_of_orderness_s
        if newest_ms is not None:
            self._advance(watermark, Timestamp.of(newest_ms / 1000.0 - lag))
        elif not messages and self._caught_up(consumer, topic, partition, claimed_from):
            # Nothing new and the broker says we are at the end: event time goes on anyway,
            # or an idle partition would hold every window open forever.
            self._advance(watermark, Timestamp.of(time.time() - lag))
        yield from ()
        tracker.defer_remainder(Duration.of(0 if read else self.config.poll_timeout_s))

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


# --- parse ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParseConfig:
    """How records become batches, and where the finished-window list is read from."""

    run_id: str
    kafka: KafkaReadConfig
    batch_rows: int = 5000
    skip_finished_windows: bool = True  # read the finished-window list from Kafka at setup

    def __post_init__(self) -> None:
        if self.batch_rows <= 0:
            raise ValueError(f"batch_rows must be positive, got {self.batch_rows}")


class OffsetLedger(NamedTuple):
    """Which offsets of each partition one bundle put in one window (its end, epoch ms)."""

    topic: str
    entries: tuple[tuple[int, int, tuple[tuple[int, int], ...]], ...]  # (end_ms, part, ranges)


class ParseKafkaRecords(beam.PTransform):  # type: ignore[type-arg]
    """Windowed KafkaRecords -> `records` (RecordBatch per window), `dead_letters`, `offsets`.

    `offsets`: one OffsetLedger per window per bundle, timestamped at the oldest record it
    covers, for `CommitKafkaOffsets`.
    """

    def __init__(self, config: ParseConfig) -> None:
        super().__init__()
        self.config = config

    def expand(self, records: beam.PCollection) -> pvalue.DoOutputsTuple:
        return records | "ParseToBatches" >> beam.ParDo(
            _ParseToBatchesFn(self.config)
        ).with_outputs(DEAD, OFFSETS, main="records")


class _ParseToBatchesFn(beam.DoFn):  # type: ignore[misc]
    def __init__(self, config: ParseConfig) -> None:
        self.config = config
        self.read = Metrics.counter("whylake", "records_read")
        self.unreadable = Metrics.counter("whylake", "records_unreadable")
        self.replayed = Metrics.counter("whylake", "records_replayed_skipped")

    def setup(self) -> None:
        # Windows finished before a restart: their re-read records are dropped (docstring, 3.).
        self.finished: dict[int, set[int]] = {}
        if not self.config.skip_finished_windows:
            return
        try:
            partitions = self.config.kafka.partitions()
            positions = committed_positions(self.config.kafka, partitions)
            self.finished = {p: ends for p, (_, ends) in positions.items()}
        except Exception as exc:  # noqa: BLE001 — a missing list only costs a re-sample
            log.warning("could not read finished windows from Kafka (%s); none skipped", exc)

    def start_bundle(self) -> None:
        self.rows: dict[Any, list[dict[str, Any]]] = defaultdict(list)
        self.oldest: dict[Any, Timestamp] = {}
        self.ledger: dict[Any, dict[int, list[tuple[int, int]]]] = defaultdict(
            lambda: defaultdict(list)
        )
        self.ledger_oldest: dict[Any, Timestamp] = {}

    def process(
        self,
        record: KafkaRecord,
        window: Any = beam.DoFn.WindowParam,
        timestamp: Timestamp = beam.DoFn.TimestampParam,
    ) -> Iterator[Any]:
        self.read.inc()
        end_ms = int(window.end.micros // 1000)
        self.ledger[window][record.partition].append((record.claimed_from, record.offset))
        if window not in self.ledger_oldest or timestamp < self.ledger_oldest[window]:
            self.ledger_oldest[window] = timestamp
        if end_ms in self.finished.get(record.partition, ()):
            self.replayed.inc()
            return
        source = f"kafka://{record.topic}/{record.partition}@{record.offset}"
        try:
            if record.value is None:
                raise InvalidRecordError("the Kafka message has no value")
            row = coerce_json_row(record.value.decode("utf-8"))
        except (ValueError, TypeError, KeyError, InvalidRecordError) as exc:
            self.unreadable.inc()
            text = (record.value or b"").decode("utf-8", errors="replace")
            partial = _peek(text)
            yield pvalue.TaggedOutput(
                DEAD,
                dead_letter(
                    run_id=self.config.run_id,
                    stage="read",
                    error=exc,
                    record=text,
                    source=source,
                    tenant_id=partial.get("tenant_id"),
                    request_id=partial.get("request_id"),
                ),
            )
            return
        if row.get("source_id") is None:
            row["source_id"] = source
        rows = self.rows[window]
        rows.append(row)
        if window not in self.oldest or timestamp < self.oldest[window]:
            self.oldest[window] = timestamp
        if len(rows) >= self.config.batch_rows:
            yield self._batch(window)

    def _batch(self, window: Any) -> WindowedValue:
        rows = self.rows.pop(window)
        report("read", len(rows))
        batch = pa.RecordBatch.from_pylist(rows, schema=INFERENCE_ARROW_SCHEMA)
        return WindowedValue(batch, self.oldest.pop(window), [window])

    def finish_bundle(self) -> Iterator[Any]:
        for window in list(self.rows):
            yield self._batch(window)
        topic = self.config.kafka.topic
        for window, per_partition in self.ledger.items():
            entries = tuple(
                (int(window.end.micros // 1000), partition, tuple(_merge(ranges)))
                for partition, ranges in sorted(per_partition.items())
            )
            # In the records' own window, timestamped at its oldest record: the committer's
            # watermark cannot pass the window before this entry has reached it.
            yield pvalue.TaggedOutput(
                OFFSETS,
                WindowedValue(OffsetLedger(topic, entries), self.ledger_oldest[window], [window]),
            )


def _peek(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(value, dict):
        return {}
    return {k: value[k] for k in ("tenant_id", "request_id") if isinstance(value.get(k), str)}


def _merge(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, merged inclusive offset ranges ([0, 4] and [5, 9] become [0, 9])."""
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def advance_frontier(
    frontier: int, done: list[tuple[int, int]], finished: dict[int, int]
) -> tuple[int, list[tuple[int, int]], dict[int, int]]:
    """Move a partition's commit frontier over the finished offsets contiguous with it.

    Args:
      frontier: the first offset not yet known to be durable.
      done: merged inclusive ranges of offsets whose windows are finished.
      finished: finished window end (ms) -> the highest offset it owns in this partition.

    Returns the new frontier, the ranges still beyond it, and the finished windows that still
    own offsets at or after it (the offset commit's metadata; module docstring, 3.).
    """
    while done and done[0][0] <= frontier:
        frontier = max(frontier, done[0][1] + 1)
        done = done[1:]
    return frontier, done, {end: hi for end, hi in finished.items() if hi >= frontier}


# --- commit offsets -------------------------------------------------------------------------


@dataclass(frozen=True)
class CommitOffsetsConfig:
    """When a window counts as finished: its end + allowed lateness + a safety margin."""

    kafka: KafkaReadConfig
    allowed_lateness_s: float
    margin_s: float = 1.0

    def __post_init__(self) -> None:
        if self.allowed_lateness_s < 0 or self.margin_s < 0:
            raise ValueError("allowed_lateness_s and margin_s must not be negative")


class CommittedOffset(NamedTuple):
    """An offset commit that Kafka acknowledged."""

    partition: int
    offset: int
    finished_windows: int


class CommitKafkaOffsets(beam.PTransform):  # type: ignore[type-arg]
    """Commit each partition's offsets once every record below them is durable in Iceberg.

    Args:
      config: the group to commit for and the windows' allowed lateness.
      after: the Iceberg commit results; flattened into this step's input only so that its
        watermark — hence its timers — waits for them (a barrier, their values are ignored).
    """

    def __init__(self, config: CommitOffsetsConfig, after: Sequence[beam.PCollection]) -> None:
        super().__init__()
        self.config = config
        self.after = tuple(after)

    def expand(self, ledgers: beam.PCollection) -> beam.PCollection:
        barriers = [
            pc
            | f"Barrier{i}Global" >> beam.WindowInto(GlobalWindows())
            | f"Barrier{i}Keyed"
            >> beam.Map(lambda _: ("offsets", None)).with_output_types(tuple[str, Any])
            for i, pc in enumerate(self.after)
        ]
        keyed = (
            ledgers
            | "LedgerGlobal" >> beam.WindowInto(GlobalWindows())
            | "KeyLedger"
            >> beam.Map(lambda ledger: ("offsets", ledger)).with_output_types(tuple[str, Any])
        )
        return (
            (keyed, *barriers)
            | "WithBarriers" >> beam.Flatten()
            | "CommitWhenFinished" >> beam.ParDo(_CommitOffsetsFn(self.config))
        )


_PENDING = ReadModifyWriteStateSpec("pending", PickleCoder())  # {end_ms: {part: ranges}}
_DONE = ReadModifyWriteStateSpec("done", PickleCoder())  # {part: (frontier, ranges, ahead)}
_FINISH = TimerSpec("finish", TimeDomain.WATERMARK)
_PENDING_PARAM = beam.DoFn.StateParam(_PENDING)
_DONE_PARAM = beam.DoFn.StateParam(_DONE)
_FINISH_PARAM = beam.DoFn.TimerParam(_FINISH)


class _CommitOffsetsFn(beam.DoFn):  # type: ignore[misc]
    """Keeps the ledger of unfinished windows; on each timer commits the finished prefix."""

    def __init__(self, config: CommitOffsetsConfig) -> None:
        self.config = config
        self.commits = Metrics.counter("whylake", "kafka_offset_commits")
        self.failures = Metrics.counter("whylake", "kafka_offset_commit_failures")

    def setup(self) -> None:
        self.consumer = self.config.kafka.consumer()

    def _deadline(self, end_ms: int) -> Timestamp:
        return Timestamp.of(end_ms / 1000.0 + self.config.allowed_lateness_s + self.config.margin_s)

    def process(
        self,
        element: tuple[str, OffsetLedger | None],
        pending_state: Any = _PENDING_PARAM,
        finish: Any = _FINISH_PARAM,
    ) -> Iterator[CommittedOffset]:
        _, ledger = element
        if ledger is not None:  # None: a barrier element, it only holds the watermark back
            pending = pending_state.read() or {}
            for end_ms, partition, ranges in ledger.entries:
                per_part = pending.setdefault(end_ms, {})
                per_part[partition] = _merge([*per_part.get(partition, ()), *ranges])
            pending_state.write(pending)
            finish.set(self._deadline(min(pending)))
        yield from ()

    @on_timer(_FINISH)
    def on_finish(
        self,
        fired_at: Timestamp = beam.DoFn.TimestampParam,
        pending_state: Any = _PENDING_PARAM,
        done_state: Any = _DONE_PARAM,
        finish: Any = _FINISH_PARAM,
    ) -> Iterator[CommittedOffset]:
        pending = pending_state.read() or {}
        done = done_state.read() or {}
        finished = [end for end in pending if self._deadline(end) <= fired_at]
        touched = set()
        for end_ms in finished:
            for partition, ranges in pending.pop(end_ms).items():
                frontier, done_ranges, ahead = done.get(partition) or (None, [], {})
                ahead = {**ahead, end_ms: max(ahead.get(end_ms, -1), ranges[-1][1])}
                done[partition] = (frontier, _merge([*done_ranges, *ranges]), ahead)
                touched.add(partition)
        for partition in sorted(touched):
            committed = self._commit(partition, done)
            if committed is not None:
                yield committed
        pending_state.write(pending)
        done_state.write(done)
        if pending:
            finish.set(self._deadline(min(pending)))

    def _commit(self, partition: int, done: dict[int, Any]) -> CommittedOffset | None:
        from confluent_kafka import KafkaException, TopicPartition

        frontier, ranges, ahead = before = done[partition]
        if frontier is None:
            # Where this run started reading: the offset committed before it (or the earliest).
            try:
                frontier, _ = committed_positions(self.config.kafka, [partition], 5.0)[partition]
            except KafkaException as exc:
                log.warning("partition %d: start offset unknown (%s); will retry", partition, exc)
                return None
        start = frontier
        frontier, ranges, ahead = advance_frontier(frontier, ranges, ahead)
        done[partition] = (frontier, ranges, ahead)
        if frontier == start:
            return None
        ends = sorted(ahead)
        metadata = json.dumps({"finished": ends}, separators=(",", ":"))
        while len(metadata) > _METADATA_MAX_CHARS:  # keep the oldest: they are re-read first
            ends = ends[: len(ends) // 2]
            metadata = json.dumps({"finished": ends}, separators=(",", ":"))
        try:
            self.consumer.commit(
                offsets=[TopicPartition(self.config.kafka.topic, partition, frontier, metadata)],
                asynchronous=False,
            )
        except KafkaException as exc:
            # Not fatal: the next commit covers these offsets too (commits are cumulative).
            self.failures.inc()
            log.warning("offset commit for partition %d failed (%s); will retry", partition, exc)
            done[partition] = (start, before[1], before[2])
            return None
        self.commits.inc()
        report("offsets_committed", 1)
        return CommittedOffset(partition, frontier, len(ends))

    def teardown(self) -> None:
        consumer = getattr(self, "consumer", None)
        if consumer is not None:
            consumer.close()
