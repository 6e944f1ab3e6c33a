"""The contract's limits: each one refuses what it must, names why, and passes what it may."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest

from whylake.schemas.errors import ConfigError
from whylake.schemas.inference import INFERENCE_ARROW_SCHEMA
from whylake.schemas.limits import FLOAT32_MAX, RecordLimits, limit_violations

NOW = datetime(2026, 11, 22, tzinfo=UTC)
LIMITS = RecordLimits(reference_time=NOW)


def _row(**changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "tenant_id": "acme",
        "request_id": "r-1",
        "event_ts": NOW - timedelta(hours=3),
        "model_id": "m",
        "model_version": "1",
        "features": [("a", 1.0), ("b", 2.0)],
        "score": 0.5,
        "user_id": "user-1",
        "flags": ["flagged"],
    }
    row.update(changes)
    return row


def _violations(*rows: dict[str, Any], limits: RecordLimits = LIMITS) -> dict[int, list[str]]:
    batch = pa.RecordBatch.from_pylist(list(rows), schema=INFERENCE_ARROW_SCHEMA)
    return limit_violations(batch, limits)


def test_a_good_record_breaks_nothing() -> None:
    assert _violations(_row(), _row(request_id="東京 #2 🎉")) == {}


@pytest.mark.parametrize(
    "changes, reason",
    [
        ({"tenant_id": "a" * 5000}, "tenant id"),
        ({"tenant_id": "../globex"}, "tenant id"),
        ({"model_id": "../globex/progression"}, "model id"),
        ({"model_version": "1/../../x"}, "model version"),
        ({"request_id": "r" * 257}, "request id"),
        ({"request_id": "line\nbreak"}, "request id"),
        ({"event_ts": datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)}, "in the future"),
        ({"event_ts": NOW + timedelta(days=2)}, "in the future"),
        ({"event_ts": datetime(1970, 1, 1, tzinfo=UTC)}, "days before"),
        ({"event_ts": datetime(1, 1, 1, tzinfo=UTC)}, "days before"),
        ({"features": [("a", 1e308), ("b", 2.0)]}, "float32"),  # finite, but inf in float32
        ({"features": [("a", -3.5e38), ("b", 2.0)]}, "float32"),
        ({"features": [("a", float("nan")), ("b", 2.0)]}, "finite"),
        ({"features": [("a", float("-inf")), ("b", 2.0)]}, "finite"),
        ({"features": []}, "at least one"),
        ({"features": [("a", 1.0), ("a", 2.0)]}, "twice"),
        ({"features": [("x" * 300, 1.0)]}, "feature name"),
        ({"user_id": "u" * 5000}, "user_id has 5000 characters"),
        ({"source_id": "s" * 1025}, "source_id"),
        ({"score": float("nan")}, "score must be a finite"),
        ({"confidence": float("inf")}, "confidence must be a finite"),
        ({"flags": ["f"] * 65}, "max_flags"),
        ({"flags": ["f" * 300]}, "flag is longer"),
    ],
)
def test_each_limit_refuses_with_a_reason(changes: dict[str, Any], reason: str) -> None:
    found = _violations(_row(), _row(**{"request_id": "r-bad", **changes}), _row(request_id="r-3"))
    assert list(found) == [1], found  # the bad row alone, not its neighbours
    assert any(reason in why for why in found[1]), found[1]


def test_the_largest_float32_is_accepted() -> None:
    assert _violations(_row(features=[("a", 3.0e38), ("b", -FLOAT32_MAX)])) == {}


def test_a_time_beyond_what_python_can_represent_is_refused_not_a_crash() -> None:
    # Parquet holds int64 microseconds: year 20000 and year -1199 fit, a datetime does not.
    ts = pa.array([10**18 // 2, -(10**17), 0], pa.timestamp("us", tz="UTC"))
    rows = [_row(request_id=f"r-{i}") for i in range(3)]
    table = pa.Table.from_pylist(rows, schema=INFERENCE_ARROW_SCHEMA)
    table = table.set_column(2, "event_ts", ts)
    found = limit_violations(table.to_batches()[0], LIMITS)
    assert sorted(found) == [0, 1, 2]  # 1970 is far past too
    assert "future" in found[0][0] and "before" in found[1][0]


def test_rows_keep_their_index_in_a_sliced_batch() -> None:
    rows = [_row(request_id=f"r-{i}") for i in range(6)]
    rows[4] = _row(request_id="r-4", features=[("a", 1e308), ("b", 1.0)], flags=["f"] * 70)
    batch = pa.RecordBatch.from_pylist(rows, schema=INFERENCE_ARROW_SCHEMA).slice(2, 4)
    found = limit_violations(batch, LIMITS)
    assert list(found) == [2] and len(found[2]) == 2


def test_the_window_follows_the_clock_unless_pinned() -> None:
    old = _row(event_ts=datetime(2020, 1, 1, tzinfo=UTC))
    assert _violations(old, limits=RecordLimits()) == {}  # within 10 years of today
    strict = RecordLimits(reference_time=NOW, max_event_age_days=30)
    assert list(_violations(old, limits=strict)) == [0]


def test_limits_check_themselves() -> None:
    with pytest.raises(ConfigError):
        RecordLimits(max_feature_magnitude=1e39)
    with pytest.raises(ConfigError):
        RecordLimits(reference_time=datetime(2026, 1, 1))
    with pytest.raises(ConfigError):
        RecordLimits(max_event_age_days=0)
