"""`whylake monitor` (SLIs, drift, burn rates, alerts) and `whylake metrics serve|rules`."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from whylake.jobs.output import console
from whylake.schemas.errors import ConfigError

app = typer.Typer(
    help="SLIs, attribution drift, SLO burn rates and alerts of one tenant.",
    invoke_without_command=True,
    pretty_exceptions_enable=False,
)
metrics_app = typer.Typer(
    help="Prometheus: the exposition endpoint and its alerting rules.", no_args_is_help=True
)

Home = Annotated[Path | None, typer.Option("--home", help="Embedded catalog/registry folder")]
SloFile = Annotated[
    Path | None, typer.Option("--slo", help="Monitoring settings YAML (default: the shipped one)")
]
OUTPUTS = ("table", "json")


def _day(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter(f"{option} {value!r} is not a day, e.g. 2026-11-21") from exc


class _References:
    """The registered reference rows of each model version, explained once per process."""

    def __init__(self, registry_root: str) -> None:
        self.registry_root = registry_root

    @lru_cache(maxsize=64)  # noqa: B019 - one instance per command run
    def __call__(self, tenant: str, model_id: str, version: str) -> Any:
        from whylake.schemas.errors import ModelNotFoundError
        from whylake.transforms.reference import registration_reference

        try:
            return registration_reference(self.registry_root, tenant, model_id, version)
        except ModelNotFoundError:
            return None


def evaluate_tenant(
    tenant: str,
    *,
    home: Path | None = None,
    slo: Path | None = None,
    model: str | None = None,
    since: date | None = None,
    until: date | None = None,
    record: bool = True,
    references: _References | None = None,
) -> Any:
    """Evaluate one tenant and (by default) append the alerts it raises to whylake.alerts."""
    from whylake.jobs import options
    from whylake.lake.catalog import ensure_tables, open_catalog
    from whylake.lake.metrics import append_alerts
    from whylake.monitor.config import load_monitor_config
    from whylake.monitor.evaluate import evaluate
    from whylake.pipelines.configs import new_run_id
    from whylake.schemas.ids import check_tenant

    check_tenant(tenant)
    catalog = open_catalog(options.catalog_config(home))
    ensure_tables(catalog)
    config = load_monitor_config(slo)
    references = references or _References(options.registry_root(None, home))
    report = evaluate(catalog, tenant, config, references, model=model, since=since, until=until)
    if record and report.alerts:
        append_alerts(catalog, list(report.alerts), run_id=new_run_id("monitor"))
    return report


@app.callback()
def monitor(
    ctx: typer.Context,
    tenant: Annotated[str, typer.Option(help="The tenant to report on (only its rows are read)")],
    model: Annotated[str | None, typer.Option(help="Only this model id")] = None,
    since: Annotated[str | None, typer.Option(help="First day, YYYY-MM-DD")] = None,
    until: Annotated[str | None, typer.Option(help="Last day, YYYY-MM-DD")] = None,
    output: Annotated[str, typer.Option(help="table or json")] = "table",
    html: Annotated[Path | None, typer.Option(help="Also write the HTML report here")] = None,
    slo: SloFile = None,
    record: Annotated[
        bool, typer.Option(help="Append the alerts raised to whylake.alerts (idempotent)")
    ] = True,
    home: Home = None,
) -> None:
    """Coverage, latency, error rate, cost, drift (nDCG, moved features), burn rates, alerts."""
    if ctx.invoked_subcommand is not None:
        return
    if output not in OUTPUTS:
        raise typer.BadParameter(f"--output must be one of {', '.join(OUTPUTS)}")
    report = evaluate_tenant(
        tenant,
        home=home,
        slo=slo,
        model=model,
        since=_day(since, "--since"),
        until=_day(until, "--until"),
        record=record,
    )
    if output == "json":
        sys.stdout.write(json.dumps(report_json(report), indent=2, default=str) + "\n")
    else:
        print_report(report)
    if html is not None:
        from whylake.views.monitor_report import write_monitor_report

        write_monitor_report(report, html)
        console.print(f"[green]monitoring report written to {html}[/green]", highlight=False)


def report_json(report: Any) -> dict[str, Any]:
    """The JSON `--output json` prints: per-day objects (the documented keys), alerts, burn."""
    burn = []
    for day in report.days:
        for rate in day.burn_rates:
            if rate.rate is not None:
                burn.append(
                    {
                        "model_id": day.figures.model_id,
                        "model_version": day.figures.model_version,
                        "day": day.figures.day.isoformat(),
                        "slo": rate.slo,
                        "window_s": int(rate.window.total_seconds()),
                        "burn_rate": rate.rate,
                    }
                )
    return {
        "tenant_id": report.tenant_id,
        "settings": {"version": report.config_version, "sha256": report.config_hash},
        "explanations_snapshot_id": report.explanations_snapshot_id,
        "days": [day.summary() for day in report.days],
        "alerts": [
            {
                **{k: a[k] for k in ("alert_id", "kind", "slo", "severity", "summary")},
                "model_id": a["model_id"],
                "model_version": a["model_version"],
                "day": a["day"].isoformat(),
                "example_request_ids": a["example_request_ids"],
                "evidence": json.loads(a["evidence"]),
            }
            for a in report.alerts
        ],
        "burn_rates": burn,
    }


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def print_report(report: Any) -> None:
    """The table view: one line per model version and day, then the alerts."""
    from rich import box

    table = Table(title=f"whylake monitor: tenant {report.tenant_id}", box=box.SIMPLE_HEAD)
    for col in ("model", "day", "coverage", "p99 lat.", "errors", "cost", "nDCG", "drift",
                "moved"):  # fmt: skip
        table.add_column(col, justify="left" if col in ("model", "moved") else "right")
    for day in report.days:
        f, d = day.figures, day.drift
        tested = d is not None and d.verdict == "tested"
        table.add_row(
            f"{f.model_id}/{f.model_version}",
            f.day.isoformat(),
            _pct(f.coverage),
            "-" if f.latency_p99_s is None else f"{f.latency_p99_s / 3600:.1f}h",
            _pct(f.error_rate),
            "-" if f.cost_per_explanation_s is None else f"{1000 * f.cost_per_explanation_s:.2f}ms",
            f"{d.ndcg:.3f}" if tested and d else "-",
            ("[red]ALERT[/red]" if d.alert else "ok") if d is not None else "-",
            ", ".join(d.top_moved_features) if d is not None else "",
        )
    # Logs and pipes get 80 columns by default: too narrow for one line per day.
    out = console if console.is_terminal else Console(width=120)
    out.print(table)
    if not report.alerts:
        out.print(f"{report.tenant_id}: no alert", highlight=False)
    for a in report.alerts:
        style = "red" if a["severity"] == "page" else "yellow"
        out.print(f"[{style}]{a['severity']}[/{style}] {a['summary']}", highlight=False)
        for r in a["example_request_ids"][:2]:
            out.print(
                f"    whylake reconstruct --tenant {a['tenant_id']} --request-id {r}",
                highlight=False,
            )


@metrics_app.command("serve")
def serve(
    port: Annotated[int, typer.Option(help="Port of the /metrics endpoint")] = 9464,
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    tenant: Annotated[
        list[str] | None,
        typer.Option(help="Tenant to expose (repeatable; default: every tenant in the policy)"),
    ] = None,
    refresh_s: Annotated[float, typer.Option(help="Re-read the tables at most this often")] = 60.0,
    days: Annotated[int, typer.Option(help="Evaluate this many days back from today")] = 35,
    slo: SloFile = None,
    home: Home = None,
) -> None:
    """Serve the monitoring figures in Prometheus' exposition format until interrupted."""
    from prometheus_client import start_http_server
    from prometheus_client.registry import CollectorRegistry

    from whylake.monitor.exposition import MonitorCollector

    tenants = list(tenant or _policy_tenants())
    if not tenants:
        raise ConfigError("no tenant to expose: give --tenant (repeatable)")
    if refresh_s <= 0 or days < 1:
        raise ConfigError(f"--refresh-s and --days must be positive, got {refresh_s}, {days}")
    cache = _Snapshot(tenants, home, slo, refresh_s, days)
    registry = CollectorRegistry()
    registry.register(MonitorCollector(cache.reports))
    server, thread = start_http_server(port, addr=host, registry=registry)
    console.print(
        f"serving whylake metrics for {', '.join(tenants)} on http://{host}:{port}/metrics",
        highlight=False,
    )
    try:
        while thread.is_alive():
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()


class _Snapshot:
    """The reports of the exposed tenants, re-evaluated at most every `refresh_s` seconds."""

    def __init__(
        self,
        tenants: Sequence[str],
        home: Path | None,
        slo: Path | None,
        refresh_s: float,
        days: int,
    ) -> None:
        from whylake.jobs import options

        self.tenants, self.home, self.slo, self.refresh_s = list(tenants), home, slo, refresh_s
        self.days = days
        # The registered reference rows are explained once, not on every refresh.
        self.references = _References(options.registry_root(None, home))
        self._lock = threading.Lock()
        self._at = -float("inf")
        self._reports: list[Any] = []

    def reports(self) -> list[Any]:
        with self._lock:
            if time.monotonic() - self._at >= self.refresh_s:
                # Read-only: a scrape never writes alerts (`whylake monitor` records them).
                since = datetime.now(UTC).date() - timedelta(days=self.days)
                self._reports = [
                    evaluate_tenant(t, home=self.home, slo=self.slo, since=since, record=False,
                                    references=self.references)
                    for t in self.tenants
                ]  # fmt: skip
                self._at = time.monotonic()
            return self._reports


def _policy_tenants() -> list[str]:
    from whylake.transforms.sampling.policy import default_policy_file, load_policies

    return sorted(load_policies(default_policy_file()).tenants)


@metrics_app.command("rules")
def rules(
    out: Annotated[Path | None, typer.Option(help="Write here (default: stdout)")] = None,
    slo: SloFile = None,
) -> None:
    """Print the Prometheus alerting rules for the exposed gauges (multi-window burn rates)."""
    from whylake.monitor.config import load_monitor_config
    from whylake.monitor.exposition import alerting_rules

    text = alerting_rules(load_monitor_config(slo))
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text, encoding="utf-8")
        console.print(f"rules written to {out}", highlight=False)
