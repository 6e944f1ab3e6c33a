"""Replicate committed explanation records to OpenSearch: the hot, rebuildable 30-day copy."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.pvalue import PCollection

from whylake.lake.failpoints import Failpoints
from whylake.lake.opensearch import IndexOutcome, OpenSearchConfig, index_records

Row = dict[str, Any]


class WriteToOpenSearch(beam.PTransform[PCollection[Row], PCollection[IndexOutcome]]):
    """Index explanation records (after their Iceberg commit) in bulk; output the outcomes.

    OpenSearch is a replica: when it is unreachable the documents are counted as replica lag
    (`whylake/replica_lag`) and `whylake replica backfill` catches up from Iceberg later.
    """

    def __init__(self, config: OpenSearchConfig, failpoints: Failpoints | None = None) -> None:
        super().__init__()
        self.config = config
        self.failpoints = failpoints or Failpoints()  # testing only: lake/failpoints.py

    def expand(self, records: PCollection[Row]) -> PCollection[IndexOutcome]:
        return records | "BulkIndex" >> beam.ParDo(
            _WriteToOpenSearchFn(self.config, self.failpoints)
        ).with_output_types(IndexOutcome)

    def display_data(self) -> dict[str, Any]:
        # The URL and user name only: the password is a Secret and never shown.
        return {
            "url": self.config.url,
            "index_prefix": self.config.index_prefix,
            "batch_size": self.config.batch_size,
        }


class _WriteToOpenSearchFn(beam.DoFn):  # type: ignore[misc]
    def __init__(self, config: OpenSearchConfig, failpoints: Failpoints) -> None:
        self.config = config
        self.failpoints = failpoints
        self.indexed = Metrics.counter("whylake", "replica_indexed")
        self.lag = Metrics.counter("whylake", "replica_lag")

    def setup(self) -> None:
        self.client = self.config.client()
        self.known: set[str] = set()

    def start_bundle(self) -> None:
        # One buffer per window: an outcome is emitted in the window of the rows it indexed,
        # so the step works on windowed (streaming) input as well as in the global window.
        self.buffers: dict[Any, list[Row]] = {}

    def process(self, record: Row, window: Any = beam.DoFn.WindowParam) -> Iterator[IndexOutcome]:
        buffer = self.buffers.setdefault(window, [])
        buffer.append(record)
        if len(buffer) >= self.config.batch_size:
            yield self._flush(self.buffers.pop(window))

    def finish_bundle(self) -> Iterator[Any]:
        from apache_beam.utils.windowed_value import WindowedValue

        for window, buffer in self.buffers.items():
            yield WindowedValue(self._flush(buffer), window.max_timestamp(), [window])
        self.buffers = {}

    def _flush(self, buffer: list[Row]) -> IndexOutcome:
        self.failpoints.hit("before-replica")
        outcome = index_records(self.client, self.config, buffer, self.known)
        self.indexed.inc(outcome.indexed)
        self.lag.inc(outcome.failed)
        return outcome

    def teardown(self) -> None:
        client = getattr(self, "client", None)
        if client is not None:
            client.close()
