"""A slice's figures from its rows, by hand; slices merged back into a day."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np
import pytest

from whylake.monitor.sli import (
    ModelSlice,
    SliceKey,
    bucket_quantile,
    latency_buckets,
    latest_per_slice,
    merge_rows,
    slice_figures,
    within,
)
from whylake.schemas.arrow import strict_table
from whylake.schemas.metrics import LATENCY_BOUNDS_S, METRICS_ARROW_SCHEMA

DAY = date(2026, 11, 21)
EVENT = datetime(2026, 11, 21, 12, tzinfo=UTC)


def _row(i: int, *, always: bool = False, p: float = 0.5, matches: bool | None = True) -> dict:
    return {
        "request_id": f"r{i}",
        "event_ts": EVENT,
        "attributions": [{"feature": "a", "value": float(i)}, {"feature": "b", "value": -1.0}],
        "inclusion_probability": 1.0 if always else p,
        "sampling_reason": "always:flagged" if always else "priority",
        "completeness_error": 0.001 * i,
        "shap_additivity_error": None,
        "stability": 1.0 - 0.1 * i,
        "score_drift": 0.01 if i == 3 else 0.0,
        "explain_seconds": 0.002,
        "input_hash_mismatch": None if matches is None else not matches,
        "device": "cpu",
    }


def test_a_slice_row_by_hand() -> None:
    data = ModelSlice(records=10, sampled=5, sampled_always=1, failed=1)
    data.add_explained(_row(1, always=True), committed_at_ms=int((EVENT.timestamp() + 60) * 1000))
    for i in (2, 3):
        data.add_explained(_row(i), committed_at_ms=int((EVENT.timestamp() + 3600) * 1000))
    data.add_explained(_row(4, matches=False), committed_at_ms=None)  # an earlier run's
    key = SliceKey("acme", "m", "1", DAY)
    row = slice_figures(key, data, stratum={"records": 10, "always_explain": 1, "sampled": 5,
                                            "sampling_policy": "v/priority"},
                        run_id="run-1", computed_at=EVENT, score_tolerance=0.005)  # fmt: skip
    assert (row["explained"], row["explained_always"], row["committed"]) == (4, 1, 3)
    assert row["coverage"] == 0.4 and row["error_rate"] == 0.2
    assert row["coverage_always"] == 1.0 and row["coverage_sampled"] == pytest.approx(3 / 9)
    assert row["latency_rows"] == 3 and row["latency_max_s"] == pytest.approx(3600, abs=1e-3)
    assert row["latency_p50_s"] == pytest.approx(3600, abs=1e-3)
    assert row["score_mismatches"] == 1 and row["input_hash_mismatches"] == 1
    assert row["cost_per_explanation_s"] == pytest.approx(0.002)
    # HT importance over the 10 records: (1*1 + 2*2 + 3*2 + 4*2) / 10 for feature a.
    assert row["importance"][0]["value"] == pytest.approx(1.9)
    # It is a valid row of the table.
    strict_table([row], METRICS_ARROW_SCHEMA)


def test_histograms_and_their_quantiles() -> None:
    buckets = latency_buckets([0.5, 4.0, 4.5, 700.0, 1e7])
    assert sum(buckets) == 5 and buckets[0] == 1 and buckets[1] == 2 and buckets[-1] == 1
    assert within(buckets, 5.0) == 3
    rng = np.random.default_rng(0)
    values = rng.uniform(1000, 3000, 10_000)
    assert bucket_quantile(latency_buckets(values), 0.5) == pytest.approx(2000, rel=0.15)
    assert bucket_quantile([0] * (len(LATENCY_BOUNDS_S) + 1), 0.5) is None


def test_a_rerun_replaces_a_slice_and_panes_add_up() -> None:
    def stored(pane: int, computed: int, records: int, latencies: list[float]) -> dict:
        data = ModelSlice(records=records, sampled=records)
        row = slice_figures(
            SliceKey("acme", "m", "1", DAY, (EVENT, EVENT + timedelta(seconds=5)), pane),
            data, stratum=None, run_id=f"run-{computed}",
            computed_at=EVENT + timedelta(seconds=computed), score_tolerance=0.0,
        )  # fmt: skip
        row["latency_buckets"] = latency_buckets(latencies)
        row["latency_rows"] = len(latencies)
        return row

    # A pure replay (run 3) commits nothing: the latency of run 2, which committed, stays.
    replay = stored(0, 3, 12, [])
    rows = [stored(0, 1, 10, [2.0] * 10), stored(0, 2, 12, [3.0] * 12), stored(1, 1, 3, [40.0]),
            replay]  # fmt: skip
    latest = latest_per_slice(rows)
    assert sorted(r["records"] for r in latest) == [3, 12]
    [pane0] = [r for r in latest if r["pane_index"] == 0]
    assert pane0["run_id"] == "run-3" and pane0["latency_rows"] == 12
    day = merge_rows(latest)
    assert day.counts["records"] == 15 and day.slices == 2
    assert day.latency_p99_s is not None and 30 < day.latency_p99_s <= 60


def test_rows_without_every_figure_are_measured() -> None:
    """TreeSHAP and Shapley rows carry no stability; SHAP figures are optional."""
    data = ModelSlice(records=2, sampled=2)
    row = {**_row(1), "stability": None, "completeness_error": None, "explain_seconds": None}
    data.add_explained(row, committed_at_ms=None)
    figures = slice_figures(SliceKey("acme", "m", "1", DAY), data, stratum=None, run_id="r",
                            computed_at=EVENT, score_tolerance=0.0)  # fmt: skip
    assert figures["explained"] == 1 and figures["stability_p05"] is None
    strict_table([figures], METRICS_ARROW_SCHEMA)
