"""One tenant's monitoring picture: SLIs per day, drift against the reference, burn rates, alerts.

Reads only through whylake.lake (tenant-scoped) and a reference provider the caller passes in
(the registered reference rows need the explainers, which live above this layer).
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
from pyiceberg.catalog import Catalog

from whylake.lake.metrics import explanations_snapshot, read_explained, read_metrics
from whylake.monitor.config import Cohort, MonitorConfig, TenantMonitoring
from whylake.monitor.distances import ndcg
from whylake.monitor.drift import DriftResult, Explained, compare
from whylake.monitor.importance import Importance
from whylake.monitor.sli import DayFigures, latest_per_slice, merge_rows, within
from whylake.monitor.slo import BurnAlert, BurnRate, SliceEvents, evaluate_burn

ModelKey = tuple[str, str]  # (model_id, model_version)
ReferenceProvider = Callable[[str, str, str], Explained | None]


@dataclass(frozen=True)
class CohortFigures:
    """A cohort's global importance on one day and its nDCG against the reference."""

    cohort: str
    rows: int
    importance: Importance
    ndcg: float | None


@dataclass(frozen=True)
class DayReport:
    """One model version on one UTC day."""

    figures: DayFigures
    importance: Importance | None
    drift: DriftResult | None
    burn_rates: tuple[BurnRate, ...]
    cohorts: tuple[CohortFigures, ...] = ()

    @property
    def key(self) -> tuple[str, str, date]:
        f = self.figures
        return (f.model_id, f.model_version, f.day)

    def summary(self) -> dict[str, Any]:
        """The per-day JSON object `whylake monitor --output json` prints (exactly these keys)."""
        f, d = self.figures, self.drift
        tested = d is not None and d.verdict == "tested"
        return {
            "tenant_id": f.tenant_id,
            "model_id": f.model_id,
            "model_version": f.model_version,
            "day": f.day.isoformat(),
            "coverage": f.coverage,
            "latency_p99_s": f.latency_p99_s,
            "error_rate": f.error_rate,
            "ndcg": d.ndcg if tested and d is not None else None,
            "drift_alert": bool(d is not None and d.alert),
            "top_moved_features": list(d.top_moved_features) if d is not None else [],
        }


@dataclass(frozen=True)
class ReferenceInfo:
    """What a model version's drift was measured against."""

    kind: str  # registration / baseline
    rows: int
    importance: Importance
    since: date | None = None
    until: date | None = None


@dataclass(frozen=True)
class MonitorReport:
    """Everything `whylake monitor` shows for one tenant, and the alerts it raises."""

    tenant_id: str
    config_version: str
    config_hash: str
    explanations_snapshot_id: int | None
    days: tuple[DayReport, ...]
    references: Mapping[ModelKey, ReferenceInfo]
    alerts: tuple[dict[str, Any], ...]
    settings: TenantMonitoring
    evaluated_at: datetime = field(default_factory=lambda: datetime.now(UTC))


def explained_rows(table: pa.Table) -> dict[tuple[str, str, date], Explained]:
    """Explained rows grouped by (model, version, UTC day), as drift's inputs."""
    groups: dict[tuple[str, str, date], list[dict[str, Any]]] = defaultdict(list)
    for row in table.to_pylist():
        day = row["event_ts"].astimezone(UTC).date()
        groups[(row["model_id"], row["model_version"], day)].append(row)
    return {key: _explained(rows) for key, rows in groups.items()}


def _explained(rows: Sequence[Mapping[str, Any]]) -> Explained:
    rows = sorted(rows, key=lambda r: str(r["request_id"]))
    features = tuple(a["feature"] for a in rows[0]["attributions"])
    return Explained(
        features=features,
        attributions=np.array([[a["value"] for a in r["attributions"]] for r in rows], float),
        inputs=np.array([[a["input_value"] for a in r["attributions"]] for r in rows], float),
        inclusion_probability=np.array([r["inclusion_probability"] for r in rows], float),
        request_ids=tuple(str(r["request_id"]) for r in rows),
        flags=tuple(tuple(r.get("flags") or ()) for r in rows),
        trust_tiers=tuple(r.get("trust_tier") for r in rows),
    )


def cohort_mask(explained: Explained, cohort: Cohort) -> np.ndarray:
    """Which rows of a slice belong to a cohort (no row for a feature the model lacks)."""
    if cohort.flag is not None:
        return np.array([cohort.flag in flags for flags in explained.flags], dtype=bool)
    if cohort.tier is not None:  # rows whose producer sent no tier belong to no tier cohort
        tiers = explained.trust_tiers or (None,) * explained.rows
        return np.array([tier == cohort.tier for tier in tiers], dtype=bool)
    if cohort.feature not in explained.features:
        return np.zeros(explained.rows, dtype=bool)
    column = np.asarray(explained.inputs)[:, explained.features.index(str(cohort.feature))]
    return np.asarray(column < cohort.value if cohort.below else column >= cohort.value)


def _day_end(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)


def _events(
    settings: TenantMonitoring,
    rows: Sequence[Mapping[str, Any]],
    drift_days: Mapping[date, DriftResult],
) -> dict[str, list[SliceEvents]]:
    """Good and total events per SLO, one entry per stored slice (drift: per tested day)."""
    out: dict[str, list[SliceEvents]] = {s.name: [] for s in settings.slos}
    coverage, latency = settings.slo("coverage"), settings.slo("latency_p99_s")
    for r in rows:
        end = r["window_end"] or _day_end(r["day"])
        if r["records"]:
            good = float((r["coverage"] or 0.0) >= coverage.bound)
            out["coverage"].append(SliceEvents(end, good, 1.0))
        if r["latency_rows"]:
            good_rows = within(r["latency_buckets"], latency.bound)
            out["latency_p99_s"].append(SliceEvents(end, good_rows, r["latency_rows"]))
        if r["sampled"]:
            out["error_rate"].append(SliceEvents(end, r["sampled"] - r["failed"], r["sampled"]))
    for day, result in drift_days.items():
        if result.verdict == "tested":
            out["drift_ndcg"].append(SliceEvents(_day_end(day), float(not result.alert), 1.0))
    return out


def _alert_id(*parts: object) -> str:
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), digits)


def _reconstruct(tenant: str, request_id: str) -> dict[str, str]:
    return {
        "request_id": request_id,
        "command": f"whylake reconstruct --tenant {tenant} --request-id {request_id}",
    }


def drift_alert(
    tenant: str,
    day: DayReport,
    reference: ReferenceInfo,
    config: MonitorConfig,
    snapshot_id: int | None,
    now: datetime,
) -> dict[str, Any]:
    """The `whylake.alerts` row of a day whose attribution drift test fired, with evidence."""
    f, d = day.figures, day.drift
    assert d is not None
    moved = [x for x in d.features if x.feature in d.top_moved_features]
    moved.sort(key=lambda x: d.top_moved_features.index(x.feature))
    if d.ndcg_violation:
        parts = [f"nDCG {d.ndcg:.3f} < {d.ndcg_threshold:.2f} (p = {d.ndcg_p_value:.4f})"]
    else:
        parts = [f"nDCG {d.ndcg:.3f} (threshold {d.ndcg_threshold:.2f} holds)"]
    if moved:
        names = ", ".join(
            f"{x.feature} (attribution JS {x.attribution_js:.2f}, importance "
            f"{x.reference_importance:.3g} -> {x.importance:.3g})"
            for x in moved[:3]
        )
        parts.append(f"moved: {names}")
    summary = (
        f"{tenant} {f.model_id}/{f.model_version} on {f.day}: attribution drift against the "
        f"{reference.kind} reference; " + "; ".join(parts)
    )
    start = _day_end(f.day) - timedelta(days=1)
    evidence = {
        "window": {"start": start.isoformat(), "end": _day_end(f.day).isoformat()},
        "explained_rows": d.rows,
        "reference": {
            "kind": reference.kind,
            "rows": reference.rows,
            "since": reference.since.isoformat() if reference.since else None,
            "until": reference.until.isoformat() if reference.until else None,
        },
        "ndcg": _round(d.ndcg),
        "ndcg_p_value": _round(d.ndcg_p_value),
        "ndcg_threshold": d.ndcg_threshold,
        "ndcg_violation": d.ndcg_violation,
        "level": config.for_tenant(tenant).drift.level,
        "features_moved": [
            {
                "feature": x.feature,
                "importance": _round(x.importance, 6),
                "reference_importance": _round(x.reference_importance, 6),
                "importance_z": _round(x.importance_z, 2),
                "attribution_js": _round(x.attribution_js),
                "attribution_p_value": _round(x.attribution_p_value),
                "input_js": _round(x.input_js),
                "input_p_value": _round(x.input_p_value),
            }
            for x in moved
        ],
        "examples": [_reconstruct(tenant, r) for r in d.example_request_ids],
        "explanations_snapshot_id": snapshot_id,
    }
    return _alert_row(
        tenant, f.model_id, f.model_version, "attribution_drift", None, "page", f.day,
        start, _day_end(f.day), now, summary, evidence, d.example_request_ids, config,
    )  # fmt: skip


def burn_alert(
    tenant: str,
    model: ModelKey,
    day: date,
    fired: BurnAlert,
    examples: Sequence[str],
    config: MonitorConfig,
    now: datetime,
) -> dict[str, Any]:
    """The `whylake.alerts` row of an SLO whose error budget burns too fast."""
    slo, pair = fired.slo, fired.window
    summary = (
        f"{tenant} {model[0]}/{model[1]}: the {slo.name} error budget burns "
        f"{fired.long.rate:.1f}x over {pair.label.split('/')[0]} and {fired.short.rate:.1f}x "
        f"over {pair.label.split('/')[1]} (>= {pair.burn:g}x: {pair.severity}), as of {day}"
    )
    at = fired.long.at
    evidence = {
        "window": {"start": (at - pair.long).isoformat(), "end": at.isoformat()},
        "slo": {"name": slo.name, "bound": slo.bound, "target": slo.target},
        "burn": pair.burn,
        "long": {"window": str(pair.long), "bad": fired.long.bad, "total": fired.long.total,
                 "rate": _round(fired.long.rate, 3)},
        "short": {"window": str(pair.short), "bad": fired.short.bad, "total": fired.short.total,
                  "rate": _round(fired.short.rate, 3)},
        "examples": [_reconstruct(tenant, r) for r in examples],
    }  # fmt: skip
    return _alert_row(
        tenant, model[0], model[1], "slo_burn", slo.name, pair.severity, day,
        at - pair.long, at, now, summary, evidence, examples, config,
    )  # fmt: skip


def _alert_row(
    tenant: str,
    model_id: str,
    version: str,
    kind: str,
    slo: str | None,
    severity: str,
    day: date,
    start: datetime,
    end: datetime,
    now: datetime,
    summary: str,
    evidence: Mapping[str, Any],
    examples: Sequence[str],
    config: MonitorConfig,
) -> dict[str, Any]:
    return {
        "alert_id": _alert_id(tenant, model_id, version, kind, slo or "", severity, day),
        "tenant_id": tenant,
        "model_id": model_id,
        "model_version": version,
        "kind": kind,
        "slo": slo,
        "severity": severity,
        "day": day,
        "window_start": start,
        "window_end": end,
        "raised_at": now,
        "summary": summary,
        "evidence": json.dumps(evidence, sort_keys=True, default=str),
        "example_request_ids": list(examples),
        "config_version": config.version,
        "config_hash": config.digest(tenant),
        "firing": True,
    }


def evaluate(
    catalog: Catalog,
    tenant: str,
    config: MonitorConfig,
    reference: ReferenceProvider,
    *,
    model: str | None = None,
    since: date | None = None,
    until: date | None = None,
) -> MonitorReport:
    """Evaluate one tenant's SLIs, drift and SLOs over the days in [since, until]."""
    settings = config.for_tenant(tenant)
    now = datetime.now(UTC)
    # Burn windows look back before `since`: read that far back for the SLO events.
    lookback = max(w.long for w in settings.burn_windows)
    read_from = since - timedelta(days=lookback.days + 1) if since else None
    stored = latest_per_slice(
        read_metrics(catalog, tenant, model=model, since=read_from, until=until)
    )
    by_model: dict[ModelKey, list[dict[str, Any]]] = defaultdict(list)
    for r in stored:
        by_model[(r["model_id"], r["model_version"])].append(dict(r))
    explained = explained_rows(
        read_explained(catalog, tenant, model=model, since=since, until=until)
    )
    references = _references(catalog, tenant, settings, reference, sorted(by_model))
    days: list[DayReport] = []
    alerts: list[dict[str, Any]] = []
    snapshot_id = explanations_snapshot(catalog)
    for key in sorted(by_model):
        rows = by_model[key]
        per_day: dict[date, list[dict[str, Any]]] = defaultdict(list)
        for r in rows:
            per_day[r["day"]].append(r)
        ref = references.get(key)
        drift_days: dict[date, DriftResult] = {}
        for day in sorted(per_day):
            current = _with_population(explained.get((*key, day)), per_day[day])
            if ref is not None and current is not None and current.features == ref[1].features:
                drift_days[day] = compare(
                    current, ref[1], settings.drift, key=f"{tenant}/{key[0]}/{key[1]}/{day}"
                )
        events = _events(settings, rows, drift_days)
        for day in sorted(per_day):
            if since is not None and day < since:
                continue
            figures = merge_rows(per_day[day])
            current = _with_population(explained.get((*key, day)), per_day[day])
            rates: list[BurnRate] = []
            for slo in settings.slos:
                slo_rates, fired = evaluate_burn(
                    slo, events[slo.name], _day_end(day), settings.burn_windows
                )
                rates += slo_rates
                if fired is not None:
                    examples = drift_days[day].example_request_ids if day in drift_days else ()
                    alerts.append(burn_alert(tenant, key, day, fired, examples, config, now))
            report = DayReport(
                figures=figures,
                importance=current.importance() if current is not None else None,
                drift=drift_days.get(day),
                burn_rates=tuple(rates),
                cohorts=_cohorts(settings, current, ref[0].importance if ref else None),
            )
            days.append(report)
            if report.drift is not None and report.drift.alert and ref is not None:
                alerts.append(drift_alert(tenant, report, ref[0], config, snapshot_id, now))
    return MonitorReport(
        tenant_id=tenant,
        config_version=config.version,
        config_hash=config.digest(tenant),
        explanations_snapshot_id=snapshot_id,
        days=tuple(days),
        references={k: v[0] for k, v in references.items()},
        alerts=tuple(sorted(alerts, key=lambda a: (a["day"], a["model_id"], a["kind"]))),
        settings=settings,
        evaluated_at=now,
    )


def _with_population(
    rows: Explained | None, stored: Sequence[Mapping[str, Any]]
) -> Explained | None:
    """A day's explained rows, known to be a sample of that day's valid records (HT estimates)."""
    if rows is None:
        return None
    records = sum(int(r["records"]) for r in latest_per_slice(stored))
    return rows.with_population(records) if records >= rows.rows else rows


def _cohorts(
    settings: TenantMonitoring, current: Explained | None, reference: Importance | None
) -> tuple[CohortFigures, ...]:
    if current is None:
        return ()
    out = []
    for cohort in settings.cohorts:
        mask = cohort_mask(current, cohort)
        if not mask.any():
            continue
        importance = current.select(mask).importance()
        score = None
        if reference is not None:
            score = float(ndcg(reference.value, importance.value)[0])
        out.append(CohortFigures(cohort.spec, int(mask.sum()), importance, score))
    return tuple(out)


def _references(
    catalog: Catalog,
    tenant: str,
    settings: TenantMonitoring,
    reference: ReferenceProvider,
    models: Sequence[ModelKey],
) -> dict[ModelKey, tuple[ReferenceInfo, Explained]]:
    out: dict[ModelKey, tuple[ReferenceInfo, Explained]] = {}
    if isinstance(settings.reference, str):  # "registration"
        for model_id, version in models:
            found = reference(tenant, model_id, version)
            if found is not None:
                info = ReferenceInfo("registration", found.rows, found.importance())
                out[(model_id, version)] = (info, found)
        return out
    first, last = settings.reference
    baseline = read_explained(catalog, tenant, since=first, until=last)
    pooled: dict[ModelKey, list[Explained]] = defaultdict(list)
    for (model_id, version, _day), rows in sorted(explained_rows(baseline).items()):
        pooled[(model_id, version)].append(rows)
    for key, parts in pooled.items():
        merged = Explained(
            parts[0].features,
            np.vstack([p.attributions for p in parts]),
            np.vstack([p.inputs for p in parts]),
            np.concatenate([p.inclusion_probability for p in parts]),
            tuple(i for p in parts for i in p.request_ids),
            tuple(f for p in parts for f in p.flags),
        )
        info = ReferenceInfo("baseline", merged.rows, merged.importance(), first, last)
        out[key] = (info, merged)
    return out
