"""Commit each partition's offsets once every record below them is durable in Iceberg."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.coders import PickleCoder
from apache_beam.metrics import Metrics
from apache_beam.pvalue import PCollection
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import GlobalWindows
from apache_beam.utils.timestamp import Timestamp

from whylake.schemas.errors import ConfigError
from whylake.transforms.kafka.config import KafkaReadConfig
from whylake.transforms.kafka.ledger import OffsetLedger, advance_frontier, merge_ranges
from whylake.transforms.kafka.positions import committed_positions
from whylake.transforms.progress import report

log = logging.getLogger(__name__)

_METADATA_MAX_CHARS = 3500  # Kafka's default offset.metadata.max.bytes is 4096


@dataclass(frozen=True)
class CommitOffsetsConfig:
    """When a window counts as finished: its end + allowed lateness + a safety margin."""

    kafka: KafkaReadConfig
    allowed_lateness_s: float
    margin_s: float = 1.0

    def __post_init__(self) -> None:
        if self.allowed_lateness_s < 0 or self.margin_s < 0:
            raise ConfigError("allowed_lateness_s and margin_s must not be negative")


class CommittedOffset(NamedTuple):
    """An offset commit that Kafka acknowledged."""

    partition: int
    offset: int
    finished_windows: int


class CommitKafkaOffsets(beam.PTransform[PCollection[OffsetLedger], PCollection[CommittedOffset]]):
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

    def expand(self, ledgers: PCollection[OffsetLedger]) -> PCollection[CommittedOffset]:
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
            | "CommitWhenFinished"
            >> beam.ParDo(_CommitOffsetsFn(self.config)).with_output_types(CommittedOffset)
        )

    def display_data(self) -> dict[str, Any]:
        return {
            "topic": self.config.kafka.topic,
            "group_id": self.config.kafka.group_id,
            "allowed_lateness_s": self.config.allowed_lateness_s,
        }


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
                per_part[partition] = merge_ranges([*per_part.get(partition, ()), *ranges])
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
                done[partition] = (frontier, merge_ranges([*done_ranges, *ranges]), ahead)
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
        # Each finished window with the highest offset it owns here: on a re-read only its own
        # records are skipped, not a record of its time that went to a later window (one that
        # arrived behind the watermark), which may not be committed yet.
        ends = [[end, ahead[end]] for end in sorted(ahead)]
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
