"""The whylake command line: each command parses its options, builds configs, calls one job.

A group of commands (`whylake models ...`, `whylake replica ...`) lives in a module of its
own, `jobs/<group>_commands.py` with a `typer.Typer` named `app`, added below with one
`app.add_typer(...)` line; settings always go through `whylake.jobs.options`.
"""

from __future__ import annotations

import json
import logging
import os
import traceback
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from whylake.jobs import compact_commands, keys_commands, policy_commands, review_commands
from whylake.jobs.maintenance_commands import app as maintenance_app
from whylake.jobs.output import OUTPUTS, console, print_arrow
from whylake.schemas.errors import ConfigError, WhylakeError

app = typer.Typer(
    help="whylake: an audit trail of why each sampled prediction came out as it did.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
_state = {"debug": False}


@app.callback()
def _options(
    debug: Annotated[
        bool,
        typer.Option(
            "--debug", envvar="WHYLAKE_DEBUG", help="Show the full traceback of any error"
        ),
    ] = False,
) -> None:
    _state["debug"] = _state["debug"] or debug


Home = Annotated[
    Path | None,
    typer.Option(
        "--home",
        help="Embedded catalog + warehouse + registry folder (default $WHYLAKE_HOME or "
        "./.whylake); the catalog is ignored when pyiceberg's config (~/.pyiceberg.yaml or "
        "PYICEBERG_CATALOG__WHYLAKE__*) names one.",
    ),
]
# Options the batch and the streaming job share.
Policy = Annotated[
    Path | None, typer.Option(help="Sampling policy YAML (default: the shipped one)")
]
ExplanationPolicy = Annotated[
    Path | None,
    typer.Option(
        help="Explanation policy YAML: explainers by trust tier and risk, review thresholds, "
        "templates (default: the shipped one)"
    ),
]
Registry = Annotated[
    Path | None, typer.Option(help="Model registry folder (default <home>/models)")
]
Device = Annotated[str | None, typer.Option(help="cpu or cuda (default: cuda if present)")]
IgSteps = Annotated[
    int,
    typer.Option(help="Integrated Gradients steps to start from (doubled per row until converged)"),
]
IgTolerance = Annotated[
    float,
    typer.Option(
        help="IG steps are doubled per row until its attributions move by at most this share "
        "of its largest one (0.005: 0.5%); recorded per row as ig_convergence"
    ),
]
IgMaxSteps = Annotated[
    int,
    typer.Option(help="No row's IG goes past this many steps (one still moving is dead-lettered)"),
]
PiiField = Annotated[
    list[str] | None,
    typer.Option(
        "--pii-field",
        help="Another personal field of the records: dead letters keep only its keyed hash, "
        "<field>_hash (repeatable; user_id always is)",
    ),
]
Shap = Annotated[bool, typer.Option(help="Also compute SHAP values")]
HashKeyFile = Annotated[
    Path | None,
    typer.Option(help="File holding the user-id hash key (default: $WHYLAKE_HASH_KEY)"),
]
InsecureDemoKey = Annotated[
    bool,
    typer.Option(
        "--insecure-demo-hash-key",
        help="Hash user ids with the public demo key (reversible by anyone): trials only",
    ),
]
OpenSearchUrl = Annotated[
    str | None,
    typer.Option(
        "--opensearch-url",
        help="Hot replica, e.g. https://search:9200 (default $WHYLAKE_OPENSEARCH_URL); "
        "auth/TLS from WHYLAKE_OPENSEARCH_*",
    ),
]
RunnerArgs = Annotated[
    list[str] | None,
    typer.Option("--runner-arg", help="Extra Beam pipeline option, e.g. --runner-arg=--x=y"),
]


def _parse_time(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise typer.BadParameter(
            f"{value!r} is not an ISO-8601 time, e.g. 2026-11-21T12:00:00Z"
        ) from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _parse_day(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter(f"{option} {value!r} is not a day, e.g. 2026-11-21") from exc


def _catalog(home: Path | None) -> Any:
    from whylake.jobs.options import catalog_config, retention
    from whylake.lake.catalog import ensure_tables, open_catalog

    catalog = open_catalog(catalog_config(home))
    ensure_tables(catalog, retention())
    return catalog


def _store(prefix: str, o: dict[str, Any]) -> Any:
    """The shared StoreConfig from the options both job commands declare (their locals())."""
    from whylake.jobs import options
    from whylake.pipelines.configs import StoreConfig, new_run_id
    from whylake.schemas.pii import DEFAULT_PII_FIELDS
    from whylake.transforms.explainers.config import ExplainConfig
    from whylake.transforms.sampling.policy import default_policy_file, load_policies

    return StoreConfig(
        registry_root=options.registry_root(o["registry"], o["home"]),
        policies=load_policies(o["policy"] or default_policy_file()),
        hash_key=options.hash_key(
            o["hash_key_file"], insecure_demo_key=o["insecure_demo_hash_key"]
        ),
        catalog=options.catalog_config(o["home"]),
        explain=ExplainConfig(
            ig_steps=o["ig_steps"],
            shap=o["shap"],
            ig_tolerance=o["ig_tolerance"],
            ig_max_steps=o["ig_max_steps"],
        ),
        pii_fields=tuple(dict.fromkeys((*DEFAULT_PII_FIELDS, *(o["pii_field"] or ())))),
        device=o["device"],
        opensearch=options.opensearch_config(o["opensearch_url"]),
        run_id=new_run_id(prefix),
        explanation_policies=options.explanation_policies(o["explanation_policy"]),
        retention=options.retention(),
        failpoints=options.failpoints(),
    )


@app.command()
def batch(
    input: Annotated[
        list[str], typer.Option("--input", "-i", help="JSONL/Parquet paths or globs (repeatable)")
    ],
    day: Annotated[str | None, typer.Option("--date", help="Only this UTC day, YYYY-MM-DD")] = None,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's records")] = None,
    runner: Annotated[
        str,
        typer.Option(help="Beam runner: FnApiRunner (local), FlinkRunner, DataflowRunner, ..."),
    ] = "FnApiRunner",
    runner_arg: RunnerArgs = None,
    policy: Policy = None,
    explanation_policy: ExplanationPolicy = None,
    registry: Registry = None,
    device: Device = None,
    ig_steps: IgSteps = 50,
    ig_tolerance: IgTolerance = 0.005,
    ig_max_steps: IgMaxSteps = 3200,
    shap: Shap = True,
    pii_field: PiiField = None,
    max_failed_share: Annotated[
        float,
        typer.Option(help="Fail the run (exit 1) when more of the sampled records fail to explain"),
    ] = 0.05,
    hash_key_file: HashKeyFile = None,
    insecure_demo_hash_key: InsecureDemoKey = False,
    opensearch_url: OpenSearchUrl = None,
    storage_option: Annotated[
        list[str] | None,
        typer.Option(
            help="File-system setting for the inputs, key=value (repeatable; pyiceberg FileIO "
            "names, e.g. s3.endpoint=http://host:9000, s3.region=eu-west-1); defaults to the "
            "catalog's s3./gcs./adls. properties"
        ),
    ] = None,
    home: Home = None,
) -> None:
    """Explain a day of inference logs (local, s3:// or gs:// files) and append them to Iceberg."""
    options_given = dict(locals())
    from whylake.jobs import options
    from whylake.jobs.batch_job import run_batch
    from whylake.pipelines.configs import BatchJobConfig

    store = _store("run", options_given)
    config = BatchJobConfig(
        inputs=tuple(input),
        store=store,
        storage=options.storage_config(store.catalog, storage_option or ()),
        day=_parse_day(day, "--date"),
        tenant=tenant,
        runner=runner,
        runner_args=tuple(runner_arg or ()),
        max_failed_share=max_failed_share,
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
        typer.Option(help="Local Prism binary (default $WHYLAKE_PRISM_LOCATION, or make up's)"),
    ] = None,
    runner_arg: RunnerArgs = None,
    window_s: Annotated[
        float,
        typer.Option(
            help="Event-time window, seconds: the latency trade-off (a record commits up to "
            "this + 1 s after its event; shorter windows mean more, smaller commits and "
            "sampling strata)"
        ),
    ] = 5.0,
    allowed_lateness_s: Annotated[
        float,
        typer.Option(
            help="How late a record may be and still be explained, seconds; later ones are "
            "dead-lettered (stage late)"
        ),
    ] = 30.0,
    poll_s: Annotated[
        float,
        typer.Option(
            help="How long one poll collects messages, seconds: one validation call each "
            "(longer: less CPU per record, up to this much more latency)"
        ),
    ] = 0.5,
    policy: Policy = None,
    explanation_policy: ExplanationPolicy = None,
    registry: Registry = None,
    device: Device = None,
    ig_steps: IgSteps = 50,
    ig_tolerance: IgTolerance = 0.005,
    ig_max_steps: IgMaxSteps = 3200,
    shap: Shap = True,
    pii_field: PiiField = None,
    hash_key_file: HashKeyFile = None,
    insecure_demo_hash_key: InsecureDemoKey = False,
    opensearch_url: OpenSearchUrl = None,
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
    options_given = dict(locals())
    from whylake.jobs import options
    from whylake.jobs.stream_job import run_stream
    from whylake.pipelines.configs import StreamJobConfig

    config = StreamJobConfig(
        topic=topic,
        store=_store("stream", options_given),
        bootstrap_servers=bootstrap_servers,
        group_id=group_id,
        window_s=window_s,
        allowed_lateness_s=allowed_lateness_s,
        poll_s=poll_s,
        runner=runner,
        prism_location=options.prism_location(prism_location) if runner == "PrismRunner" else None,
        runner_args=tuple(runner_arg or ()),
        kafka_config=options.key_values(kafka_config or ()),
    )
    summary = run_stream(config, console=console, max_runtime_s=max_runtime_s)
    if summary.status == "failed":
        raise typer.Exit(code=1)


@app.command()
def sql(
    query: Annotated[
        str, typer.Argument(help="One SELECT over explanations / dead_letters / runs")
    ],
    tenant: Annotated[str, typer.Option(help="The tenant whose rows the query may see")],
    as_of: Annotated[
        str | None, typer.Option(help="Time travel: the tables as of this time")
    ] = None,
    snapshot_id: Annotated[int | None, typer.Option(help="Time travel: this snapshot")] = None,
    since: Annotated[
        str | None,
        typer.Option(help="Only rows whose event time is at or after this (prunes day partitions)"),
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Only rows whose event time is before this")
    ] = None,
    timeout_s: Annotated[
        float | None,
        typer.Option(
            help="Stop the query after this many seconds (default $WHYLAKE_SQL_TIMEOUT_S or 60)"
        ),
    ] = None,
    memory_limit: Annotated[
        str | None,
        typer.Option(
            help="DuckDB memory limit, e.g. 2GB (default $WHYLAKE_SQL_MEMORY_LIMIT or 1GB)"
        ),
    ] = None,
    threads: Annotated[
        int | None, typer.Option(help="DuckDB threads (default $WHYLAKE_SQL_THREADS or 2)")
    ] = None,
    max_rows: Annotated[
        int | None,
        typer.Option(
            help="Refuse results longer than this (default $WHYLAKE_SQL_MAX_ROWS or 100000)"
        ),
    ] = None,
    output: Annotated[str, typer.Option(help="table, json or csv")] = "table",
    home: Home = None,
) -> None:
    """Run one read-only SQL query (DuckDB) scoped to one tenant, within time and memory limits."""
    from whylake.jobs.options import sql_limits
    from whylake.lake.audit import run_tenant_sql

    if output not in OUTPUTS:
        raise typer.BadParameter(f"--output must be one of {', '.join(OUTPUTS)}")
    result = run_tenant_sql(
        _catalog(home),
        tenant,
        query,
        as_of=_parse_time(as_of) if as_of else None,
        snapshot_id=snapshot_id,
        since=_parse_time(since) if since else None,
        until=_parse_time(until) if until else None,
        limits=sql_limits(timeout_s, memory_limit, threads, max_rows),
    )
    print_arrow(result, output)


Tier = Annotated[
    int | None,
    typer.Option(
        min=1,
        max=4,
        help="Print this tier's view: 1 affected person, 2 operator, 3 auditor, 4 raw record",
    ),
]
Lang = Annotated[str, typer.Option(help="Language of the wording (templates ship en)")]
TemplateVersion = Annotated[
    str | None,
    typer.Option(help="Word the view with this template version (default: the record's own)"),
]


def _reconstructed(
    catalog: Any, tenant: str, request_id: str, as_of: str | None, snapshot_id: int | None = None
) -> Any:
    """The record as it stood at `as_of` (or `snapshot_id`), with its latest human review."""
    from whylake.lake.reconstruct import reconstruct as rebuild
    from whylake.lake.reviews import with_reviews

    when = _parse_time(as_of) if as_of else None
    return with_reviews(
        catalog, rebuild(catalog, tenant, request_id, as_of=when, snapshot_id=snapshot_id)
    )


@app.command()
def reconstruct(
    tenant: Annotated[str, typer.Option(help="The tenant that owns the request")],
    request_id: Annotated[str, typer.Option(help="The request to reconstruct")],
    as_of: Annotated[str | None, typer.Option(help="The record as it stood at this time")] = None,
    snapshot_id: Annotated[int | None, typer.Option(help="... or at this snapshot")] = None,
    tier: Tier = None,
    lang: Lang = "en",
    template_version: TemplateVersion = None,
    html: Annotated[
        Path | None, typer.Option(help="Also write a one-page HTML report of the tier (default 3)")
    ] = None,
    explanation_policy: ExplanationPolicy = None,
    home: Home = None,
) -> None:
    """Print an explanation record as it stood at a past time or snapshot (JSON, or a tier)."""
    from whylake.jobs.options import explanation_policies
    from whylake.lake.reconstruct import to_json

    rec = _reconstructed(_catalog(home), tenant, request_id, as_of, snapshot_id)
    policies = explanation_policies(explanation_policy)
    if tier is None:
        typer.echo(to_json(rec))
    else:
        from whylake.views.tiers import build_view

        view = build_view(
            rec, tier, policies=policies, lang=lang, template_version=template_version
        )
        typer.echo(view.text.rstrip("\n"))
    if html:
        from whylake.views.report import write_html_report

        write_html_report(
            rec,
            html,
            tier or 3,
            policies=policies,
            lang=lang,
            template_version=template_version,
        )
        console.print(f"[green]report written to {html}[/green]", highlight=False)


@app.command()
def letter(
    tenant: Annotated[str, typer.Option(help="The tenant that made the decision")],
    request_id: Annotated[str, typer.Option(help="The request the letter explains")],
    out: Annotated[Path, typer.Option(help="letter.html or letter.pdf")],
    as_of: Annotated[str | None, typer.Option(help="The record as it stood at this time")] = None,
    lang: Lang = "en",
    template_version: TemplateVersion = None,
    chromium: Annotated[
        str | None, typer.Option(help="Browser that prints the PDF (default $WHYLAKE_CHROMIUM)")
    ] = None,
    explanation_policy: ExplanationPolicy = None,
    home: Home = None,
) -> None:
    """Write the one-page explanation letter for the affected person (HTML or PDF)."""
    from whylake.jobs import options
    from whylake.views.letter import LetterConfig, write_letter

    rec = _reconstructed(_catalog(home), tenant, request_id, as_of)
    path = write_letter(
        rec,
        out,
        LetterConfig(chromium=options.chromium_path(chromium)),
        policies=options.explanation_policies(explanation_policy),
        lang=lang,
        template_version=template_version,
    )
    console.print(f"[green]letter written to {path}[/green]", highlight=False)


@app.command()
def serve(
    keys: Annotated[
        Path | None,
        typer.Option(
            help="keys.yaml: sha256 of each API key -> tenant (default $WHYLAKE_API_KEYS)"
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8080,
    opensearch_url: OpenSearchUrl = None,
    explanation_policy: ExplanationPolicy = None,
    chromium: Annotated[
        str | None, typer.Option(help="Browser that prints letters (default $WHYLAKE_CHROMIUM)")
    ] = None,
    home: Home = None,
) -> None:
    """Serve the tenant-scoped HTTP API and the auditor page (FastAPI on uvicorn)."""
    import uvicorn

    from whylake.api.app import ApiConfig, create_app
    from whylake.api.keys import ApiKeys
    from whylake.jobs import options
    from whylake.views.letter import LetterConfig

    config = ApiConfig(
        catalog=options.catalog_config(home),
        keys=ApiKeys.load(options.api_keys_path(keys)),
        opensearch=options.opensearch_config(opensearch_url),
        policies=options.explanation_policies(explanation_policy),
        letter=LetterConfig(chromium=options.chromium_path(chromium)),
    )
    console.print(
        f"whylake API on http://{host}:{port}/ ({len(config.keys.grants)} keys; replica "
        f"{config.opensearch.url if config.opensearch else 'off'})",
        highlight=False,
    )
    uvicorn.run(create_app(config), host=host, port=port, log_level="warning")


@app.command()
def runs(
    limit: Annotated[int, typer.Option(help="How many runs, newest first")] = 20,
    home: Home = None,
) -> None:
    """Show the run manifest: each run's final status, or `started` if it never finished."""
    from whylake.lake.runs import list_runs

    table = Table(title="whylake runs")
    columns = ("run_id", "job", "status", "started_at", "elapsed_s", "read", "invalid")
    for col in (*columns, "sampled", "explained", "failed", "committed", "snapshots"):
        table.add_column(col)
    for r in list_runs(_catalog(home), limit):
        elapsed = r["elapsed_s"]
        table.add_row(
            str(r["run_id"]),
            str(r["job"]),
            str(r["status"]),
            r["started_at"].isoformat(timespec="seconds"),  # type: ignore[attr-defined]
            "-" if elapsed is None else f"{elapsed:.1f}",
            *(
                str(r[f"records_{k}"])
                for k in ("read", "invalid", "sampled", "explained", "failed", "committed")
            ),
            ",".join(map(str, r["snapshot_ids"])),  # type: ignore[call-overload]
        )
    console.print(table)


from whylake.jobs import models_commands  # noqa: E402 - command groups after the commands

app.add_typer(models_commands.app, name="models")

from whylake.jobs import monitor_commands  # noqa: E402

app.add_typer(monitor_commands.app, name="monitor")
app.add_typer(monitor_commands.metrics_app, name="metrics")

replica = typer.Typer(
    help="The OpenSearch hot replica (rebuildable from Iceberg).", no_args_is_help=True
)
app.add_typer(replica, name="replica")
app.add_typer(compact_commands.app, name="compact")
app.add_typer(review_commands.app, name="review")
app.add_typer(keys_commands.app, name="keys")
app.add_typer(policy_commands.app, name="policy")
app.add_typer(maintenance_app, name="maintenance")


def _opensearch(url: str | None) -> Any:
    from whylake.jobs.options import opensearch_config

    config = opensearch_config(url)
    if config is None:
        raise ConfigError("give --opensearch-url or set WHYLAKE_OPENSEARCH_URL")
    return config


@replica.command("retention")
def replica_retention(
    days: Annotated[int, typer.Option(help="Keep this many days")] = 30,
    opensearch_url: OpenSearchUrl = None,
) -> None:
    """Delete replica indices older than --days (Iceberg keeps everything)."""
    from whylake.lake.replica import retention

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
    from whylake.lake.replica import backfill

    first_day = _parse_day(since, "--since")
    assert first_day is not None
    outcome = backfill(_catalog(home), _opensearch(opensearch_url), first_day, tenant)
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
    from whylake.lake.replica import SearchQuery
    from whylake.lake.replica import search as run_search
    from whylake.schemas.ids import check_tenant

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
    """Demo models, two days of logs (one tenant drifts), batch runs, an audit, the monitor."""
    from whylake.jobs.demo import run_demo
    from whylake.jobs.options import home_dir

    run_demo(home_dir(home), per_tenant, _parse_day(day, "--date"), console)


def main() -> None:
    """Entry point: an error prints one clear line; --debug or WHYLAKE_DEBUG=1 the traceback.

    Exit codes: 0 success, 1 a failed run, an unexpected error or Ctrl-C, 2 a usage or user
    error (bad option, missing setting, refused query).
    """
    import duckdb

    logging.basicConfig(level=os.environ.get("WHYLAKE_LOG", "WARNING"))
    _state["debug"] = os.environ.get("WHYLAKE_DEBUG", "") not in ("", "0", "false")
    try:
        # Standalone: the CLI library prints usage errors (exit 2), turns typer.Exit into the
        # exit code and Ctrl-C into "Aborted!"; every other exception reaches the lines below.
        app()
    except (WhylakeError, duckdb.Error) as exc:
        _fail(exc, code=2, what="error")
    except Exception as exc:  # noqa: BLE001 - a bug: say so, and how to see where
        _fail(exc, code=1, what=f"unexpected error ({type(exc).__name__})")


def _fail(exc: BaseException, *, code: int, what: str) -> None:
    if _state["debug"]:
        traceback.print_exception(exc)
    else:
        hint = "" if code == 2 else " (a bug? rerun with --debug for the traceback)"
        console.print(f"[red]{what}:[/red] {exc}{hint}", highlight=False)
    raise SystemExit(code) from None


if __name__ == "__main__":
    main()
