"""Processes that open a fresh home at the same moment all succeed: catalog, tables, commits."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
from pathlib import Path

from pyiceberg.expressions import EqualTo

from tests.unit.lake.conftest import explanation_row, explanation_table
from whylake.lake.catalog import (
    _TABLES,
    EXPLANATIONS,
    CatalogConfig,
    ensure_tables,
    open_catalog,
)
from whylake.lake.commit import append_once

PROCESSES = 8


def open_and_commit(home: str, writer: int, start: threading.Barrier) -> str | None:
    """What a job does first on a home: open the catalog, ensure the tables, commit a row."""
    start.wait()  # all processes leave the barrier together, with pyiceberg already imported
    try:
        catalog = open_catalog(CatalogConfig.embedded(home))
        ensure_tables(catalog)
        append_once(
            catalog,
            EXPLANATIONS,
            explanation_table([explanation_row("acme", f"r-{writer}")]),
            key="explanation_id",
            scope=EqualTo("tenant_id", "acme"),
            run_id=f"job-{writer}",
            batch_id=f"job-{writer}",
        )
    except Exception as exc:  # noqa: BLE001 - reported to the test, which fails on it
        return f"{type(exc).__name__}: {exc}"
    return None


def _run(home: str, writer: int, start: threading.Barrier, out: object) -> None:
    out.put((writer, open_and_commit(home, writer, start)))  # type: ignore[attr-defined]


def test_processes_opening_a_fresh_home_at_once_all_succeed(tmp_path: Path) -> None:
    home = tmp_path / "fresh"  # nothing exists yet: no folder, no catalog.db, no tables
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Barrier(PROCESSES), ctx.Queue()
    procs = [ctx.Process(target=_run, args=(str(home), w, start, out)) for w in range(PROCESSES)]
    for p in procs:
        p.start()
    results = dict(out.get(timeout=600) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    assert {w: e for w, e in results.items() if e} == {}
    assert [p.exitcode for p in procs] == [0] * PROCESSES
    # One catalog entry per table, every job's row exactly once.
    with sqlite3.connect(home / "catalog.db") as db:
        names = db.execute("SELECT table_namespace || '.' || table_name FROM iceberg_tables")
        assert sorted(n for (n,) in names) == sorted(_TABLES)
    catalog = open_catalog(CatalogConfig.embedded(home))
    rows = catalog.load_table(EXPLANATIONS).scan().to_arrow()
    assert sorted(rows["request_id"].to_pylist()) == sorted(f"r-{w}" for w in range(PROCESSES))
    # Every table's metadata, as the catalog names it, is there and reads (a process that lost
    # the race to create a table leaves its unreferenced first version behind; none is deleted).
    for name in _TABLES:
        table = catalog.load_table(name)
        referenced = [
            table.metadata_location,
            *(e.metadata_file for e in table.metadata.metadata_log),
        ]
        assert all(Path(u.removeprefix("file://")).exists() for u in referenced), referenced
