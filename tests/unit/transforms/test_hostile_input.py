"""Hostile input through the real read and validate stages: every bad record alone, no crash."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import window

from tests.unit.cards import two_feature_card
from tests.unit.keys import TEST_PII
from whylake.registry.store import ModelRegistry
from whylake.schemas.inference import INFERENCE_ARROW_SCHEMA
from whylake.schemas.limits import RecordLimits
from whylake.transforms.kafka import KafkaBatch, KafkaReadConfig, ParseConfig, ParseKafkaRecords
from whylake.transforms.read import ReadConfig, ReadInferenceRecords
from whylake.transforms.validate import ValidateConfig, ValidateRecords

LIMITS = RecordLimits(reference_time=datetime(2026, 11, 22, tzinfo=UTC))
GOOD: dict[str, Any] = {
    "tenant_id": "acme",
    "event_ts": "2026-11-21T10:00:00Z",
    "model_id": "m",
    "model_version": "1",
    "features": {"a": 1.0, "b": 2.0},
    "score": 0.7,
    "user_id": "user-900001",
}


def _json(request_id: str, **changes: Any) -> bytes:
    return json.dumps({**GOOD, "request_id": request_id, **changes}).encode()


# (request id the dead letter names or None, line, the reason it must give).
JSONL_BAD: list[tuple[str | None, bytes, str]] = [
    (None, b'{"request_id": "bad-utf8", "user_id": "user-900002", \xff\xfe}', "utf-8"),
    ("bad-surrogate", _json("bad-surrogate", label="\ud800"), "lone surrogate"),
    ("bad-key", _json("bad-key", features={"a\udc00": 1.0, "b": 2.0}), "lone surrogate"),
    ("bad-huge-int", _json("bad-huge-int", features={"a": 10**400, "b": 1.0}), "too large"),
    (None, b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (None, b"[" + _json("bad-in-a-list") + b"]", "must be a JSON object"),
    (None, b'"just a string"', "must be a JSON object"),
    (None, b"not json at all user_id=user-900003", "Expecting value"),
    ("bad-future", _json("bad-future", event_ts="9999-12-31T23:59:59Z"), "in the future"),
    ("bad-past", _json("bad-past", event_ts="0001-01-01T00:00:00+14:00"), "out of range"),
    ("bad-no-zone", _json("bad-no-zone", event_ts="2026-11-21T10:00:00"), "no time zone"),
    ("bad-epoch", _json("bad-epoch", event_ts=1764000000), "ISO 8601 string"),
    ("bad-1e308", _json("bad-1e308", features={"a": 1e308, "b": 1.0}), "float32"),
    ("bad-tenant", _json("bad-tenant", tenant_id="a" * 5000), "tenant id"),
    ("bad-path", _json("bad-path", model_id="../globex/m"), "model id"),
    ("bad-user", _json("bad-user", user_id={"id": "user-900004"}), "user_id must be a string"),
    ("bad-label", _json("bad-label", label="x" * 5000), "label has 5000"),
    (None, _json("x" * 300), "request id"),
]
JSONL_GOOD = [_json("good-1"), _json("good-unicode-東京"), _json("good-numeric-user", user_id=42)]
PARQUET_BAD = ("bad-p-null-score", "bad-p-nan", "bad-p-dup", "bad-p-year-17814", "bad-p-text")
LOOSE = pa.schema([f.with_nullable(True) for f in INFERENCE_ARROW_SCHEMA])


def _parquet_row(request_id: str, **changes: Any) -> dict[str, Any]:
    row = {**GOOD, "event_ts": datetime(2026, 11, 21, 10, tzinfo=UTC)}
    return {**row, "features": [("a", 1.0), ("b", 2.0)], "request_id": request_id, **changes}


def _write_inputs(tmp_path: Path) -> list[str]:
    (tmp_path / "in.jsonl").write_bytes(b"\n".join([*JSONL_GOOD, *(b for _, b, _ in JSONL_BAD)]))
    rows = [
        _parquet_row("good-p1"),
        _parquet_row("good-p2"),
        _parquet_row("bad-p-null-score", score=None),
        _parquet_row("bad-p-nan", features=[("a", float("nan")), ("b", 1.0)]),
        _parquet_row("bad-p-dup", features=[("a", 1.0), ("a", 2.0)]),
        _parquet_row("bad-p-year-17814"),
    ]
    table = pa.Table.from_pylist(rows, schema=LOOSE)
    # Year 17814 fits Parquet's int64 microseconds but not a Python datetime.
    ticks = pc.cast(table["event_ts"], pa.int64()).to_pylist()
    ticks[-1] = 10**18 // 2
    at = table.schema.get_field_index("event_ts")
    table = table.set_column(at, "event_ts", pa.array(ticks, pa.timestamp("us", tz="UTC")))
    pq.write_table(table, tmp_path / "values.parquet")
    # A score column of text: the row whose text is not a number is the bad one.
    mistyped = pa.Table.from_pylist([_parquet_row("good-p3"), _parquet_row("bad-p-text")], LOOSE)
    at = mistyped.schema.get_field_index("score")
    mistyped = mistyped.set_column(at, "score", pa.array(["0.25", "high"]))
    pq.write_table(mistyped, tmp_path / "mistyped.parquet")
    no_score = pa.Table.from_pylist([_parquet_row("np-1"), _parquet_row("np-2")], LOOSE)
    pq.write_table(no_score.drop_columns(["score"]), tmp_path / "no-score.parquet")
    (tmp_path / "not-parquet.parquet").write_bytes(b"PAR1 this is not parquet, user-900005")
    return [str(tmp_path / "*.jsonl"), str(tmp_path / "*.parquet")]


def test_every_hostile_record_is_a_dead_letter_alone_and_the_job_goes_on(tmp_path: Path) -> None:
    patterns = _write_inputs(tmp_path)
    reg = ModelRegistry(tmp_path / "models")
    reg.register(
        two_feature_card(), torch.jit.script(torch.nn.Linear(2, 1)), np.zeros((2, 2)), np.zeros(2)
    )

    def check_valid(ids: list[str]) -> None:
        assert sorted(ids) == sorted(
            ["good-1", "good-unicode-東京", "good-numeric-user", "good-p1", "good-p2", "good-p3"]
        ), ids

    def check_dead(letters: list[tuple[str, str | None, str, str]]) -> None:
        assert "user-9" not in json.dumps(letters), "a raw user id reached a dead letter"
        reasons = {request: why for _, request, why, _ in letters if request}
        every = " | ".join(why for _, _, why, _ in letters)
        for request, _, reason in JSONL_BAD:
            assert reason in (reasons[request] if request else every), (request, reason)
        for request in PARQUET_BAD:
            assert request in reasons, request
        assert "invalid literal" in reasons["bad-p-text"] or "high" in reasons["bad-p-text"]
        assert reasons["np-1"] == reasons["np-2"]  # a file without the score: each row says so
        assert "required columns ['score'] are missing" in reasons["np-1"]
        assert sum("cannot be read as Parquet" in why for _, _, why, _ in letters) == 1
        # Each bad record alone: one dead letter per bad line, per bad row, per unreadable file.
        assert len(letters) == len(JSONL_BAD) + len(PARQUET_BAD) + 2 + 1, letters

    with beam.Pipeline(runner="FnApiRunner") as p:
        read = p | ReadInferenceRecords(ReadConfig(tuple(patterns), run_id="run-1", pii=TEST_PII))
        checked = read.records | ValidateRecords(
            ValidateConfig(str(reg.root), "run-1", pii=TEST_PII, limits=LIMITS)
        )
        valid = checked.valid | beam.FlatMap(lambda b: b["request_id"].to_pylist())
        dead = (
            (read.dead_letters, checked.dead_letters)
            | beam.Flatten()
            | beam.Map(lambda d: (d.stage, d.request_id, d.error_message, d.record))
        )
        assert_that(valid, check_valid, label="valid")
        assert_that(dead, check_dead, label="dead")


def test_malformed_kafka_events_are_dead_letters_without_raw_user_ids() -> None:
    t0 = datetime(2026, 11, 21, 12, tzinfo=UTC).timestamp()
    values = (
        _json("k-good"),
        _json("k-bad-score", score="high"),
        _json("k-cut")[:-30],
        b'{"user_id": "user-900010", \xff}',
        b"[" + _json("k-list") + b"]",
        None,
    )
    n = len(values)
    records = [KafkaBatch("t", 0, tuple(range(n)), tuple(range(n)), (int(t0 * 1000),) * n, values)]
    config = ParseConfig(
        "run-1", KafkaReadConfig(topic="t"), skip_finished_windows=False, pii=TEST_PII
    )

    def check(letters: list[tuple[str, str]]) -> None:
        assert len(letters) == len(values) - 1, letters
        assert "user-9" not in json.dumps(letters)
        assert sum("user_id_hash" in record for _, record in letters) == 4

    with beam.Pipeline(runner="FnApiRunner") as p:
        parsed = (
            p
            | beam.Create(records)
            | beam.Map(lambda b: window.TimestampedValue(b, b.timestamps_ms[0] / 1000))
            | beam.WindowInto(window.FixedWindows(5))
            | ParseKafkaRecords(config)
        )
        ids = parsed.records | "Ids" >> beam.FlatMap(lambda b: b["request_id"].to_pylist())
        assert_that(ids, equal_to(["k-good"]), label="valid")
        dead = parsed.dead_letters | beam.Map(lambda d: (d.error_message, d.record))
        assert_that(dead, check, label="dead")
