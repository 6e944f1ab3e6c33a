"""The Prometheus exposition parses with prometheus-client's own parser; the rules are current."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from tests.unit.monitor.conftest import population, reference
from whylake.monitor.config import load_monitor_config
from whylake.monitor.drift import compare
from whylake.monitor.evaluate import DayReport, MonitorReport
from whylake.monitor.exposition import MonitorCollector, alerting_rules
from whylake.monitor.sli import ModelSlice, SliceKey, merge_rows, slice_figures
from whylake.monitor.slo import evaluate_burn

REPO = Path(__file__).resolve().parents[3]
DAY = date(2026, 11, 21)


def _report(tenant: str, stuck: int | None) -> MonitorReport:
    config = load_monitor_config()
    settings = config.for_tenant(tenant)
    rng = np.random.default_rng(0)
    day = population(rng, 2000, stuck=stuck).sample(rng, 80)
    drift = compare(day, reference(np.random.default_rng(1)), settings.drift)
    data = ModelSlice(records=2000, sampled=80)
    row = slice_figures(SliceKey(tenant, "m", "1", DAY), data, stratum=None, run_id="r",
                        computed_at=datetime.now(UTC), score_tolerance=0.0)  # fmt: skip
    rates, _ = evaluate_burn(settings.slo("error_rate"), [], datetime.now(UTC),
                             settings.burn_windows)  # fmt: skip
    figures = merge_rows([row])
    days = (DayReport(figures, day.importance(), drift, tuple(rates)),)
    return MonitorReport(tenant, config.version, config.digest(tenant), None, days, {}, (),
                         settings)  # fmt: skip


def test_the_exposition_parses_and_carries_each_tenants_verdict() -> None:
    registry = CollectorRegistry()
    registry.register(MonitorCollector(lambda: [_report("acme", None), _report("globex", 0)]))
    text = generate_latest(registry).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    drift = {
        s.labels["tenant"]: s.value for s in families["whylake_attribution_drift_alert"].samples
    }
    assert drift == {"acme": 0.0, "globex": 1.0}
    importance = families["whylake_feature_importance"].samples
    assert {s.labels["feature"] for s in importance} == {f"f{j}" for j in range(6)}
    assert families["whylake_explanation_coverage_ratio"].samples[0].value == 0.0
    histogram = families["whylake_explanation_latency_seconds"]
    assert any(s.labels.get("le") == "+Inf" for s in histogram.samples)
    assert families["whylake_records"].type == "counter"


def test_the_checked_in_rules_are_what_the_settings_generate() -> None:
    shipped = (REPO / "monitor/prometheus/whylake-rules.yml").read_text()
    assert shipped == alerting_rules(load_monitor_config()), (
        "regenerate: whylake metrics rules --out monitor/prometheus/whylake-rules.yml"
    )
    rules = yaml.safe_load(shipped)["groups"]
    burn = [r for g in rules for r in g["rules"] if r["alert"] == "WhylakeErrorBudgetBurn"]
    assert [r["labels"]["long_window"] for r in burn] == ["1h", "6h", "3d"]
    assert all(" and on (tenant, model_id, model_version, slo) " in r["expr"] for r in burn)
