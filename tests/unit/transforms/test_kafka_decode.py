"""The batched Kafka decoder accepts and refuses exactly what the per-record reference does."""

from __future__ import annotations

import json
import random
from typing import Any

import pyarrow as pa

from whylake.schemas.errors import InvalidRecordError
from whylake.schemas.inference import INFERENCE_ARROW_SCHEMA
from whylake.transforms.kafka.decode import decode_messages
from whylake.transforms.read import coerce_json_row

BASE: dict[str, Any] = {
    "tenant_id": "acme",
    "request_id": "r-0",
    "event_ts": "2026-11-21T12:00:01.250000+00:00",
    "model_id": "tumor-triage",
    "model_version": "1",
    "features": {"a": 1.5, "b": -2, "c": 0.0},
    "score": 0.75,
    "confidence": 0.9,
    "flags": ["flagged"],
    "risk_score": 0.1,
    "user_id": "u-1",
    "label": "1",
}

# Each damage yields a value for a field (or drops it); None means "drop the field".
DAMAGES: list[tuple[str, Any]] = [
    ("tenant_id", None),
    ("tenant_id", 5),
    ("request_id", ""),
    ("event_ts", "2026-11-21T12:00:01"),  # no zone
    ("event_ts", "2026-11-21T12:00:01Z"),
    ("event_ts", "2026-11-21 12:00:01+02:00"),
    ("event_ts", "yesterday"),
    ("event_ts", 1732190401),
    ("features", {}),
    ("features", []),
    ("features", {"a": "x"}),
    ("features", {"a": True}),
    ("features", {"a": 1e400}),
    ("features", {"a": 10**30}),
    ("score", None),
    ("score", "0.5"),
    ("score", False),
    ("confidence", None),
    ("confidence", "high"),
    ("flags", "flagged"),
    ("flags", [1, 2]),
    ("flags", None),
    ("label", 1),  # the reference coerces optional strings with str()
    ("trust_tier", {"nested": 1}),
    ("user_id", None),
    ("model_version", 1),
    ("extra_field", [1, 2, 3]),
    ("request_id", "ü-ñicode-✓"),
    ("text", "a text model's input"),
    ("text", 7),
    ("features", {}),  # with a text above: accepted (a text model); alone: refused
]


def _messages(n: int, seed: int) -> list[bytes | None]:
    rng = random.Random(seed)
    out: list[bytes | None] = []
    for i in range(n):
        record = json.loads(json.dumps(BASE))
        record["request_id"] = f"r-{i}"
        kind = rng.random()
        if kind < 0.4:
            for _ in range(rng.randint(1, 3)):
                field, value = rng.choice(DAMAGES)
                if value is None:
                    record.pop(field, None)
                else:
                    record[field] = value
        text = json.dumps(record)
        if kind > 0.97:
            text = text[: rng.randint(0, len(text) - 1)]  # truncated: not JSON
        elif kind > 0.95:
            text = text.replace("0.75", "NaN")  # json.loads reads it; not finite
        elif kind > 0.94:
            out.append(None)
            continue
        elif kind > 0.93:
            out.append(b"\xff\xfe" + text.encode())  # not UTF-8
            continue
        out.append(text.encode())
    return out


def _reference(values: list[bytes | None], sources: list[str]) -> tuple[pa.RecordBatch, set[int]]:
    rows, refused = [], set()
    for i, value in enumerate(values):
        try:
            if value is None:
                raise InvalidRecordError("no value")
            row = coerce_json_row(value.decode("utf-8"))
        except (ValueError, TypeError, KeyError, InvalidRecordError):
            refused.add(i)
            continue
        row["source_id"] = row["source_id"] or sources[i]
        rows.append(row)
    return pa.RecordBatch.from_pylist(rows, schema=INFERENCE_ARROW_SCHEMA), refused


def test_decoder_agrees_with_the_reference_on_thousands_of_damaged_messages() -> None:
    values = _messages(4000, seed=7)
    sources = [f"kafka://t/0@{i}" for i in range(len(values))]
    decoded = decode_messages(values, sources)
    expected, refused = _reference(values, sources)
    assert {r.index for r in decoded.refused} == refused
    assert 0 < len(refused) < len(values)  # the damage really refused some, not all
    assert decoded.indices == [i for i in range(len(values)) if i not in refused]
    assert decoded.batch.schema.equals(INFERENCE_ARROW_SCHEMA)
    assert decoded.batch.to_pylist() == expected.to_pylist()


def test_a_refused_message_keeps_its_text_and_reason() -> None:
    decoded = decode_messages([b'{"tenant_id": "acme"}', None], ["s0", "s1"])
    assert decoded.batch.num_rows == 0
    first, second = decoded.refused
    assert first.text == '{"tenant_id": "acme"}' and "required fields missing" in str(first.error)
    assert second.index == 1 and "no value" in str(second.error)


def test_an_empty_batch_decodes_to_an_empty_record_batch() -> None:
    decoded = decode_messages([], [])
    assert decoded.batch.num_rows == 0 and decoded.batch.schema.equals(INFERENCE_ARROW_SCHEMA)
