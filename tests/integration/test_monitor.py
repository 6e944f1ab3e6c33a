"""Monitoring end to end: two days through the batch job, one tenant's feature stuck on day two.

Checks the metrics against figures recomputed here from the raw tables and files, the drift
alert (that day only, that tenant only), idempotent alerts, tenant scoping of every reader, the
JSON contract, the HTML report in a real headless Chromium, and a real Prometheus server that
scrapes `whylake metrics serve` and evaluates the generated alerting rules.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from pyiceberg.catalog import Catalog
from pyiceberg.expressions import EqualTo

from tests.browser import dump_dom, screenshot
from tests.integration.conftest import POLICY, TEST_HASH_KEY
from whylake.jobs.batch_job import run_batch
from whylake.jobs.demo_data import FeatureShift, generate_day
from whylake.jobs.demo_models import DEMO_TENANTS, register_demo_models
from whylake.jobs.monitor_commands import evaluate_tenant, report_json
from whylake.lake.catalog import (
    DEAD_LETTERS,
    EXPLANATIONS,
    CatalogConfig,
    ensure_tables,
    open_catalog,
)
from whylake.lake.metrics import read_alerts, read_explained, read_metrics
from whylake.monitor.config import load_monitor_config
from whylake.monitor.exposition import alerting_rules
from whylake.monitor.sli import latest_per_slice
from whylake.pipelines.configs import BatchJobConfig, StoreConfig
from whylake.registry.store import ModelRegistry
from whylake.transforms.explainers.config import ExplainConfig
from whylake.transforms.sampling.policy import load_policies
from whylake.views.monitor_report import write_monitor_report

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
# Recent days, so the 72 h latency SLO holds whatever the hour the test runs at.
TODAY = datetime.now(UTC).date()
DAY1, DAY2 = TODAY - timedelta(days=2), TODAY - timedelta(days=1)
# initech with too few IG steps, so explanations fail their checks: a day outside every burn
# window of the two days above, so its failures page nobody there.
FAILING = TODAY - timedelta(days=10)
DRIFTING = ("globex", "s5")
PER_TENANT = 1500


def _prometheus_bin() -> Path:
    """Where `infra/services.sh fetch prometheus` put the server (Debian's package by default,
    WHYLAKE_PROMETHEUS_FROM=go for the module build), read from the pinned versions."""
    pins = dict(
        line.split("=", 1)
        for line in (REPO / "infra/versions.env").read_text().splitlines()
        if line and not line.startswith("#") and "=" in line
    )
    if os.environ.get("WHYLAKE_PROMETHEUS_FROM", "debian") == "go":
        return REPO / f".infra/cache/prometheus/{pins['PROMETHEUS_VERSION']}/bin/prometheus"
    return REPO / f".infra/cache/prometheus/deb-{pins['PROMETHEUS_DEB_VERSION']}/bin/prometheus"


PROMETHEUS = _prometheus_bin()
DAY_KEYS = {
    "tenant_id",
    "model_id",
    "model_version",
    "day",
    "coverage",
    "latency_p99_s",
    "error_rate",
    "ndcg",
    "drift_alert",
    "top_moved_features",
}


@dataclass
class TwoDays:
    home: Path
    inputs: dict[date, tuple[Path, ...]]

    def catalog(self) -> Catalog:
        catalog = open_catalog(CatalogConfig.embedded(self.home))
        ensure_tables(catalog)
        return catalog


def _job_depth_policies() -> Any:
    """The shipped explanation policy with every `ig_steps` null: the job's own setting holds
    for every trust tier and escalation (how the failing day gets its too-few IG steps)."""
    from whylake.schemas.explanation_policy import parse_explanation_policies
    from whylake.transforms.explanation_plan import default_explanation_policy_file

    def job_depth(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: None if k == "ig_steps" else job_depth(v) for k, v in node.items()}
        return [job_depth(v) for v in node] if isinstance(node, list) else node

    document = yaml.safe_load(default_explanation_policy_file().read_text())
    return parse_explanation_policies(job_depth(document))


def _run(home: Path, paths: tuple[Path, ...], day: date, **explain: Any) -> Any:
    store = StoreConfig(
        registry_root=str(home / "models"),
        policies=load_policies(POLICY),
        hash_key=TEST_HASH_KEY,
        catalog=CatalogConfig.embedded(home),
        explain=ExplainConfig(**explain) if explain else ExplainConfig(),
        explanation_policies=_job_depth_policies() if explain else None,
    )
    return run_batch(BatchJobConfig(inputs=tuple(map(str, paths)), store=store, day=day))


@pytest.fixture(scope="module")
def two_days(tmp_path_factory: pytest.TempPathFactory) -> TwoDays:
    home = tmp_path_factory.mktemp("monitor-home")
    registry = ModelRegistry(home / "models")
    register_demo_models(registry)
    inputs = {}
    for day, seed, shifts in (
        (DAY1, 6, None),
        (DAY2, 7, {DRIFTING[0]: FeatureShift(DRIFTING[1])}),
    ):
        generated = generate_day(
            registry, home / "input" / day.isoformat(), day, PER_TENANT, seed=seed, shifts=shifts
        )
        inputs[day] = generated.paths
        summary = _run(home, generated.paths, day)
        assert summary.status == "succeeded", summary.record.warnings
    failing = generate_day(registry, home / "input" / "failing", FAILING, 400, seed=5)
    initech = tuple(p for p in failing.paths if p.name.startswith("initech"))
    inputs[FAILING] = initech
    # More than max_failed_share fail, so the run is `failed`; its metrics are written all the same.
    # IG capped at 200 steps: the MLP rows that need more to converge fail the check
    # (most of them), the others pass.
    assert _run(home, initech, FAILING, ig_max_steps=200, shap=False).status == "failed"
    return TwoDays(home, inputs)


# --- the metrics, recomputed from the raw tables --------------------------------------------


def _commit_times(catalog: Catalog) -> dict[str, int]:
    """Explanation id -> commit time (ms) of the snapshot that added its data file."""
    table = catalog.load_table(EXPLANATIONS)
    snapshots = {s.snapshot_id: s.timestamp_ms for s in table.snapshots()}
    out: dict[str, int] = {}
    for entry in table.inspect.entries().to_pylist():
        if entry["status"] != 1:  # 1 = ADDED by that snapshot
            continue
        path = entry["data_file"]["file_path"].removeprefix("file://")
        ids = pq.read_table(path, columns=["explanation_id"])["explanation_id"].to_pylist()
        for i in ids:
            out.setdefault(i, snapshots[entry["snapshot_id"]])
    return out


def _valid_records(
    paths: tuple[Path, ...], dead: list[dict[str, Any]], tenant: str, day: date
) -> int:
    """Records of the tenant's input file that did not become read/validate dead letters."""
    (path,) = [p for p in paths if p.name.startswith(tenant)]
    lines = (
        pq.read_metadata(path).num_rows
        if path.suffix == ".parquet"
        else sum(1 for line in path.read_text().splitlines() if line.strip())
    )

    def refused(d: dict[str, Any]) -> bool:
        if d["stage"] not in ("read", "validate"):
            return False
        if str(d["source"] or "").startswith(str(path)):  # unparseable: file and line
            return True
        try:  # parsed, then refused: its own tenant and event day
            record = json.loads(d["record"])
        except ValueError:
            return False
        return d["tenant_id"] == tenant and str(record.get("event_ts", "")).startswith(str(day))

    return lines - sum(refused(d) for d in dead)


def test_metrics_match_figures_recomputed_from_the_raw_tables(two_days: TwoDays) -> None:
    catalog = two_days.catalog()
    committed = _commit_times(catalog)
    explanations = catalog.load_table(EXPLANATIONS).scan().to_arrow().to_pylist()
    dead = catalog.load_table(DEAD_LETTERS).scan().to_arrow().to_pylist()
    checked = 0
    for day, paths in two_days.inputs.items():
        tenants = [t for t in DEMO_TENANTS if any(p.name.startswith(t) for p in paths)]
        for tenant in tenants:
            [row] = latest_per_slice(read_metrics(catalog, tenant, since=day, until=day))
            mine = [
                e
                for e in explanations
                if e["tenant_id"] == tenant and e["event_ts"].astimezone(UTC).date() == day
            ]
            failed = [
                d
                for d in dead
                if d["tenant_id"] == tenant
                and d["stage"] in ("explain", "check")
                and str(day) in json.loads(d["record"])["event_ts"]
            ]
            records = _valid_records(paths, dead, tenant, day)
            assert row["records"] == records
            assert row["explained"] == len(mine) and row["failed"] == len(failed)
            assert row["coverage"] == pytest.approx(len(mine) / records, rel=1e-12)
            assert row["error_rate"] == pytest.approx(
                len(failed) / (len(mine) + len(failed)), rel=1e-12, abs=0
            )
            latency = [
                committed[e["explanation_id"]] / 1000 - e["event_ts"].timestamp() for e in mine
            ]
            assert row["latency_rows"] == len(latency)
            for q, column in ((50, "latency_p50_s"), (95, "latency_p95_s"), (99, "latency_p99_s")):
                if not latency:  # the failing day: nothing explained, no latency to report
                    assert row[column] is None
                    continue
                assert row[column] == pytest.approx(float(np.percentile(latency, q)), abs=1e-6)
            assert sum(row["latency_buckets"]) == len(latency)
            # The sampler's stratum count is the same traffic (one model per tenant here).
            assert row["stratum_records"] == records
            # The demo's producers send a hash; a few hash a stale vector (jobs/demo_data.py).
            hashed = [e for e in mine if e["input_hash_mismatch"] is not None]
            assert row["input_hash_checked"] == len(hashed) == len(mine)
            assert row["input_hash_mismatches"] == sum(e["input_hash_mismatch"] for e in hashed)
            if mine:  # the failing day explains nothing: no cost per explanation
                assert row["explain_seconds"] > 0 and row["cost_per_explanation_s"] > 0
            checked += 1
    assert checked == 7
    [failing] = read_metrics(catalog, "initech", since=FAILING, until=FAILING)
    assert 0 < failing["error_rate"] < 1, "too few IG steps must fail some checks, not all"


# --- drift, alerts, scoping ------------------------------------------------------------------


@pytest.fixture(scope="module")
def reports(two_days: TwoDays) -> dict[str, Any]:
    return {t: evaluate_tenant(t, home=two_days.home, since=DAY1, until=DAY2) for t in DEMO_TENANTS}


def test_the_stuck_feature_raises_a_drift_alert_on_that_day_only(
    two_days: TwoDays, reports: dict[str, Any]
) -> None:
    for tenant, report in reports.items():
        for day in report.days:
            drifted = tenant == DRIFTING[0] and day.figures.day == DAY2
            assert day.drift is not None and day.drift.verdict == "tested"
            assert day.drift.alert is drifted, (tenant, day.figures.day, day.drift)
            if drifted:
                assert day.drift.top_moved_features[0] == DRIFTING[1]
    catalog = two_days.catalog()
    alerts = read_alerts(catalog, DRIFTING[0])
    drift = [a for a in alerts if a["kind"] == "attribution_drift"]
    assert [a["day"] for a in drift] == [DAY2]
    evidence = json.loads(drift[0]["evidence"])
    assert evidence["features_moved"][0]["feature"] == DRIFTING[1]
    assert evidence["reference"]["kind"] == "registration"
    assert evidence["examples"][0]["command"].startswith("whylake reconstruct --tenant globex")
    # The example records are real rows of that tenant and day.
    ids = set(
        read_explained(catalog, DRIFTING[0], since=DAY2, until=DAY2)["request_id"].to_pylist()
    )
    assert set(drift[0]["example_request_ids"]) <= ids
    for other in ("acme", "initech"):
        assert read_alerts(catalog, other) == []
    # Re-evaluating adds no alert (deterministic ids, idempotent append).
    evaluate_tenant(DRIFTING[0], home=two_days.home, since=DAY1, until=DAY2)
    assert len(read_alerts(catalog, DRIFTING[0])) == len(alerts)


def test_cohort_importance_matches_the_raw_rows_of_each_trust_tier(
    two_days: TwoDays, tmp_path: Path
) -> None:
    """A `tier=<t>` cohort is the rows whose producer sent that trust tier, HT-weighted."""
    from whylake.monitor.config import default_monitor_file

    document = yaml.safe_load(default_monitor_file().read_text())
    document["defaults"]["cohorts"] = ["tier=gold", "tier=bronze"]
    settings = tmp_path / "cohorts.yaml"
    settings.write_text(yaml.safe_dump(document))
    report = evaluate_tenant("acme", home=two_days.home, slo=settings, since=DAY1, until=DAY1,
                             record=False)  # fmt: skip
    [day] = report.days
    raw = read_explained(two_days.catalog(), "acme", since=DAY1, until=DAY1).to_pylist()
    assert {c.cohort for c in day.cohorts} == {"tier=gold", "tier=bronze"}
    for cohort in day.cohorts:
        tier = cohort.cohort.removeprefix("tier=")
        mine = [r for r in raw if r["trust_tier"] == tier]
        assert cohort.rows == len(mine) > 0
        w = np.array([1 / r["inclusion_probability"] for r in mine])
        a = np.abs(np.array([[x["value"] for x in r["attributions"]] for r in mine]))
        expected = (w[:, None] * a).sum(axis=0) / w.sum()  # the ratio (Hajek) estimator
        np.testing.assert_allclose(cohort.importance.value, expected, rtol=1e-9)
        assert cohort.ndcg is not None and 0 < cohort.ndcg <= 1


def test_metrics_and_alerts_are_tenant_scoped(two_days: TwoDays, reports: dict[str, Any]) -> None:
    catalog = two_days.catalog()
    for tenant in DEMO_TENANTS:
        assert {r["tenant_id"] for r in read_metrics(catalog, tenant)} == {tenant}
        assert {r["tenant_id"] for r in read_alerts(catalog, tenant)} <= {tenant}
        explained = read_explained(catalog, tenant)
        assert set(explained["tenant_id"].to_pylist()) == {tenant}
        text = json.dumps(report_json(reports[tenant]), default=str)
        for other in set(DEMO_TENANTS) - {tenant}:
            assert other not in text
    # The table really holds the others' rows: the scoping is what keeps them out.
    everything = catalog.load_table("whylake.metrics").scan().to_arrow()
    assert set(everything["tenant_id"].to_pylist()) == set(DEMO_TENANTS)
    with pytest.raises(ValueError, match="tenant id"):
        read_metrics(catalog, "acme' OR '1'='1")
    assert (
        catalog.load_table("whylake.metrics")
        .scan(row_filter=EqualTo("tenant_id", "nobody"))
        .to_arrow()
        .num_rows
        == 0
    )


def test_the_cli_json_has_exactly_the_documented_keys_per_day(two_days: TwoDays) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "whylake.jobs.cli", "monitor", "--tenant", "globex", "--since",
         str(DAY1), "--output", "json", "--no-record", "--home", str(two_days.home)],
        capture_output=True, text=True, check=True, timeout=300,
    )  # fmt: skip
    document = json.loads(out.stdout)
    assert [d["day"] for d in document["days"]] == [str(DAY1), str(DAY2)]
    for day in document["days"]:
        assert set(day) == DAY_KEYS
    assert [d["drift_alert"] for d in document["days"]] == [False, True]
    assert document["days"][1]["top_moved_features"][0] == "s5"
    assert any(a["kind"] == "attribution_drift" for a in document["alerts"])


def test_the_html_report_renders_in_chromium_with_its_charts_and_one_tenant(
    two_days: TwoDays, reports: dict[str, Any], tmp_path: Path
) -> None:
    path = write_monitor_report(reports["globex"], tmp_path / "globex.html")
    dom = dump_dom(path.as_uri())
    for chart in ("importance", "ndcg", "coverage-latency", "moved"):
        start = dom.index(f'data-chart="{chart}"')
        figure = dom[start : dom.index("</figure>", start)]
        assert "<svg" in figure and figure.count("<path") >= 3, chart
    assert "tenant <b>globex</b>" in dom and "ALERT" in dom and ">s5<" in dom
    catalog = two_days.catalog()
    others = [
        r for t in ("acme", "initech") for r in read_explained(catalog, t)["request_id"].to_pylist()
    ]
    assert "acme" not in dom and "initech" not in dom
    assert not any(r in dom for r in others[:200])
    png = screenshot(path.as_uri(), tmp_path / "globex.png")
    assert png.stat().st_size > 20_000


# --- a real Prometheus -----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        body = response.read().decode()
    return json.loads(body) if "/api/" in url else body


def _wait(what: str, check: Any, timeout_s: float, proc: subprocess.Popen[bytes]) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what}: the process exited with {proc.returncode}")
        try:
            last = check()
            if last:
                return last
        except OSError as exc:
            last = exc
        time.sleep(1)
    pytest.fail(f"{what} not seen within {timeout_s:.0f} s (last: {last!r})")


def test_a_real_prometheus_scrapes_the_endpoint_and_fires_the_drift_rule(
    two_days: TwoDays, reports: dict[str, Any], tmp_path: Path
) -> None:
    if not PROMETHEUS.is_file():
        pytest.fail(f"no Prometheus at {PROMETHEUS}: run `infra/services.sh fetch prometheus`")
    from prometheus_client.parser import text_string_to_metric_families

    metrics_port, prom_port = _free_port(), _free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    serve = subprocess.Popen(
        [sys.executable, "-m", "whylake.jobs.cli", "metrics", "serve", "--port",
         str(metrics_port), "--home", str(two_days.home), *(f"--tenant={t}" for t in DEMO_TENANTS)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    rules = tmp_path / "rules.yml"
    rules.write_text(alerting_rules(load_monitor_config()))
    # Prometheus' own checker accepts the generated file (syntax, PromQL, templates).
    promtool = PROMETHEUS.with_name("promtool")
    if promtool.is_file():
        checked = subprocess.run([str(promtool), "check", "rules", str(rules)],
                                 capture_output=True, text=True, check=False)  # fmt: skip
        assert checked.returncode == 0, checked.stdout + checked.stderr
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: [{rules}]\n"
        "scrape_configs:\n"
        f"  - job_name: whylake\n    static_configs: [{{targets: ['127.0.0.1:{metrics_port}']}}]\n"
    )
    prometheus = subprocess.Popen(
        [str(PROMETHEUS), f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{prom_port}"],
        stdout=subprocess.DEVNULL, stderr=(tmp_path / "prometheus.log").open("w"),
    )  # fmt: skip
    try:
        text = _wait("the /metrics endpoint", lambda: _get(f"http://127.0.0.1:{metrics_port}/metrics"),
                     240, serve)  # fmt: skip
        families = {f.name: f for f in text_string_to_metric_families(text)}
        drift = {
            s.labels["tenant"]: s.value for s in families["whylake_attribution_drift_alert"].samples
        }
        assert drift == {"acme": 0.0, "globex": 1.0, "initech": 0.0}
        assert "whylake_explanation_latency_seconds" in families
        base = f"http://127.0.0.1:{prom_port}"
        _wait("Prometheus ready", lambda: _get(f"{base}/-/ready"), 60, prometheus)
        groups = _wait("the rules loaded", lambda: _get(f"{base}/api/v1/rules")["data"]["groups"],
                       60, prometheus)  # fmt: skip
        assert all(r["health"] in ("ok", "unknown") for g in groups for r in g["rules"])

        def firing() -> list[dict[str, Any]]:
            alerts = _get(f"{base}/api/v1/alerts")["data"]["alerts"]
            return [a for a in alerts if a["labels"]["alertname"] == "WhylakeAttributionDrift"]

        drift_alerts = _wait("the drift alert firing", firing, 120, prometheus)
        assert {a["labels"]["tenant"] for a in drift_alerts} == {"globex"}
        everything = _get(f"{base}/api/v1/alerts")["data"]["alerts"]
        assert {a["labels"]["tenant"] for a in everything} == {"globex"}
        assert all(r["health"] == "ok" for g in _get(f"{base}/api/v1/rules")["data"]["groups"]
                   for r in g["rules"])  # fmt: skip
    finally:
        for proc in (prometheus, serve):
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
