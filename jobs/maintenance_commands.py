"""`whylake maintenance ...`: the retention horizon, the commit log, and safe snapshot expiry."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from whylake.jobs.output import console

app = typer.Typer(
    help="Maintenance of the audit tables that keeps time travel answering.", no_args_is_help=True
)

Home = Annotated[
    Path | None,
    typer.Option("--home", help="Embedded catalog folder (default $WHYLAKE_HOME or ./.whylake)"),
]


def _catalog(home: Path | None) -> Any:
    from whylake.jobs.options import catalog_config, retention
    from whylake.lake.catalog import ensure_tables, open_catalog

    catalog = open_catalog(catalog_config(home))
    ensure_tables(catalog, retention())
    return catalog


@app.command("retention")
def retention_command(
    days: Annotated[
        int | None, typer.Option(help="Set the horizon: keep this many days of snapshots")
    ] = None,
    shorten: Annotated[
        bool, typer.Option("--shorten", help="Confirm that --days shortens the horizon")
    ] = False,
    home: Home = None,
) -> None:
    """Show each table's snapshot-retention horizon, or set it with --days."""
    from whylake.lake.catalog import RetentionConfig
    from whylake.lake.maintenance import MAINTAINED_TABLES, retention_of, set_retention

    catalog = _catalog(home)
    if days is not None:
        set_retention(catalog, RetentionConfig(days=days), shorten=shorten)
    table = Table(title="snapshot retention")
    for col in ("table", "days", "min snapshots kept"):
        table.add_column(col)
    for name in MAINTAINED_TABLES:
        kept = retention_of(catalog, name)
        table.add_row(name, str(kept.days), str(kept.min_snapshots))
    console.print(table)


@app.command("record-history")
def record_history_command(home: Home = None) -> None:
    """Log every snapshot in whylake.commits (run it before any maintenance tool of your own)."""
    from whylake.lake.history import record_history

    added = record_history(_catalog(home), run_id="maintenance")
    console.print(f"logged {added} new commits in whylake.commits")


@app.command("expire-snapshots")
def expire_snapshots_command(
    older_than: Annotated[
        str | None,
        typer.Option(help="Expire only snapshots before this time (default: the horizon)"),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would go")] = False,
    home: Home = None,
) -> None:
    """Expire snapshots past the retention horizon, logged first (time travel keeps working)."""
    from whylake.lake.maintenance import expire_snapshots
    from whylake.lake.reconstruct import parse_as_of

    done = expire_snapshots(
        _catalog(home), older_than=parse_as_of(older_than) if older_than else None, dry_run=dry_run
    )
    table = Table(title="snapshot expiry" + (" (dry run)" if dry_run else ""))
    for col in ("table", "horizon (days)", "before", "expired", "kept"):
        table.add_column(col)
    for e in done:
        table.add_row(
            e.table,
            str(e.retention_days),
            e.cutoff.isoformat(timespec="seconds"),
            str(len(e.expired)),
            str(e.kept),
        )
    console.print(table)
