"""`whylake compact`: merge a table's small data files into larger ones (no row changes)."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from whylake.jobs.output import console
from whylake.schemas.errors import ConfigError

app = typer.Typer(help="Compact small data files (streaming commits make many).")

_TABLES = {"explanations": "event_ts", "dead_letters": "failed_at"}


@app.callback(invoke_without_command=True)
def compact(
    table: Annotated[str, typer.Option(help="explanations or dead_letters")] = "explanations",
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's partitions")] = None,
    day: Annotated[str | None, typer.Option(help="Only this UTC day, YYYY-MM-DD")] = None,
    target_file_mb: Annotated[float, typer.Option(help="Size of the files written")] = 128.0,
    small_file_mb: Annotated[float, typer.Option(help="Files below this are rewritten")] = 32.0,
    min_files: Annotated[int, typer.Option(help="Leave partitions with fewer small files")] = 2,
    home: Annotated[
        Path | None,
        typer.Option("--home", help="Embedded catalog + warehouse folder (default $WHYLAKE_HOME)"),
    ] = None,
) -> None:
    """Rewrite each partition's small files into files of about --target-file-mb, in one
    Iceberg `replace` snapshot per partition. Rows, and every earlier snapshot, stay as they
    were; writers may keep appending while it runs."""
    from whylake.jobs.options import catalog_config
    from whylake.lake.catalog import NAMESPACE, ensure_tables, open_catalog
    from whylake.lake.compact import CompactConfig, compact_table

    if table not in _TABLES:
        raise ConfigError(f"--table {table!r}: one of {sorted(_TABLES)}")
    try:
        only_day = date.fromisoformat(day) if day else None
    except ValueError as exc:
        raise ConfigError(f"--day {day!r} is not a day, e.g. 2026-11-21") from exc
    config = CompactConfig(
        target_file_mb=target_file_mb,
        small_file_mb=small_file_mb,
        min_files=min_files,
        tenant=tenant,
        day=only_day,
        day_field=_TABLES[table],
    )
    catalog = open_catalog(catalog_config(home))
    ensure_tables(catalog)
    results = compact_table(catalog, f"{NAMESPACE}.{table}", config)
    out = Table(title=f"whylake compact {table}")
    for col in ("partition", "files", "rows", "MB before", "MB after", "snapshot"):
        out.add_column(col)
    for r in results:
        out.add_row(
            r.partition,
            f"{r.files_before} -> {r.files_after}",
            f"{r.rows:,}",
            f"{r.bytes_before / 2**20:.2f}",
            f"{r.bytes_after / 2**20:.2f}",
            str(r.snapshot_id) if r.snapshot_id else f"skipped: {r.note}",
        )
    console.print(out)
    console.print(f"{sum(r.snapshot_id is not None for r in results)} partitions compacted")
