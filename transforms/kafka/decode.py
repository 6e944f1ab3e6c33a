"""Decode a batch of JSON messages into one Arrow RecordBatch of inference records.

Fast path: msgspec decodes each message straight into a typed struct (in C: types, required
fields, an RFC 3339 time with a zone), and the columns are built once per batch. Measured on
this machine with the demo's records (bench/streaming.py's profile, 20,000 events, load ~8):
8 us per message against 31 us for `json.loads` + `coerce_json_row` +
`RecordBatch.from_pylist`; pyarrow's JSON reader took 19 us (measured apart), since the
feature maps differ per model and it infers a struct over their union.

Anything the fast path refuses or cannot vouch for (a type msgspec rejects, an empty feature
map, a non-finite number, a time msgspec does not read) is decoded again by the reference
path, `transforms.read.coerce_json_row`, which either accepts it (it coerces a little more:
`"label": 1` becomes "1") or raises the error that goes into the dead letter. So a message
is accepted or refused exactly as the file reader would; `tests/unit/transforms/
test_kafka_decode.py` checks both paths agree on thousands of damaged messages.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, NamedTuple

import msgspec
import numpy as np
import pyarrow as pa

from whylake.schemas.errors import InvalidRecordError
from whylake.schemas.inference import INFERENCE_ARROW_SCHEMA
from whylake.transforms.read import coerce_json_row


def _event_struct() -> Any:
    """The inference record as the fast path accepts it, derived from the Arrow schema: the
    required fields typed, every optional string or double column `T | None` (unknown fields
    are ignored). A column of another type has to be added here, or importing fails."""
    required: list[tuple[str, Any]] = [
        ("tenant_id", str),
        ("request_id", str),
        ("event_ts", Annotated[datetime, msgspec.Meta(tz=True)]),
        ("model_id", str),
        ("model_version", str),
        ("features", dict[str, float]),
        ("score", float),
    ]
    optional: list[tuple[str, Any, None]] = [("flags", list[str] | None, None)]
    named = {n for n, _ in required} | {"flags"}
    for f in INFERENCE_ARROW_SCHEMA:
        if f.name in named:
            continue
        if pa.types.is_large_string(f.type) or pa.types.is_string(f.type):
            optional.append((f.name, str | None, None))
        elif pa.types.is_floating(f.type):
            optional.append((f.name, float | None, None))
        else:
            raise TypeError(f"decode.py has no fast path for column {f.name} ({f.type})")
    return msgspec.defstruct("_Event", [*required, *optional])


_Event: Any = _event_struct()
_DECODER = msgspec.json.Decoder(_Event)
_STRINGS = tuple(
    f.name
    for f in INFERENCE_ARROW_SCHEMA
    if pa.types.is_large_string(f.type) or pa.types.is_string(f.type)
)
_FLOATS = tuple(f.name for f in INFERENCE_ARROW_SCHEMA if pa.types.is_floating(f.type))


class Refused(NamedTuple):
    """A message that is not an inference record: its position, the error and its text."""

    index: int
    error: BaseException
    text: str


class Decoded(NamedTuple):
    """The accepted records (in message order) and where each came from; the refused ones."""

    batch: pa.RecordBatch
    indices: list[int]  # message position of each row of `batch`
    refused: list[Refused]


def decode_messages(values: Sequence[bytes | None], sources: Sequence[str]) -> Decoded:
    """Decode messages; `sources[i]` fills a record's `source_id` when the message has none."""
    events: list[Any] = []
    indices: list[int] = []
    refused: list[Refused] = []
    for i, value in enumerate(values):
        event = _fast(value)
        if event is None:
            try:
                event = _slow(value)
            except (ValueError, TypeError, KeyError, InvalidRecordError) as exc:
                refused.append(Refused(i, exc, (value or b"").decode("utf-8", errors="replace")))
                continue
        if event.source_id is None:
            event.source_id = sources[i]
        events.append(event)
        indices.append(i)
    return Decoded(_to_batch(events), indices, refused)


def _fast(value: bytes | None) -> Any:
    if value is None:
        return None
    try:
        event = _DECODER.decode(value)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    numbers = [*event.features.values()]
    numbers.extend(v for name in _FLOATS if (v := getattr(event, name)) is not None)
    # msgspec reads 1e400 as inf; the reference path refuses non-finite numbers with a reason.
    # A text model's record may have no features: the reference path decides those.
    if not event.features or not all(map(math.isfinite, numbers)):
        return None
    return event


def _slow(value: bytes | None) -> Any:
    """The reference path: accepts exactly what the file reader accepts, or raises why not."""
    if value is None:
        raise InvalidRecordError("the Kafka message has no value")
    row = coerce_json_row(value.decode("utf-8"))
    row["features"] = dict(row["features"])
    return _Event(**{k: row.get(k) for k in _Event.__struct_fields__})


def _to_batch(events: list[Any]) -> pa.RecordBatch:
    """Columns built once per batch: one list per field, the feature maps from flat arrays."""
    columns: dict[str, pa.Array] = {}
    schema = INFERENCE_ARROW_SCHEMA
    for name in _STRINGS:
        columns[name] = pa.array([getattr(e, name) for e in events], schema.field(name).type)
    for name in _FLOATS:
        columns[name] = pa.array([getattr(e, name) for e in events], pa.float64())
    columns["event_ts"] = pa.array([e.event_ts for e in events], schema.field("event_ts").type)
    keys: list[str] = []
    items: list[float] = []
    offsets = np.zeros(len(events) + 1, dtype=np.int32)
    for i, e in enumerate(events):
        keys.extend(e.features)
        items.extend(e.features.values())
        offsets[i + 1] = len(keys)
    features_type = schema.field("features").type
    columns["features"] = pa.MapArray.from_arrays(
        pa.array(offsets),
        pa.array(keys, features_type.key_type),
        pa.array(items, features_type.item_type),
        type=features_type,
    )
    columns["flags"] = pa.array([e.flags for e in events], schema.field("flags").type)
    return pa.RecordBatch.from_arrays([columns[f.name] for f in schema], schema=schema)
