"""Service-level indicators of explanation: a slice's figures from its rows; slices merged.

A slice is one tenant x model version x UTC day (the batch job) or window pane (the streaming
job). `slice_figures` turns what the pipeline saw of a slice (traffic, the sampler's counts,
the committed rows, the failures) into one `whylake.metrics` row; `merge_rows` adds stored rows
of one day back up (counts sum; percentiles of several panes come from the merged latency
histogram, which is what a histogram with fixed bounds is for).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from whylake.monitor.importance import global_importance
from whylake.schemas.metrics import LATENCY_BOUNDS_S

Array = npt.NDArray[np.float64]
ALWAYS_PREFIX = "always:"


@dataclass
class ModelSlice:
    """What the pipeline collected of one model version's slice (mergeable: `add`)."""

    records: int = 0
    sampled: int = 0
    sampled_always: int = 0
    failed: int = 0
    # One entry per explained row (committed now or already present).
    features: tuple[str, ...] = ()
    latency_s: list[float] = field(default_factory=list)  # rows this run committed
    explained_always: int = 0
    committed: int = 0
    completeness: list[float] = field(default_factory=list)
    shap_additivity: list[float] = field(default_factory=list)
    stability: list[float] = field(default_factory=list)
    score_drift: list[float] = field(default_factory=list)
    explain_seconds: list[float] = field(default_factory=list)
    hash_checked: int = 0
    hash_mismatches: int = 0
    devices: set[str] = field(default_factory=set)
    inclusion_probability: list[float] = field(default_factory=list)
    abs_attributions: list[list[float]] = field(default_factory=list)

    def add(self, other: ModelSlice) -> ModelSlice:
        if other is self:
            raise ValueError("a slice cannot be merged into itself (it would count twice)")
        self.records += other.records
        self.sampled += other.sampled
        self.sampled_always += other.sampled_always
        self.failed += other.failed
        self.explained_always += other.explained_always
        self.committed += other.committed
        self.hash_checked += other.hash_checked
        self.hash_mismatches += other.hash_mismatches
        if other.features:
            if self.features and self.features != other.features:
                raise ValueError(
                    f"one model version explained with two feature lists: {self.features} and "
                    f"{other.features}"
                )
            self.features = other.features
        for name in (
            "latency_s",
            "completeness",
            "shap_additivity",
            "stability",
            "score_drift",
            "explain_seconds",
            "inclusion_probability",
            "abs_attributions",
        ):
            getattr(self, name).extend(getattr(other, name))
        self.devices |= other.devices
        return self

    def add_explained(self, row: Mapping[str, Any], committed_at_ms: int | None) -> None:
        """Count one explanation row the pipeline committed (or found already committed)."""
        names = tuple(a["feature"] for a in row["attributions"])
        if self.features and self.features != names:
            raise ValueError(f"{row['request_id']}: features {names} differ from {self.features}")
        self.features = names
        self.abs_attributions.append([abs(float(a["value"])) for a in row["attributions"]])
        self.inclusion_probability.append(float(row["inclusion_probability"]))
        if str(row["sampling_reason"]).startswith(ALWAYS_PREFIX):
            self.explained_always += 1
        if committed_at_ms is not None:
            self.committed += 1
            self.latency_s.append(committed_at_ms / 1000.0 - row["event_ts"].timestamp())
        # Not every explainer reports every figure (stability is IG's; SHAP is optional).
        for name, values in (
            ("completeness_error", self.completeness),
            ("shap_additivity_error", self.shap_additivity),
            ("stability", self.stability),
            ("score_drift", self.score_drift),
            ("explain_seconds", self.explain_seconds),
        ):
            if row.get(name) is not None:
                values.append(float(row[name]))
        # null when the producer sent no hash (explanation_plan sets it against our digest).
        if row.get("input_hash_mismatch") is not None:
            self.hash_checked += 1
            self.hash_mismatches += bool(row["input_hash_mismatch"])
        self.devices.add(str(row.get("device", "")))


def latency_buckets(latency_s: Sequence[float]) -> list[int]:
    """Counts per LATENCY_BOUNDS_S bucket (`le` semantics), then the overflow bucket."""
    index = np.searchsorted(np.asarray(LATENCY_BOUNDS_S), np.asarray(latency_s), side="left")
    return [int(c) for c in np.bincount(index, minlength=len(LATENCY_BOUNDS_S) + 1)]


def _percentiles(values: Sequence[float], qs: Sequence[float]) -> list[float | None]:
    if not values:
        return [None] * len(qs)
    return [float(v) for v in np.percentile(np.asarray(values, dtype=np.float64), qs)]


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator > 0 else None


def metric_id(
    tenant: str,
    model_id: str,
    version: str,
    day: date,
    window: tuple[datetime, datetime] | None,
    pane: int | None,
    run_id: str,
) -> str:
    """Deterministic id of one slice's row: a retried commit of the same run adds nothing."""
    parts = (tenant, model_id, version, day.isoformat(), str(window), str(pane), run_id)
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


@dataclass(frozen=True)
class SliceKey:
    """Which slice a metrics row describes."""

    tenant_id: str
    model_id: str
    model_version: str
    day: date
    window: tuple[datetime, datetime] | None = None
    pane_index: int | None = None


def slice_figures(
    key: SliceKey,
    data: ModelSlice,
    *,
    stratum: Mapping[str, Any] | None,
    run_id: str,
    computed_at: datetime,
    score_tolerance: float,
) -> dict[str, Any]:
    """One `whylake.metrics` row (column names of schemas.metrics) from a slice's data."""
    explained = len(data.inclusion_probability)
    records_always = data.sampled_always  # always-explain records are all sampled (p = 1)
    lat = _percentiles(data.latency_s, (50, 95, 99, 100))
    comp = _percentiles(data.completeness, (50, 95, 99, 100))
    shap = _percentiles(data.shap_additivity, (50, 99))
    stab = _percentiles(data.stability, (5, 50, 95))
    drift = _percentiles(data.score_drift, (50, 99, 100))
    cost = float(sum(data.explain_seconds)) if data.explain_seconds else None
    importance: list[dict[str, Any]] = []
    weight_sum = None
    if explained and data.features:
        imp = global_importance(
            data.features,
            np.asarray(data.abs_attributions, dtype=np.float64),
            np.asarray(data.inclusion_probability, dtype=np.float64),
            population=data.records or None,
        )
        importance, weight_sum = imp.as_rows(), imp.weight_sum
    window = key.window
    return {
        "metric_id": metric_id(
            key.tenant_id,
            key.model_id,
            key.model_version,
            key.day,
            window,
            key.pane_index,
            run_id,
        ),
        "tenant_id": key.tenant_id,
        "model_id": key.model_id,
        "model_version": key.model_version,
        "day": key.day,
        "window_start": window[0] if window else None,
        "window_end": window[1] if window else None,
        "pane_index": key.pane_index,
        "run_id": run_id,
        "computed_at": computed_at,
        "sampling_policy": (stratum or {}).get("sampling_policy"),
        "records": data.records,
        "records_always": records_always,
        "sampled": data.sampled,
        "sampled_always": data.sampled_always,
        "explained": explained,
        "explained_always": data.explained_always,
        "failed": data.failed,
        "committed": data.committed,
        "stratum_records": (stratum or {}).get("records"),
        "stratum_always": (stratum or {}).get("always_explain"),
        "stratum_sampled": (stratum or {}).get("sampled"),
        "coverage": _ratio(explained, data.records),
        "coverage_always": _ratio(data.explained_always, records_always),
        "coverage_sampled": _ratio(
            explained - data.explained_always, data.records - records_always
        ),
        "error_rate": _ratio(data.failed, data.sampled),
        "latency_rows": len(data.latency_s),
        "latency_p50_s": lat[0],
        "latency_p95_s": lat[1],
        "latency_p99_s": lat[2],
        "latency_max_s": lat[3],
        "latency_buckets": latency_buckets(data.latency_s),
        "explain_seconds": cost,
        "cost_per_explanation_s": _ratio(cost, len(data.explain_seconds)) if cost else None,
        "explain_device": ",".join(sorted(d for d in data.devices if d)) or None,
        "completeness_error_p50": comp[0],
        "completeness_error_p95": comp[1],
        "completeness_error_p99": comp[2],
        "completeness_error_max": comp[3],
        "shap_additivity_error_p50": shap[0],
        "shap_additivity_error_p99": shap[1],
        "stability_p05": stab[0],
        "stability_p50": stab[1],
        "stability_p95": stab[2],
        "stability_mean": float(np.mean(data.stability)) if data.stability else None,
        "score_drift_p50": drift[0],
        "score_drift_p99": drift[1],
        "score_drift_max": drift[2],
        "score_mismatches": int(sum(d > score_tolerance for d in data.score_drift)),
        "score_tolerance": score_tolerance,
        "input_hash_checked": data.hash_checked,
        "input_hash_mismatches": data.hash_mismatches,
        "importance": importance,
        "ht_weight_sum": weight_sum,
    }


def bucket_quantile(buckets: Sequence[int], q: float) -> float | None:
    """The q-quantile from a latency histogram, interpolated within its bucket (as Prometheus'
    histogram_quantile does); the overflow bucket answers with the largest bound."""
    total = sum(buckets)
    if total == 0:
        return None
    rank = q * total
    seen = 0.0
    lower = 0.0
    for count, upper in zip(buckets, (*LATENCY_BOUNDS_S, LATENCY_BOUNDS_S[-1]), strict=True):
        if count and seen + count >= rank:
            return lower + (upper - lower) * (rank - seen) / count
        seen += count
        lower = upper
    return LATENCY_BOUNDS_S[-1]


def within(buckets: Sequence[int], bound: float) -> int:
    """How many latencies of a histogram are <= `bound` (a bucket bound)."""
    index = LATENCY_BOUNDS_S.index(bound)
    return int(sum(buckets[: index + 1]))


_SUMMED = (
    "records",
    "records_always",
    "sampled",
    "sampled_always",
    "explained",
    "explained_always",
    "failed",
    "committed",
    "latency_rows",
    "score_mismatches",
    "input_hash_checked",
    "input_hash_mismatches",
)


@dataclass(frozen=True)
class DayFigures:
    """A model version's figures for one UTC day, from its stored slices."""

    tenant_id: str
    model_id: str
    model_version: str
    day: date
    slices: int
    counts: Mapping[str, int]
    latency_buckets: tuple[int, ...]
    latency_p99_s: float | None
    explain_seconds: float | None
    rows: tuple[Mapping[str, Any], ...]  # the stored rows merged here (the latest run each)

    @property
    def coverage(self) -> float | None:
        return _ratio(self.counts["explained"], self.counts["records"])

    @property
    def error_rate(self) -> float | None:
        return _ratio(self.counts["failed"], self.counts["sampled"])

    @property
    def cost_per_explanation_s(self) -> float | None:
        if self.explain_seconds is None:
            return None
        return _ratio(self.explain_seconds, self.counts["explained"])


_LATENCY = ("latency_rows", "latency_p50_s", "latency_p95_s", "latency_p99_s", "latency_max_s",
            "latency_buckets")  # fmt: skip


def latest_per_slice(rows: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The newest row of each slice: a rerun's row replaces an earlier run's for that slice.

    A pure replay commits nothing, so it measures no latency: the rows in the table were
    committed by an earlier run, whose latency figures are kept.
    """
    best: dict[tuple[Any, ...], Mapping[str, Any]] = {}
    timed: dict[tuple[Any, ...], Mapping[str, Any]] = {}
    for row in rows:
        key = (
            row["tenant_id"],
            row["model_id"],
            row["model_version"],
            row["day"],
            row["window_start"],
            row["window_end"],
            row["pane_index"],
        )
        if key not in best or row["computed_at"] > best[key]["computed_at"]:
            best[key] = row
        if row["latency_rows"] and (
            key not in timed or row["computed_at"] > timed[key]["computed_at"]
        ):
            timed[key] = row
    out = []
    for key, row in best.items():
        if not row["latency_rows"] and key in timed:
            row = {**row, **{name: timed[key][name] for name in _LATENCY}}
        out.append(row)
    return out


def merge_rows(rows: Sequence[Mapping[str, Any]]) -> DayFigures:
    """One day of one model version from its slices' rows (already `latest_per_slice`)."""
    first = rows[0]
    counts = {name: int(sum(r[name] or 0 for r in rows)) for name in _SUMMED}
    buckets = tuple(
        int(sum(col)) for col in zip(*(r["latency_buckets"] for r in rows), strict=True)
    )
    # One slice (the batch job's day): its exact p99. Several panes: from the merged histogram.
    p99 = first["latency_p99_s"] if len(rows) == 1 else bucket_quantile(buckets, 0.99)
    costs = [r["explain_seconds"] for r in rows if r["explain_seconds"] is not None]
    return DayFigures(
        tenant_id=first["tenant_id"],
        model_id=first["model_id"],
        model_version=first["model_version"],
        day=first["day"],
        slices=len(rows),
        counts=counts,
        latency_buckets=buckets,
        latency_p99_s=p99,
        explain_seconds=float(sum(costs)) if costs else None,
        rows=tuple(rows),
    )
