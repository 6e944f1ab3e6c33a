"""The whylake command line: batch job, tenant-scoped SQL, reconstruction, runs, demo."""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated

import click
import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help="whylake: an audit trail of why each sampled prediction came out as it did.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
console = Console()

DEFAULT_POLICY = str(Path(__file__).resolve().parent.parent / "schemas/policies/default.yaml")
Home = Annotated[
    Path | None,
    typer.Option(
        "--home",
        envvar="WHYLAKE_HOME",
        help="Embedded catalog + warehouse folder (default ./.whylake); ignored when pyiceberg's "
        "config (~/.pyiceberg.yaml or PYICEBERG_CATALOG__WHYLAKE__*) names the catalog.",
    ),
]

# Options the batch and the streaming job share.
Policy = Annotated[str, typer.Option(help="Sampling policy YAML")]
Registry = Annotated[
    Path | None, typer.Option(help="Model registry folder (default <home>/models)")
]
Device = Annotated[str | None, typer.Option(help="cpu or cuda (default: cuda if present)")]
IgSteps = Annotated[int, typer.Option(help="Integrated Gradients steps")]
Shap = Annotated[bool, typer.Option(help="Also compute SHAP values")]


def _parse_time(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise typer.BadParameter(
            f"{value!r} is not an ISO-8601 time, e.g. 2026-11-21T12:00:00Z"
        ) from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _catalog(home: Path | None):  # type: ignore[no-untyped-def]
    from lake.catalog import CatalogConfig, ensure_tables, open_catalog

    catalog = open_catalog(CatalogConfig(home=home))
    ensure_tables(catalog)
    return catalog


@app.command()
def batch(
    input: Annotated[
        list[str], typer.Option("--input", "-i", help="JSONL/Parquet paths or globs (repeatable)")
    ],
    day: Annotated[str | None, typer.Option("--date", help="Only this UTC day, YYYY-MM-DD")] = None,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's records")] = None,
    runner: Annotated[
        str,
        typer.Option(
            help="Beam runner: FnApiRunner (local, default), "
            "FlinkRunner, DataflowRunner, SparkRunner, ..."
        ),
    ] = "FnApiRunner",
    runner_arg: Annotated[
        list[str] | None,
        typer.Option(
            "--runner-arg",
            help="Extra Beam pipeline option, e.g. --runner-arg=--flink_master=host:8081",
        ),
    ] = None,
    policy: Policy = DEFAULT_POLICY,
    registry: Registry = None,
    device: Device = None,
    ig_steps: IgSteps = 50,
    shap: Shap = True,
    opensearch_url: Annotated[
        str | None,
        typer.Option(
            envvar="WHYLAKE_OPENSEARCH_URL",
            help="Hot replica (e.g. https://search:9200); auth/TLS from WHYLAKE_OPENSEARCH_*",
        ),
    ] = None,
    home: Home = None,
) -> None:
    """Explain a day of inference logs and append the records to Iceberg."""
    from jobs.batch_job import run_batch
    from lake.catalog import CatalogConfig, default_home
    from pipelines.batch import BatchJobConfig
    from transforms.explainers.records import ExplainConfig
    from transforms.sampling.policy import load_policies
    from transforms.write_opensearch import OpenSearchConfig

    home_dir = (home or default_home()).resolve()
    config = BatchJobConfig(
        inputs=tuple(input),
        registry_root=str(registry or home_dir / "models"),
        policies=load_policies(policy),
        catalog=CatalogConfig(home=home_dir),
        explain=ExplainConfig(ig_steps=ig_steps, shap=shap),
        day=date.fromisoformat(day) if day else None,
        tenant=tenant,
        device=device,
        runner=runner,
        runner_args=tuple(runner_arg or ()),
        opensearch=OpenSearchConfig.from_env(opensearch_url),
    )
    summary = run_batch(config, console=console)
    if summary.status == "failed":
        raise typer.Exit(code=1)


@app.command()
def stream(
    topic: Annotated[str, typer.Option(help="Kafka topic of inference records (JSON values)")],
    bootstrap_servers: Annotated[
        str, typer.Option(envvar="WHYLAKE_KAFKA_BOOTSTRAP", help="Kafka brokers, host:port,...")
    ] = "127.0.0.1:9092",
    group_id: Annotated[
        str, typer.Option(help="Consumer group whose offsets the job commits")
    ] = "whylake-stream",
    runner: Annotated[
        str, typer.Option(help="PrismRunner (default), or a portable runner via --runner-arg")
    ] = "PrismRunner",
    prism_location: Annotated[
        str | None,
        typer.Option(help="Local Prism binary (default .infra/cache/prism/v2.77.0/bin/prism)"),
    ] = None,
    runner_arg: Annotated[
        list[str] | None,
        typer.Option("--runner-arg", help="Extra Beam pipeline option (repeatable)"),
    ] = None,
    window_s: Annotated[float, typer.Option(help="Event-time window length, seconds")] = 5.0,
    allowed_lateness_s: Annotated[
        float, typer.Option(help="How late a record may be and still be explained, seconds")
    ] = 30.0,
    policy: Policy = DEFAULT_POLICY,
    registry: Registry = None,
    device: Device = None,
    ig_steps: IgSteps = 50,
    shap: Shap = True,
    opensearch_url: Annotated[
        str | None,
        typer.Option(envvar="WHYLAKE_OPENSEARCH_URL", help="Hot replica, written after Iceberg"),
    ] = None,
    max_runtime_s: Annotated[
        float | None, typer.Option(help="Stop after this many seconds (default: run until Ctrl-C)")
    ] = None,
    kafka_config: Annotated[
        list[str] | None,
        typer.Option(
            help="librdkafka setting key=value (repeatable), e.g. "
            "security.protocol=SASL_SSL, sasl.mechanism=SCRAM-SHA-512"
        ),
    ] = None,
    home: Home = None,
) -> None:
    """Explain a Kafka topic continuously: windows -> sample -> explain -> Iceberg -> OpenSearch."""
    from jobs.stream_job import run_stream
    from lake.catalog import CatalogConfig, default_home
    from pipelines.streaming import StreamJobConfig
    from transforms.explainers.records import ExplainConfig
    from transforms.sampling.policy import load_policies
    from transforms.write_opensearch import OpenSearchConfig

    home_dir = (home or default_home()).resolve()
    config = StreamJobConfig(
        topic=topic,
        bootstrap_servers=bootstrap_servers,
        group_id=group_id,
        registry_root=str(registry or home_dir / "models"),
        policies=load_policies(policy),
        catalog=CatalogConfig(home=home_dir),
        explain=ExplainConfig(ig_steps=ig_steps, shap=shap),
        opensearch=OpenSearchConfig.from_env(opensearch_url),
        device=device,
        window_s=window_s,
        allowed_lateness_s=allowed_lateness_s,
        runner=runner,
        prism_location=prism_location,
        runner_args=tuple(runner_arg or ()),
        kafka_config=tuple(_key_value(kv) for kv in kafka_config or ()),
    )
    summary = run_stream(config, console=console, max_runtime_s=max_runtime_s)
    if "FAILED" in summary.state:
        raise typer.Exit(code=1)


@app.command()
def sql(
    query: Annotated[str, typer.Argument(help="One SELECT over explanations / dead_letters")],
    tenant: Annotated[str, typer.Option(help="The tenant whose rows the query may see")],
    as_of: Annotated[
        str | None, typer.Option(help="Time travel: the tables as of this time")
    ] = None,
    snapshot_id: Annotated[int | None, typer.Option(help="Time travel: this snapshot")] = None,
    output: Annotated[str, typer.Option(help="table, json or csv")] = "table",
    home: Home = None,
) -> None:
    """Run one read-only SQL query (DuckDB) scoped to one tenant."""
    from lake.audit import run_tenant_sql

    result = run_tenant_sql(
        _catalog(home),
        tenant,
        query,
        as_of=_parse_time(as_of) if as_of else None,
        snapshot_id=snapshot_id,
    )
    _print_arrow(result, output)


@app.command()
def reconstruct(
    tenant: Annotated[str, typer.Option(help="The tenant that owns the request")],
    request_id: Annotated[str, typer.Option(help="The request to reconstruct")],
    as_of: Annotated[str | None, typer.Option(help="The record as it stood at this time")] = None,
    snapshot_id: Annotated[int | None, typer.Option(help="... or at this snapshot")] = None,
    html: Annotated[Path | None, typer.Option(help="Also write a one-page HTML report")] = None,
    home: Home = None,
) -> None:
    """Print an explanation record as it stood at a past time or snapshot, as JSON."""
    from lake.reconstruct import reconstruct as rebuild
    from lake.reconstruct import to_json

    rec = rebuild(
        _catalog(home),
        tenant,
        request_id,
        as_of=_parse_time(as_of) if as_of else None,
        snapshot_id=snapshot_id,
    )
    typer.echo(to_json(rec))
    if html:
        from lake.report import write_html_report

        write_html_report(rec, html)
        console.print(f"[green]report written to {html}[/green]", highlight=False)


@app.command()
def runs(
    limit: Annotated[int, typer.Option(help="How many runs, newest first")] = 20,
    home: Home = None,
) -> None:
    """Show the run manifest."""
    from lake.runs import list_runs

    table = Table(title="whylake runs")
    for col in (
        "run_id",
        "status",
        "started_at",
        "elapsed_s",
        "read",
        "invalid",
        "sampled",
        "explained",
        "committed",
        "snapshots",
    ):
        table.add_column(col)
    for r in list_runs(_catalog(home), limit):
        table.add_row(
            r["run_id"],
            r["status"],
            r["started_at"].isoformat(timespec="seconds"),
            f"{r['elapsed_s']:.1f}",
            str(r["records_read"]),
            str(r["records_invalid"]),
            str(r["records_sampled"]),
            str(r["records_explained"]),
            str(r["records_committed"]),
            ",".join(map(str, r["snapshot_ids"])),
        )
    console.print(table)


replica = typer.Typer(
    help="The OpenSearch hot replica (rebuildable from Iceberg).", no_args_is_help=True
)
app.add_typer(replica, name="replica")
OpenSearchUrl = Annotated[
    str | None,
    typer.Option("--opensearch-url", envvar="WHYLAKE_OPENSEARCH_URL", help="The replica's URL"),
]


def _opensearch(url: str | None):  # type: ignore[no-untyped-def]
    from transforms.write_opensearch import OpenSearchConfig

    config = OpenSearchConfig.from_env(url)
    if config is None:
        raise typer.BadParameter("give --opensearch-url or set WHYLAKE_OPENSEARCH_URL")
    return config


@replica.command("retention")
def replica_retention(
    days: Annotated[int, typer.Option(help="Keep this many days")] = 30,
    opensearch_url: OpenSearchUrl = None,
) -> None:
    """Delete replica indices older than --days (Iceberg keeps everything)."""
    from lake.replica import retention

    deleted = retention(_opensearch(opensearch_url), days)
    console.print(
        f"deleted {len(deleted)} indices" + (": " + ", ".join(deleted) if deleted else "")
    )


@replica.command("backfill")
def replica_backfill(
    since: Annotated[str, typer.Option(help="First event day to rebuild, YYYY-MM-DD")],
    tenant: Annotated[str | None, typer.Option(help="Only this tenant")] = None,
    opensearch_url: OpenSearchUrl = None,
    home: Home = None,
) -> None:
    """Rebuild the replica from Iceberg for events since a day (idempotent)."""
    from lake.replica import backfill

    outcome = backfill(
        _catalog(home), _opensearch(opensearch_url), date.fromisoformat(since), tenant
    )
    console.print(
        f"indexed {outcome.indexed:,} documents, {outcome.failed:,} failed"
        + (f" ({outcome.error})" if outcome.error else ""),
        highlight=False,
    )
    if outcome.failed:
        raise typer.Exit(code=1)


@app.command()
def search(
    tenant: Annotated[str, typer.Option(help="The tenant whose explanations to search")],
    request_id: Annotated[str | None, typer.Option(help="Exact request id")] = None,
    feature: Annotated[str | None, typer.Option(help="Rows where this feature mattered")] = None,
    min_abs_attribution: Annotated[float, typer.Option(help="... by at least this much")] = 0.0,
    since: Annotated[str | None, typer.Option(help="Events from this time")] = None,
    until: Annotated[str | None, typer.Option(help="Events before this time")] = None,
    size: Annotated[int, typer.Option(help="At most this many")] = 20,
    opensearch_url: OpenSearchUrl = None,
) -> None:
    """Search the hot replica (last 30 days), within one tenant."""
    from lake.replica import SearchQuery
    from lake.replica import search as run_search
    from transforms.write_opensearch import check_tenant

    hits = run_search(
        _opensearch(opensearch_url),
        SearchQuery(
            tenant_id=check_tenant(tenant),
            request_id=request_id,
            feature=feature,
            min_abs_attribution=min_abs_attribution,
            since=_parse_time(since) if since else None,
            until=_parse_time(until) if until else None,
            size=size,
        ),
    )
    typer.echo(json.dumps(hits, indent=2, sort_keys=True, default=str))


@app.command()
def demo(
    per_tenant: Annotated[int, typer.Option(help="Records per tenant")] = 5000,
    day: Annotated[
        str | None, typer.Option("--date", help="Day to generate (default yesterday)")
    ] = None,
    home: Home = None,
) -> None:
    """Train and register the demo models, generate a day of logs, run the job, show an audit."""
    from jobs.demo import run_demo

    run_demo(home, per_tenant, date.fromisoformat(day) if day else None, console)


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise typer.BadParameter(f"{text!r} is not key=value")
    return key.strip(), value.strip()


def _print_arrow(result, output: str) -> None:  # type: ignore[no-untyped-def]
    rows = result.to_pylist()
    if output == "json":
        typer.echo(json.dumps(rows, default=str, indent=2))
        return
    if output == "csv":
        import csv
        import sys

        writer = csv.DictWriter(sys.stdout, fieldnames=result.column_names)
        writer.writeheader()
        writer.writerows(rows)
        return
    table = Table()
    for name in result.column_names:
        table.add_column(name)
    for row in rows:
        table.add_row(*(str(row[c]) for c in result.column_names))
    console.print(table)


def main() -> None:
    """Entry point: domain errors print one clear line and exit 2, never a traceback."""
    import duckdb

    from schemas.errors import WhylakeError

    logging.basicConfig(level=os.environ.get("WHYLAKE_LOG", "WARNING"))
    try:
        app(standalone_mode=False)
    except (WhylakeError, ValueError, duckdb.Error) as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise SystemExit(2) from None
    except click.exceptions.ClickException as exc:
        exc.show()
        raise SystemExit(exc.exit_code) from None
    except click.exceptions.Abort:
        raise SystemExit(130) from None
    except click.exceptions.Exit as exc:
        raise SystemExit(exc.exit_code) from None


if __name__ == "__main__":
    main()
