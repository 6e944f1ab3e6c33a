"""Read logged inference records from JSONL and Parquet files (local, s3://, gs://) into Arrow."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
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
from whylake.schemas.pii import PiiPolicy
from whylake.transforms.dead_letters import DEAD_LETTERS, arrow_row
from whylake.transforms.isolate import isolate_failures

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
    # Unreadable records are kept as dead letters: their personal fields only as keyed hashes.
    pii: PiiPolicy = field(kw_only=True)

    def __post_init__(self) -> None:
        if not isinstance(self.pii, PiiPolicy):
            raise ConfigError("ReadConfig needs pii: a PiiPolicy with the user-id hash key")
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
        try:
            fs, fs_path = self.config.storage.filesystem(path)
            for item in reader(fs, fs_path, path, self.config):
                yield from self._emit(item)
        except Exception as exc:  # noqa: BLE001 - e.g. the file went away: the rest is lost
            yield from self._emit(_file_dead_letter(path, exc, self.config, what="read"))

    def _emit(self, item: pa.RecordBatch | DeadLetter) -> Iterator[Any]:
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
    """A Parquet file's rows in the inference schema; every row it cannot give, a dead letter.

    Nothing in a file stops the job: a file that is not Parquet (or breaks mid-way) is one dead
    letter saying so, a file without a required column gives one dead letter per row, and a
    batch that cannot take the schema is narrowed down to the rows that cannot.
    """
    try:
        # Random access for the footer and row groups: a seekable file, not a stream.
        file = pq.ParquetFile(fs.open_input_file(fs_path))
        names = set(file.schema_arrow.names)
    except Exception as exc:  # noqa: BLE001 - an unreadable file is a dead letter, not a crash
        yield _file_dead_letter(path, exc, config)
        return
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    batches = file.iter_batches(batch_size=config.batch_rows)
    i = -1
    while True:
        try:
            i += 1
            batch = next(batches)
        except StopIteration:
            return
        except Exception as exc:  # noqa: BLE001 - a corrupt page: what is left is unreadable
            yield _file_dead_letter(path, exc, config, batch=i)
            return
        if missing:
            error = InvalidRecordError(f"{path}: required columns {missing} are missing")
            for offset in range(batch.num_rows):
                yield _row_dead_letter(arrow_row(batch, offset), error, path, i, offset, config)
            continue
        yield from _conform_batch(batch, path, i, config)


def _conform_batch(
    batch: pa.RecordBatch, path: str, i: int, config: ReadConfig
) -> Iterator[pa.RecordBatch | DeadLetter]:
    offsets = list(range(batch.num_rows))
    conformed = isolate_failures(
        offsets, lambda rows: [_conform_rows(batch, rows)], namespace="whylake_read"
    )
    for offset, exc in conformed.failures:
        # A row whose values cannot take the schema's types (e.g. a score "high").
        yield _row_dead_letter(arrow_row(batch, offset), exc, path, i, offset, config)
    for offsets_kept, table in conformed.results:
        complete = _all_valid(table)
        if not pc.all(complete).as_py():
            for k in pc.indices_nonzero(pc.invert(complete)).to_pylist():
                row = arrow_row(table, k)
                absent = [c for c in REQUIRED_COLUMNS if row.get(c) is None]
                error = InvalidRecordError(f"required fields missing: {absent}")
                yield _row_dead_letter(row, error, path, i, offsets_kept[k], config)
            table = table.filter(complete)
        yield from table.to_batches()


def _conform_rows(batch: pa.RecordBatch, offsets: Sequence[int]) -> tuple[list[int], pa.Table]:
    rows = list(offsets)
    if len(rows) == batch.num_rows:
        part = pa.Table.from_batches([batch])
    else:  # contiguous by construction (bisected halves of a range)
        part = pa.Table.from_batches([batch.slice(rows[0], len(rows))])
    return rows, conform(part)


def _row_dead_letter(
    row: dict[str, Any], error: BaseException, path: str, i: int, offset: int, config: ReadConfig
) -> DeadLetter:
    return dead_letter(
        run_id=config.run_id,
        stage="read",
        error=error,
        record=row,
        source=f"{path}#batch{i}+{offset}",
        tenant_id=row.get("tenant_id"),
        request_id=row.get("request_id"),
        pii=config.pii,
    )


def _file_dead_letter(
    path: str,
    error: BaseException,
    config: ReadConfig,
    batch: int | None = None,
    what: str = "read as Parquet",
) -> DeadLetter:
    """One dead letter for a file (or the rest of one) that cannot be read at all."""
    where = "" if batch is None else f" from batch {batch} on"
    return dead_letter(
        run_id=config.run_id,
        stage="read",
        error=f"{path} cannot be {what}{where}: {type(error).__name__}: {error}",
        error_type=type(error).__name__,
        record=f"<file {path}>",
        source=path if batch is None else f"{path}#batch{batch}",
        pii=config.pii,
    )


def _all_valid(table: pa.Table) -> pa.ChunkedArray:
    mask = pc.is_valid(table[REQUIRED_COLUMNS[0]])
    for column in REQUIRED_COLUMNS[1:]:
        mask = pc.and_(mask, pc.is_valid(table[column]))
    return mask


def conform(table: pa.Table) -> pa.Table:
    """Select and cast the inference columns; optional columns that are absent become nulls."""
    columns = []
    for f in INFERENCE_ARROW_SCHEMA:
        if f.name in table.column_names:
            columns.append(table[f.name].cast(f.type))
        else:
            columns.append(pa.nulls(table.num_rows, f.type))
    # Nullability is checked row by row by the caller; build with a nullable schema first.
    loose = pa.schema([f.with_nullable(True) for f in INFERENCE_ARROW_SCHEMA])
    return pa.Table.from_arrays(columns, schema=loose)


def _read_jsonl(
    fs: pafs.FileSystem, fs_path: str, path: str, config: ReadConfig
) -> Iterator[pa.RecordBatch | DeadLetter]:
    pending: list[tuple[int, str, dict[str, Any]]] = []  # (line number, line, row)
    # A buffered stream (object stores are read front to back in large requests), in bytes
    # decoded line by line: one line that is not UTF-8 is a dead letter, not a crash.
    with (
        fs.open_input_stream(fs_path) as raw,
        io.BufferedReader(raw, buffer_size=1 << 20) as fh,  # type: ignore[arg-type]
    ):
        for line_no, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            try:
                pending.append((line_no, line, coerce_json_row(raw.decode("utf-8"))))
            except Exception as exc:  # noqa: BLE001 - any record at all: a dead letter alone
                yield _line_dead_letter(path, line_no, line, exc, config)
                continue
            if len(pending) >= config.batch_rows:
                yield from _to_batches(path, pending, config)
                pending = []
    if pending:
        yield from _to_batches(path, pending, config)


def _to_batches(
    path: str, pending: Sequence[tuple[int, str, dict[str, Any]]], config: ReadConfig
) -> Iterator[pa.RecordBatch | DeadLetter]:
    """Rows -> Arrow batches; a row Arrow refuses (none is known) is narrowed down, alone."""
    built = isolate_failures(
        pending,
        lambda part: [pa.Table.from_pylist([r for _, _, r in part], schema=INFERENCE_ARROW_SCHEMA)],
        namespace="whylake_read",
    )
    for (line_no, line, _), exc in built.failures:
        yield _line_dead_letter(path, line_no, line, exc, config)
    for table in built.results:
        yield from table.to_batches()


def _line_dead_letter(
    path: str, line_no: int, line: str, error: BaseException, config: ReadConfig
) -> DeadLetter:
    partial = peek_ids(line)
    return dead_letter(
        run_id=config.run_id,
        stage="read",
        error=error,
        record=line,
        source=f"{path}:{line_no}",
        tenant_id=partial.get("tenant_id"),
        request_id=partial.get("request_id"),
        pii=config.pii,
    )


def peek_ids(line: str) -> dict[str, Any]:
    """The tenant and request id of a line that failed, when it is a JSON object naming them."""
    try:
        value = json.loads(line)
    except (ValueError, RecursionError):
        return {}
    if not isinstance(value, dict):
        return {}
    return {k: value[k] for k in ("tenant_id", "request_id") if isinstance(value.get(k), str)}


def coerce_json_row(line: str) -> dict[str, Any]:
    """Parse one JSON line into a row of the inference schema, or raise saying what is wrong.

    Types only; the contract's limits (id grammar, event-time window, magnitudes) are checked
    on the batch by `ValidateRecords`, the same way for JSON, Parquet and Kafka.
    """
    try:
        raw = json.loads(line)
    except RecursionError:
        raise InvalidRecordError(
            "the record is nested too deeply to be an inference record"
        ) from None
    if not isinstance(raw, dict):
        raise InvalidRecordError(f"a record must be a JSON object, got {type(raw).__name__}")
    missing = [c for c in REQUIRED_COLUMNS if raw.get(c) is None]
    if missing:
        raise InvalidRecordError(f"required fields missing: {missing}")
    row: dict[str, Any] = {}
    for name in _STRING_FIELDS:
        value = raw[name]
        if not isinstance(value, str):
            raise InvalidRecordError(f"{name} must be a string, got {_shown(value)}")
        row[name] = _text(name, value)
    stamp = raw["event_ts"]
    if not isinstance(stamp, str):
        raise InvalidRecordError(
            f"event_ts must be an ISO 8601 string with a zone, got {_shown(stamp)}"
        )
    ts = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    if ts.tzinfo is None:
        raise InvalidRecordError(f"event_ts {_shown(stamp)} has no time zone; log UTC times")
    try:
        row["event_ts"] = ts.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+14:00 is before year 1 in UTC
        raise InvalidRecordError(f"event_ts {_shown(stamp)} is out of range in UTC") from None
    features = raw["features"]
    # A text model's record carries its input in `text`; its features may be empty.
    if not isinstance(features, dict) or not (features or isinstance(raw.get("text"), str)):
        raise InvalidRecordError("features must be a non-empty object of name -> number")
    row["features"] = [
        (_text("a feature name", k), _number(f"features.{k}", v)) for k, v in features.items()
    ]
    row["score"] = _number("score", raw["score"])
    for name in _OPTIONAL_FLOATS:
        value = raw.get(name)
        row[name] = None if value is None else _number(name, value)
    for name in _OPTIONAL_STRINGS:
        row[name] = _optional_text(name, raw.get(name))
    flags = raw.get("flags")
    if flags is not None and (
        not isinstance(flags, list) or not all(isinstance(f, str) for f in flags)
    ):
        raise InvalidRecordError(f"flags must be a list of strings, got {_shown(flags)}")
    row["flags"] = None if flags is None else [_text("a flag", f) for f in flags]
    return row


def _shown(value: Any) -> str:
    """A value for an error message, shortened (a record may hold megabytes)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _text(name: str, value: str) -> str:
    """A string UTF-8 can hold: JSON escapes can make lone surrogates, which Arrow cannot."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRecordError(
            f"{name} holds a lone surrogate (an unpaired \\ud800-\\udfff escape): not text"
        ) from None
    return value


def _optional_text(name: str, value: Any) -> str | None:
    """An optional text field: text or a number (ids often are), nothing else.

    The message never shows the value: it may be a personal one (user_id).
    """
    if value is None:
        return None
    if isinstance(value, str):
        return _text(name, value)
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return str(value)
    raise InvalidRecordError(f"{name} must be a string or a number, got a {type(value).__name__}")


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidRecordError(f"{name} must be a number, got {_shown(value)}")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond float64, e.g. 10**400
        raise InvalidRecordError(f"{name} is too large for a float64: {_shown(value)}") from None
    if not math.isfinite(number):
        raise InvalidRecordError(f"{name} must be finite, got {value!r}")
    return number
