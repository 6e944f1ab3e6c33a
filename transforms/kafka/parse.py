"""Parse windowed Kafka messages into Arrow batches of inference records, with offset ledgers."""

from __future__ import annotations

import bisect
import logging
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam import pvalue
from apache_beam.metrics import Metrics
from apache_beam.pvalue import PCollection
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from whylake.schemas.dead_letter import dead_letter
from whylake.schemas.errors import ConfigError
from whylake.schemas.pii import PiiPolicy
from whylake.transforms.dead_letters import DEAD_LETTERS
from whylake.transforms.kafka.config import KafkaBatch, KafkaReadConfig
from whylake.transforms.kafka.decode import decode_messages
from whylake.transforms.kafka.ledger import OffsetLedger, merge_ranges
from whylake.transforms.kafka.positions import committed_positions
from whylake.transforms.progress import report
from whylake.transforms.read import peek_ids

log = logging.getLogger(__name__)

OFFSETS = "offsets"


@dataclass(frozen=True)
class ParseConfig:
    """How records become batches, and where the finished-window list is read from."""

    run_id: str
    kafka: KafkaReadConfig
    batch_rows: int = 5000
    skip_finished_windows: bool = True  # read the finished-window list from Kafka at setup
    pii: PiiPolicy = field(kw_only=True)  # malformed events' personal fields: hashes only

    def __post_init__(self) -> None:
        if not isinstance(self.pii, PiiPolicy):
            raise ConfigError("ParseConfig needs pii: a PiiPolicy with the user-id hash key")
        if self.batch_rows <= 0:
            raise ConfigError(f"batch_rows must be positive, got {self.batch_rows}")


class ParseKafkaRecords(beam.PTransform[PCollection[KafkaBatch], pvalue.DoOutputsTuple]):
    """Windowed KafkaBatches -> `records` (RecordBatch per window), `dead_letters`, `offsets`.

    Late batches (past the allowed lateness) become dead letters of stage `late`.

    `offsets`: one OffsetLedger per window per bundle, timestamped at the oldest record it
    covers, for `CommitKafkaOffsets`.
    """

    def __init__(self, config: ParseConfig) -> None:
        super().__init__()
        self.config = config

    def expand(self, records: PCollection[KafkaBatch]) -> pvalue.DoOutputsTuple:
        return records | "ParseToBatches" >> beam.ParDo(
            _ParseToBatchesFn(self.config)
        ).with_input_types(KafkaBatch).with_output_types(pa.RecordBatch).with_outputs(
            DEAD_LETTERS, OFFSETS, main="records"
        )

    def display_data(self) -> dict[str, Any]:
        return {"topic": self.config.kafka.topic, "batch_rows": self.config.batch_rows}


class _ParseToBatchesFn(beam.DoFn):  # type: ignore[misc]
    def __init__(self, config: ParseConfig) -> None:
        self.config = config
        self.read = Metrics.counter("whylake", "records_read")
        self.unreadable = Metrics.counter("whylake", "records_unreadable")
        self.replayed = Metrics.counter("whylake", "records_replayed_skipped")
        self.late = Metrics.counter("whylake", "records_late")

    def setup(self) -> None:
        # Windows finished before a restart: their re-read records are dropped (docstring, 3.).
        self.finished: dict[int, dict[int, int | None]] = {}
        if not self.config.skip_finished_windows:
            return
        try:
            partitions = self.config.kafka.partitions()
            positions = committed_positions(self.config.kafka, partitions)
            self.finished = {p: ends for p, (_, ends) in positions.items()}
        except Exception as exc:  # noqa: BLE001 — a missing list only costs a re-sample
            log.warning("could not read finished windows from Kafka (%s); none skipped", exc)

    def start_bundle(self) -> None:
        self.batches: dict[Any, list[pa.RecordBatch]] = defaultdict(list)
        self.rows: dict[Any, int] = defaultdict(int)
        self.oldest: dict[Any, Timestamp] = {}
        self.ledger: dict[Any, dict[int, list[tuple[int, int]]]] = defaultdict(
            lambda: defaultdict(list)
        )
        self.ledger_oldest: dict[Any, Timestamp] = {}

    def process(
        self,
        batch: KafkaBatch,
        window: Any = beam.DoFn.WindowParam,
        timestamp: Timestamp = beam.DoFn.TimestampParam,
    ) -> Iterator[Any]:
        n = len(batch.offsets)
        self.read.inc(n)
        end_ms = int(window.end.micros // 1000)
        covered = zip(batch.claimed_from, batch.offsets, strict=True)
        self.ledger[window][batch.partition].extend(covered)
        if window not in self.ledger_oldest or timestamp < self.ledger_oldest[window]:
            self.ledger_oldest[window] = timestamp
        sources = [f"kafka://{batch.topic}/{batch.partition}@{o}" for o in batch.offsets]
        if batch.late:
            yield from self._late(batch, sources)
            return
        values = batch.values
        finished = self.finished.get(batch.partition, {})
        if end_ms in finished:
            # Records at or below the highest offset the finished window owned are its own (in
            # Iceberg); one above it went to a later window last time, so it is read again.
            upto = finished[end_ms]
            skip = n if upto is None else bisect.bisect_right(batch.offsets, upto)
            if skip:
                self.replayed.inc(skip)
                report("records_replayed_skipped", skip)
            if skip == n:
                return
            values, sources = values[skip:], sources[skip:]
        decoded = decode_messages(values, sources)
        for refused in decoded.refused:
            self.unreadable.inc()
            partial = peek_ids(refused.text)
            yield pvalue.TaggedOutput(
                DEAD_LETTERS,
                dead_letter(
                    run_id=self.config.run_id,
                    stage="read",
                    error=refused.error,
                    record=refused.text,
                    source=sources[refused.index],
                    tenant_id=partial.get("tenant_id"),
                    request_id=partial.get("request_id"),
                    pii=self.config.pii,
                ),
            )
        if decoded.batch.num_rows == 0:
            return
        self.batches[window].append(decoded.batch)
        self.rows[window] += decoded.batch.num_rows
        if window not in self.oldest or timestamp < self.oldest[window]:
            self.oldest[window] = timestamp
        if self.rows[window] >= self.config.batch_rows:
            yield self._batch(window)

    def _late(self, batch: KafkaBatch, sources: list[str]) -> Iterator[Any]:
        """Records past the allowed lateness: a dead letter each, never a silent drop."""
        lateness = self.config.kafka.allowed_lateness_s
        window_ms = int(self.config.kafka.window_s * 1000)
        for ts_ms, value, source in zip(batch.timestamps_ms, batch.values, sources, strict=True):
            self.late.inc()
            report("records_late", 1)
            text = (value or b"").decode("utf-8", errors="replace")
            partial = peek_ids(text)
            end = datetime.fromtimestamp((ts_ms // window_ms + 1) * window_ms / 1000, UTC)
            yield pvalue.TaggedOutput(
                DEAD_LETTERS,
                dead_letter(
                    run_id=self.config.run_id,
                    stage="late",
                    error=(
                        f"event time {datetime.fromtimestamp(ts_ms / 1000, UTC).isoformat()} "
                        f"falls in a window that ended at {end.isoformat()}, more than the "
                        f"allowed lateness ({lateness:g} s) before the stream's watermark; "
                        "replay it with the batch job or raise --allowed-lateness-s"
                    ),
                    error_type="LateRecord",
                    record=text,
                    source=source,
                    tenant_id=partial.get("tenant_id"),
                    request_id=partial.get("request_id"),
                    pii=self.config.pii,
                ),
            )

    def _batch(self, window: Any) -> WindowedValue:
        batches = self.batches.pop(window)
        rows = self.rows.pop(window)
        report("read", rows)
        merged = batches[0] if len(batches) == 1 else _concat(batches)
        return WindowedValue(merged, self.oldest.pop(window), [window])

    def finish_bundle(self) -> Iterator[Any]:
        for window in list(self.batches):
            yield self._batch(window)
        topic = self.config.kafka.topic
        for window, per_partition in self.ledger.items():
            entries = tuple(
                (int(window.end.micros // 1000), partition, tuple(merge_ranges(ranges)))
                for partition, ranges in sorted(per_partition.items())
            )
            # In the records' own window, timestamped at its oldest record: the committer's
            # watermark cannot pass the window before this entry has reached it.
            yield pvalue.TaggedOutput(
                OFFSETS,
                WindowedValue(OffsetLedger(topic, entries), self.ledger_oldest[window], [window]),
            )


def _concat(batches: list[pa.RecordBatch]) -> pa.RecordBatch:
    return pa.Table.from_batches(batches).combine_chunks().to_batches()[0]
