"""Read logged inference records from JSONL and Parquet files (local, s3://, gs://) into Arrow."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from apache_beam import pvalue
from apache_beam.metrics import Metrics

from whylake.lake.storage import StorageConfig
from whylake.schemas.dead_letter import DeadLetter, dead_letter
from whylake.schemas.errors import ConfigError, InputNotFoundError, InvalidRecordError
from whylake.schemas.inference import INFERENCE_ARROW_SCHEMA, REQUIRED_COLUMNS
from whylake.transforms.dead_letters import DEAD_LETTERS

_STRING_FIELDS = ("tenant_id", "request_id", "model_id", "model_version")
_OPTIONAL_STRINGS = (
    "predicted_class",
    "label",
    "user_id",
    "trust_tier",
    "source_id",
    "input_hash",
    "text",
)
_OPTIONAL_FLOATS = ("confidence", "risk_score")


@dataclass(frozen=True)
class ReadConfig:
    """Which files to read, through which file systems, and how many rows go in one Arrow batch.

    Patterns are local paths, or URIs of any file system pyarrow reaches (`s3://bucket/day/*`,
    `gs://...`); `storage` holds the endpoints and credentials (pyiceberg's FileIO properties).
    """

    patterns: tuple[str, ...]
    run_id: str
    batch_rows: int = 50_000
    storage: StorageConfig = StorageConfig()

    def __post_init__(self) -> None:
        if not self.patterns:
            raise ConfigError("give at least one input path or glob")
        if self.batch_rows <= 0:
            raise ConfigError(f"batch_rows must be positive, got {self.batch_rows}")

    def files(self) -> list[str]:
        """Expand the globs; a pattern that matches nothing is an error, not an empty day."""
        found: list[str] = []
        for pattern in self.patterns:
            try:
                matches = self.storage.expand(pattern)
            except OSError as exc:
                raise InputNotFoundError(f"cannot list input {pattern!r}: {exc}") from exc
            if not matches:
                raise InputNotFoundError(f"input {pattern!r} matched no file")
            found.extend(matches)
        for path in found:
            if not path.endswith((".jsonl", ".json", ".ndjson", ".parquet")):
                raise InputNotFoundError(f"{path}: only .jsonl/.ndjson/.json and .parquet are read")
        return sorted(set(found))


class ReadInferenceRecords(beam.PTransform[pvalue.PBegin, pvalue.DoOutputsTuple]):
    """Files -> Arrow batches in the inference schema; unreadable rows -> dead letters.

    Returns a tagged result: the main output (PCollection[pa.RecordBatch]) and
    `dead_letters` (PCollection[DeadLetter]).
    """

    def __init__(self, config: ReadConfig) -> None:
        super().__init__()
        self.config = config

    def expand(self, pbegin: pvalue.PBegin) -> pvalue.DoOutputsTuple:
        return (
            pbegin
            | "ListFiles" >> beam.Create(self.config.files())
            | "SpreadFiles" >> beam.Reshuffle()
            | "ReadFile"
            >> beam.ParDo(_ReadFileFn(self.config))
            .with_input_types(str)
            .with_output_types(pa.RecordBatch)
            .with_outputs(DEAD_LETTERS, main="records")
        )

    def display_data(self) -> dict[str, Any]:
        return {"inputs": ", ".join(self.config.patterns), "batch_rows": self.config.batch_rows}


class _ReadFileFn(beam.DoFn):  # type: ignore[misc]
    def __init__(self, config: ReadConfig) -> None:
        self.config = config
        self.rows_read = Metrics.counter("whylake", "records_read")
        self.rows_unreadable = Metrics.counter("whylake", "records_unreadable")

    def process(self, path: str) -> Iterator[Any]:
        reader = _read_parquet if path.endswith(".parquet") else _read_jsonl
        fs, fs_path = self.config.storage.filesystem(path)
        for item in reader(fs, fs_path, path, self.config):
            if isinstance(item, DeadLetter):
                self.rows_read.inc()
                self.rows_unreadable.inc()
                yield pvalue.TaggedOutput(DEAD_LETTERS, item)
            else:
                self.rows_read.inc(item.num_rows)
                yield item


def _read_parquet(
    fs: pafs.FileSystem, fs_path: str, path: str, config: ReadConfig
) -> Iterator[pa.RecordBatch | DeadLetter]:
    # Random access for the footer and row groups: a seekable file, not a stream.
    file = pq.ParquetFile(fs.open_input_file(fs_path))
    names = set(file.schema_arrow.names)
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        raise InvalidRecordError(f"{path}: required columns {missing} are missing")
    for i, batch in enumerate(file.iter_batches(batch_size=config.batch_rows)):
        try:
            table = conform(pa.Table.from_batches([batch]))
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
            # A batch that cannot take the schema at all: every row goes to the dead letters.
            for offset, row in enumerate(batch.to_pylist()):
                yield dead_letter(
                    run_id=config.run_id,
                    stage="read",
                    error=exc,
                    record=row,
                    source=f"{path}#batch{i}+{offset}",
                    tenant_id=row.get("tenant_id"),
                    request_id=row.get("request_id"),
                )
            continue
        complete = _all_valid(table)
        if not pc.all(complete).as_py():
            for offset in pc.indices_nonzero(pc.invert(complete)).to_pylist():
                row = table.slice(offset, 1).to_pylist()[0]
                absent = [c for c in REQUIRED_COLUMNS if row.get(c) is None]
                yield dead_letter(
                    run_id=config.run_id,
                    stage="read",
                    error=InvalidRecordError(f"required fields missing: {absent}"),
                    record=row,
                    source=f"{path}#batch{i}+{offset}",
                    tenant_id=row.get("tenant_id"),
                    request_id=row.get("request_id"),
                )
            table = table.filter(complete)
        yield from table.to_batches()


def _all_valid(table: pa.Table) -> pa.ChunkedArray:
    mask = pc.is_valid(table[REQUIRED_COLUMNS[0]])
    for column in REQUIRED_COLUMNS[1:]:
        mask = pc.and_(mask, pc.is_valid(table[column]))
    return mask


def conform(table: pa.Table) -> pa.Table:
    """Select and cast the inference columns; optional columns that are absent become nulls."""
    columns = []
    for field in INFERENCE_ARROW_SCHEMA:
        if field.name in table.column_names:
            columns.append(table[field.name].cast(field.type))
        else:
            columns.append(pa.nulls(table.num_rows, field.type))
    # Nullability is checked row by row by the caller; build with a nullable schema first.
    loose = pa.schema([f.with_nullable(True) for f in INFERENCE_ARROW_SCHEMA])
    return pa.Table.from_arrays(columns, schema=loose)


def _read_jsonl(
    fs: pafs.FileSystem, fs_path: str, path: str, config: ReadConfig
) -> Iterator[pa.RecordBatch | DeadLetter]:
    rows: list[dict[str, Any]] = []
    # A buffered stream: object stores are read front to back in large requests.
    with (
        fs.open_input_stream(fs_path) as raw,
        io.TextIOWrapper(raw, encoding="utf-8") as fh,  # type: ignore[arg-type]
    ):
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rows.append(coerce_json_row(line))
            except (ValueError, TypeError, KeyError, InvalidRecordError) as exc:
                partial = peek_ids(line)
                yield dead_letter(
                    run_id=config.run_id,
                    stage="read",
                    error=exc,
                    record=line.rstrip("\n"),
                    source=f"{path}:{line_no}",
                    tenant_id=partial.get("tenant_id"),
                    request_id=partial.get("request_id"),
                )
                continue
            if len(rows) >= config.batch_rows:
                yield from _to_batches(rows)
                rows = []
    if rows:
        yield from _to_batches(rows)


def _to_batches(rows: Sequence[dict[str, Any]]) -> Iterable[pa.RecordBatch]:
    return pa.Table.from_pylist(list(rows), schema=INFERENCE_ARROW_SCHEMA).to_batches()


def peek_ids(line: str) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except ValueError:
        return {}
    if not isinstance(value, dict):
        return {}
    return {k: value[k] for k in ("tenant_id", "request_id") if isinstance(value.get(k), str)}


def coerce_json_row(line: str) -> dict[str, Any]:
    """Parse one JSON line into a row of the inference schema, or raise saying what is wrong."""
    raw = json.loads(line)
    if not isinstance(raw, dict):
        raise InvalidRecordError(f"a record must be a JSON object, got {type(raw).__name__}")
    missing = [c for c in REQUIRED_COLUMNS if raw.get(c) is None]
    if missing:
        raise InvalidRecordError(f"required fields missing: {missing}")
    row: dict[str, Any] = {}
    for name in _STRING_FIELDS:
        value = raw[name]
        if not isinstance(value, str):
            raise InvalidRecordError(f"{name} must be a string, got {value!r}")
        row[name] = value
    ts = datetime.fromisoformat(str(raw["event_ts"]).replace("Z", "+00:00"))
    if ts.tzinfo is None:
        raise InvalidRecordError(f"event_ts {raw['event_ts']!r} has no time zone; log UTC times")
    row["event_ts"] = ts
    features = raw["features"]
    # A text model's record carries its input in `text`; its features may be empty.
    if not isinstance(features, dict) or not (features or isinstance(raw.get("text"), str)):
        raise InvalidRecordError("features must be a non-empty object of name -> number")
    row["features"] = [(str(k), _number(f"features.{k}", v)) for k, v in features.items()]
    row["score"] = _number("score", raw["score"])
    for name in _OPTIONAL_FLOATS:
        value = raw.get(name)
        row[name] = None if value is None else _number(name, value)
    for name in _OPTIONAL_STRINGS:
        value = raw.get(name)
        row[name] = None if value is None else str(value)
    flags = raw.get("flags")
    if flags is not None and (
        not isinstance(flags, list) or not all(isinstance(f, str) for f in flags)
    ):
        raise InvalidRecordError(f"flags must be a list of strings, got {flags!r}")
    row["flags"] = flags
    return row


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidRecordError(f"{name} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise InvalidRecordError(f"{name} must be finite, got {value!r}")
    return number
