"""Prometheus exposition of the monitoring picture (prometheus-client), and the alerting rules.

`whylake metrics serve` registers a `MonitorCollector`: on each scrape it exposes, per tenant x
model version, the figures of the latest day (or window) the tables hold — gauges for coverage,
p99 latency, error rate, cost, nDCG and the drift verdict, per-feature importance and attribution
distance, the SLO burn rate of every window, a latency histogram, and counters summed over the
days evaluated. `alerting_rules` writes the multi-window burn-rate rules a Prometheus server
loads for those gauges (SRE workbook ch. 5); the drift rule reads whylake's own sampling-aware
verdict, which Prometheus cannot recompute from aggregates.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from whylake.monitor.config import MonitorConfig, TenantMonitoring, format_window
from whylake.monitor.evaluate import DayReport, MonitorReport
from whylake.schemas.metrics import LATENCY_BOUNDS_S

LABELS = ["tenant", "model_id", "model_version"]


def _latest(report: MonitorReport) -> list[DayReport]:
    latest: dict[tuple[str, str], DayReport] = {}
    for day in report.days:
        key = (day.figures.model_id, day.figures.model_version)
        if key not in latest or day.figures.day > latest[key].figures.day:
            latest[key] = day
    return [latest[k] for k in sorted(latest)]


def _labels(day: DayReport) -> list[str]:
    f = day.figures
    return [f.tenant_id, f.model_id, f.model_version]


class MonitorCollector(Collector):
    """Turns the reports a callable returns into metric families, on every scrape."""

    def __init__(self, reports: Callable[[], Sequence[MonitorReport]]) -> None:
        self.reports = reports

    def collect(self) -> Iterator[Metric]:
        reports = self.reports()
        gauges = {
            "coverage": GaugeMetricFamily(
                "whylake_explanation_coverage_ratio", "Explained / valid records", labels=LABELS
            ),
            "latency": GaugeMetricFamily(
                "whylake_explanation_latency_p99_seconds",
                "p99 of event time -> Iceberg commit",
                labels=LABELS,
            ),
            "errors": GaugeMetricFamily(
                "whylake_explanation_error_ratio", "Failed / sampled records", labels=LABELS
            ),
            "cost": GaugeMetricFamily(
                "whylake_explanation_cost_seconds",
                "CPU (or GPU) seconds per explanation",
                labels=LABELS,
            ),
            "ndcg": GaugeMetricFamily(
                "whylake_attribution_ndcg",
                "nDCG of the global importance ranking vs the reference",
                labels=LABELS,
            ),
            "ndcg_p": GaugeMetricFamily(
                "whylake_attribution_ndcg_p_value",
                "p-value of the nDCG under no drift (sampling noise)",
                labels=LABELS,
            ),
            "threshold": GaugeMetricFamily(
                "whylake_attribution_ndcg_threshold", "The tenant's nDCG threshold", labels=LABELS
            ),
            "drift": GaugeMetricFamily(
                "whylake_attribution_drift_alert",
                "1 when the sampling-aware attribution drift test fired",
                labels=LABELS,
            ),
            "day": GaugeMetricFamily(
                "whylake_monitor_day_timestamp_seconds",
                "Start (UTC) of the day these figures describe",
                labels=LABELS,
            ),
        }
        importance = GaugeMetricFamily(
            "whylake_feature_importance",
            "HT-weighted mean |attribution|",
            labels=[*LABELS, "feature"],
        )
        distance = GaugeMetricFamily(
            "whylake_feature_attribution_js",
            "JS divergence of the feature's attributions vs the reference",
            labels=[*LABELS, "feature"],
        )
        burn = GaugeMetricFamily(
            "whylake_slo_burn_rate",
            "Error-budget burn rate over the window",
            labels=[*LABELS, "slo", "window"],
        )
        latency_hist = HistogramMetricFamily(
            "whylake_explanation_latency_seconds",
            "Event time -> commit, latest day",
            labels=LABELS,
        )
        counters = {
            name: CounterMetricFamily(f"whylake_{name}", text, labels=LABELS)
            for name, text in (
                ("records", "Valid records, days evaluated"),
                ("explained", "Explained records, days evaluated"),
                ("failed", "Sampled records that failed to explain, days evaluated"),
            )
        }
        for report in reports:
            totals: dict[tuple[str, ...], dict[str, int]] = {}
            for day in report.days:
                key = tuple(_labels(day))
                acc = totals.setdefault(key, {"records": 0, "explained": 0, "failed": 0})
                for name in acc:
                    acc[name] += day.figures.counts[name]
            for key, acc in sorted(totals.items()):
                for name, value in acc.items():
                    counters[name].add_metric(list(key), value)
            for day in _latest(report):
                self._day(day, report.settings, gauges, importance, distance, burn, latency_hist)
        yield from gauges.values()
        yield from (importance, distance, burn, latency_hist)
        yield from counters.values()

    @staticmethod
    def _day(
        day: DayReport,
        settings: TenantMonitoring,
        gauges: dict[str, GaugeMetricFamily],
        importance: GaugeMetricFamily,
        distance: GaugeMetricFamily,
        burn: GaugeMetricFamily,
        latency_hist: HistogramMetricFamily,
    ) -> None:
        labels, f, d = _labels(day), day.figures, day.drift
        for name, value in (
            ("coverage", f.coverage),
            ("latency", f.latency_p99_s),
            ("errors", f.error_rate),
            ("cost", f.cost_per_explanation_s),
        ):
            if value is not None:
                gauges[name].add_metric(labels, float(value))
        gauges["threshold"].add_metric(labels, settings.drift.ndcg_threshold)
        start = f.day.toordinal() - 719163  # days since 1970-01-01
        gauges["day"].add_metric(labels, float(start * 86400))
        if d is not None and d.verdict == "tested":
            gauges["ndcg"].add_metric(labels, d.ndcg)
            gauges["ndcg_p"].add_metric(labels, d.ndcg_p_value)
            gauges["drift"].add_metric(labels, float(d.alert))
            for feature in d.features:
                distance.add_metric([*labels, feature.feature], feature.attribution_js)
        if day.importance is not None:
            for name, value in zip(day.importance.features, day.importance.value, strict=True):
                importance.add_metric([*labels, name], float(value))
        seen: set[tuple[str, str]] = set()
        for rate in day.burn_rates:
            window = format_window(rate.window)
            if rate.rate is None or (rate.slo, window) in seen:
                continue
            seen.add((rate.slo, window))
            burn.add_metric([*labels, rate.slo, window], rate.rate)
        cumulative, buckets = 0, []
        for bound, count in zip((*LATENCY_BOUNDS_S, float("inf")), f.latency_buckets, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else f"{bound:g}", cumulative))
        latency_hist.add_metric(labels, buckets, sum_value=_latency_sum(day))


def _latency_sum(day: DayReport) -> float:
    # The stored rows keep percentiles, not the sum; the midpoint estimate keeps `_sum` honest
    # in order of magnitude for rate(_sum)/rate(_count) dashboards, and is labelled as such.
    total, lower = 0.0, 0.0
    for bound, count in zip(LATENCY_BOUNDS_S, day.figures.latency_buckets, strict=False):
        total += count * (lower + bound) / 2
        lower = bound
    return total + day.figures.latency_buckets[-1] * LATENCY_BOUNDS_S[-1]


def alerting_rules(config: MonitorConfig) -> str:
    """Prometheus alerting rules (YAML) for the exposed gauges, from the monitoring settings.

    One burn-rate rule per window pair of the defaults; a tenant with windows of its own gets
    rules of its own and is left out of the default ones.
    """
    own = sorted(
        t for t, s in config.tenants.items() if s.burn_windows != config.defaults.burn_windows
    )
    groups: list[dict[str, Any]] = []
    rules = _burn_rules(config.defaults, exclude=own)
    for tenant in own:
        rules += _burn_rules(config.for_tenant(tenant), tenant=tenant)
    groups.append({"name": "whylake-slo-burn", "rules": rules})
    groups.append(
        {
            "name": "whylake-attribution-drift",
            "rules": [
                {
                    "alert": "WhylakeAttributionDrift",
                    "expr": "whylake_attribution_drift_alert == 1",
                    "labels": {"severity": "page"},
                    "annotations": {
                        "summary": "Attribution drift for {{ $labels.tenant }} "
                        "{{ $labels.model_id }}/{{ $labels.model_version }}",
                        "description": "whylake's sampling-aware drift test fired (nDCG below "
                        "the tenant's threshold beyond sampling noise, or a feature's "
                        "attribution distribution moved); `whylake monitor --tenant "
                        "{{ $labels.tenant }}` shows the evidence.",
                    },
                }
            ],
        }
    )
    header = (
        "# Generated by `whylake metrics rules` from the monitoring settings "
        f"({Path(config.source).name}, version {config.version}); do not edit by hand.\n"
    )
    return header + str(yaml.safe_dump({"groups": groups}, sort_keys=False, width=100))


def _burn_rules(
    settings: TenantMonitoring, *, tenant: str | None = None, exclude: Sequence[str] = ()
) -> list[dict[str, Any]]:
    if tenant is not None:
        matcher = f'tenant="{tenant}", '
    elif exclude:
        matcher = f'tenant!~"{"|".join(exclude)}", '
    else:
        matcher = ""
    rules = []
    for pair in settings.burn_windows:
        long, short = format_window(pair.long), format_window(pair.short)
        expr = (
            f'whylake_slo_burn_rate{{{matcher}window="{long}"}} >= {pair.burn:g} '
            f"and on (tenant, model_id, model_version, slo) "
            f'whylake_slo_burn_rate{{{matcher}window="{short}"}} >= {pair.burn:g}'
        )
        rules.append(
            {
                "alert": "WhylakeErrorBudgetBurn",
                "expr": expr,
                "labels": {
                    "severity": pair.severity,
                    "long_window": long,
                    "short_window": short,
                },
                "annotations": {
                    "summary": "{{ $labels.tenant }} {{ $labels.model_id }}/"
                    "{{ $labels.model_version }}: the {{ $labels.slo }} error budget burns "
                    f'{{{{ $value | printf "%.1f" }}}}x over {long} (>= {pair.burn:g}x over '
                    f"{long} and {short})",
                },
            }
        )
    return rules
