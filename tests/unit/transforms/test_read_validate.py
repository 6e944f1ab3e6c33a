"""Reading and validating inference records: every bad row becomes a dead letter with a reason."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from apache_beam.testing.util import assert_that, equal_to

from tests.unit.cards import two_feature_card
from tests.unit.keys import TEST_PII
from whylake.registry.store import ModelRegistry
from whylake.schemas.errors import InputNotFoundError, InvalidRecordError
from whylake.schemas.inference import INFERENCE_ARROW_SCHEMA
from whylake.schemas.limits import RecordLimits
from whylake.transforms.read import ReadConfig, ReadInferenceRecords, coerce_json_row
from whylake.transforms.validate import ValidateConfig, ValidateRecords

GOOD = {
    "tenant_id": "acme",
    "request_id": "r1",
    "event_ts": "2026-11-21T10:00:00Z",
    "model_id": "m",
    "model_version": "1",
    "features": {"a": 1.0, "b": 2.0},
    "score": 0.7,
    "confidence": 0.7,
    "trust_tier": "gold",
    "flags": ["flagged"],
}


# The window the test records fall in, pinned: the test must not depend on today's date.
LIMITS = RecordLimits(reference_time=datetime(2026, 11, 22, tzinfo=UTC))


def _line(**changes: object) -> str:
    row = {**GOOD, **changes}
    return json.dumps({k: v for k, v in row.items() if v is not None})


def _registry(tmp_path) -> ModelRegistry:
    reg = ModelRegistry(tmp_path / "models")
    card = two_feature_card()
    reg.register(card, torch.jit.script(torch.nn.Linear(2, 1)), np.zeros((2, 2)), np.zeros(2))
    return reg


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", "Expecting"),
        (_line(request_id=None), "required fields missing: \\['request_id'\\]"),
        (_line(score="high"), "score must be a number, got 'high'"),
        (_line(features={"a": float("nan")}), "features.a must be finite"),
        (_line(event_ts="2026-11-21T10:00:00"), "no time zone"),
        (_line(flags="flagged"), "flags must be a list of strings"),
        ("[1, 2]", "must be a JSON object"),
    ],
)
def test_a_bad_json_line_says_what_is_wrong(line: str, message: str) -> None:
    with pytest.raises((InvalidRecordError, ValueError), match=message):
        coerce_json_row(line)


def test_a_good_line_takes_the_schema() -> None:
    row = coerce_json_row(_line())
    table = pa.Table.from_pylist([row], schema=INFERENCE_ARROW_SCHEMA)
    assert table["event_ts"][0].as_py() == datetime(2026, 11, 21, 10, tzinfo=UTC)
    assert dict(table["features"][0].as_py()) == {"a": 1.0, "b": 2.0}


def test_an_empty_glob_is_an_error_not_an_empty_day(tmp_path) -> None:
    with pytest.raises(InputNotFoundError, match="matched no file"):
        ReadConfig((str(tmp_path / "*.jsonl"),), run_id="r", pii=TEST_PII).files()


def _run(tmp_path, lines: list[str], parquet_rows: list[dict] | None = None):
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    patterns = [str(tmp_path / "in.jsonl")]
    if parquet_rows is not None:
        loose = pa.schema([f.with_nullable(True) for f in INFERENCE_ARROW_SCHEMA])
        pq.write_table(pa.Table.from_pylist(parquet_rows, schema=loose), tmp_path / "in.parquet")
        patterns.append(str(tmp_path / "in.parquet"))
    reg = _registry(tmp_path)
    with beam.Pipeline(runner="FnApiRunner") as p:
        read = p | ReadInferenceRecords(ReadConfig(tuple(patterns), run_id="run-1", pii=TEST_PII))
        checked = read.records | ValidateRecords(
            ValidateConfig(str(reg.root), "run-1", pii=TEST_PII, limits=LIMITS)
        )
        valid_ids = checked.valid | beam.FlatMap(lambda b: b["request_id"].to_pylist())
        dead = (
            (read.dead_letters, checked.dead_letters)
            | beam.Flatten()
            | beam.Map(lambda d: (d.stage, d.request_id, d.run_id))
        )
        assert_that(valid_ids, equal_to(EXPECTED_VALID), label="valid")
        assert_that(dead, equal_to(EXPECTED_DEAD), label="dead")


EXPECTED_VALID = ["r1", "p1"]
EXPECTED_DEAD = [
    ("read", None, "run-1"),  # broken JSON: no request id to name
    ("read", "r2", "run-1"),  # score is text
    ("validate", "r3", "run-1"),  # confidence 1.7 breaks the suite
    ("validate", "r4", "run-1"),  # a feature the model needs is missing
    ("validate", "r5", "run-1"),  # model version not registered
    ("validate", "r6", "run-1"),  # tenant id breaks the pattern
    ("read", "p2", "run-1"),  # parquet row without a score
]


def test_every_row_is_either_valid_or_a_dead_letter(tmp_path) -> None:
    lines = [
        _line(),
        "{broken",
        _line(request_id="r2", score="high"),
        _line(request_id="r3", confidence=1.7),
        _line(request_id="r4", features={"a": 1.0}),
        _line(request_id="r5", model_version="9"),
        _line(request_id="r6", tenant_id="Acme Corp"),
    ]
    base = {
        **GOOD,
        "event_ts": datetime(2026, 11, 21, tzinfo=UTC),
        "features": [("a", 1.0), ("b", 2.0)],
        "flags": None,
    }
    parquet = [{**base, "request_id": "p1"}, {**base, "request_id": "p2", "score": None}]
    _run(tmp_path, lines, parquet)
