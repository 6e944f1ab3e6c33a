"""Parse windowed Kafka messages into Arrow batches of inference records, with offset ledgers."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam import pvalue
from apache_beam.metrics import Metrics
from apache_beam.pvalue import PCollection
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from whylake.schemas.dead_letter import dead_letter
from whylake.schemas.errors import ConfigError, InvalidRecordError
from whylake.schemas.inference import INFERENCE_ARROW_SCHEMA
from whylake.transforms.dead_letters import DEAD_LETTERS
from whylake.transforms.kafka.config import KafkaReadConfig, KafkaRecord
from whylake.transforms.kafka.ledger import OffsetLedger, merge_ranges
from whylake.transforms.kafka.positions import committed_positions
from whylake.transforms.progress import report
from whylake.transforms.read import coerce_json_row, peek_ids

log = logging.getLogger(__name__)

OFFSETS = "offsets"


@dataclass(frozen=True)
class ParseConfig:
    """How records become batches, and where the finished-window list is read from."""

    run_id: str
    kafka: KafkaReadConfig
    batch_rows: int = 5000
    skip_finished_windows: bool = True  # read the finished-window list from Kafka at setup

    def __post_init__(self) -> None:
        if self.batch_rows <= 0:
            raise ConfigError(f"batch_rows must be positive, got {self.batch_rows}")


class ParseKafkaRecords(beam.PTransform[PCollection[KafkaRecord], pvalue.DoOutputsTuple]):
    """Windowed KafkaRecords -> `records` (RecordBatch per window), `dead_letters`, `offsets`.

    `offsets`: one OffsetLedger per window per bundle, timestamped at the oldest record it
    covers, for `CommitKafkaOffsets`.
    """

    def __init__(self, config: ParseConfig) -> None:
        super().__init__()
        self.config = config

    def expand(self, records: PCollection[KafkaRecord]) -> pvalue.DoOutputsTuple:
        return records | "ParseToBatches" >> beam.ParDo(
            _ParseToBatchesFn(self.config)
        ).with_input_types(KafkaRecord).with_output_types(pa.RecordBatch).with_outputs(
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
            partial = peek_ids(text)
            yield pvalue.TaggedOutput(
                DEAD_LETTERS,
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
                (int(window.end.micros // 1000), partition, tuple(merge_ranges(ranges)))
                for partition, ranges in sorted(per_partition.items())
            )
            # In the records' own window, timestamped at its oldest record: the committer's
            # watermark cannot pass the window before this entry has reached it.
            yield pvalue.TaggedOutput(
                OFFSETS,
                WindowedValue(OffsetLedger(topic, entries), self.ledger_oldest[window], [window]),
            )
