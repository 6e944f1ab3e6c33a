"""Run the batch pipeline with live progress, then write and print the run manifest."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from lake.catalog import ensure_tables, open_catalog
from lake.runs import RunRecord, code_versions, record_run, snapshots_of_run
from pipelines.batch import BatchJobConfig, describe_json, run
from transforms.progress import listen

log = logging.getLogger(__name__)
STAGES = ("read", "records_sampled", "committed", "dead_letters")
LABELS = {
    "read": "read",
    "records_sampled": "sampled",
    "committed": "committed",
    "dead_letters": "dead letters",
}


@dataclass(frozen=True)
class BatchSummary:
    """The figures a person checks after a run."""

    record: RunRecord

    @property
    def status(self) -> str:
        return self.record.status


def run_batch(config: BatchJobConfig, console: Console | None = None) -> BatchSummary:
    """Run one batch job end to end and record it in whylake.runs."""
    console = console or Console(stderr=True)
    catalog = open_catalog(config.catalog)
    ensure_tables(catalog)
    warnings: list[str] = []
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TextColumn("{task.completed:>10,.0f}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        tasks = {s: progress.add_task(LABELS[s], total=None) for s in STAGES}

        def on_count(stage: str, n: int) -> None:
            if stage in tasks:
                progress.advance(tasks[stage], n)

        stop = listen(on_count)
        try:
            outcome = run(config)
        finally:
            stop()
    c = outcome.counters
    read = c.get("records_read", 0)
    invalid = c.get("records_unreadable", 0) + c.get("records_invalid", 0)
    failed = c.get("records_failed_explain", 0) + c.get("records_failed_check", 0)
    accounted = invalid + c.get("records_out_of_scope", 0) + c.get("records_valid", 0)
    if accounted != read:
        warnings.append(
            f"count mismatch: read {read} != invalid + out of scope + valid ({accounted})"
        )
    if failed:
        warnings.append(f"{failed} sampled records could not be explained: see dead_letters")
    lag = c.get("replica_lag", 0) if config.opensearch else None
    if lag:
        warnings.append(
            f"{lag} explanations are in Iceberg but not yet in OpenSearch: run "
            "`whylake replica backfill --since <day>` when it is reachable"
        )
    record = RunRecord(
        run_id=config.run_id,
        job="batch",
        status="succeeded_with_warnings" if warnings else "succeeded",
        started_at=outcome.started_at,
        finished_at=outcome.finished_at,
        runner=config.runner,
        inputs=list(config.inputs),
        tenants=sorted(config.policies.tenants) if not config.tenant else [config.tenant],
        records_read=read,
        records_invalid=invalid,
        records_sampled=c.get("records_sampled", 0),
        records_explained=c.get("records_explained", 0),
        records_failed=failed,
        records_committed=c.get("whylake.explanations.committed", 0),
        records_already_present=c.get("whylake.explanations.already_present", 0),
        snapshot_ids=snapshots_of_run(catalog, config.run_id),
        elapsed_s=outcome.elapsed_s,
        config=describe_json(config),
        versions=code_versions(),
        warnings=warnings,
        replica_lag=lag,
    )
    record_run(catalog, record)
    print_summary(record, c, console)
    return BatchSummary(record)


def print_summary(record: RunRecord, counters: dict[str, int], console: Console) -> None:
    """The end-of-run table: what went in, what came out, where it is."""
    table = Table(title=f"run {record.run_id}: {record.status}", show_header=False)
    table.add_column("what")
    table.add_column("count", justify="right")
    rows = [
        ("records read", record.records_read),
        ("invalid (dead letters)", record.records_invalid),
        ("out of scope (--date/--tenant)", counters.get("records_out_of_scope", 0)),
        ("valid", counters.get("records_valid", 0)),
        ("sampled", record.records_sampled),
        ("explained", record.records_explained),
        ("failed to explain (dead letters)", record.records_failed),
        ("committed (new rows)", record.records_committed),
        ("already present (idempotent replay)", record.records_already_present),
        ("dead letters committed", counters.get("whylake.dead_letters.committed", 0)),
    ]
    if record.replica_lag is not None:
        rows.append(("replicated to OpenSearch", counters.get("replica_indexed", 0)))
        rows.append(("replica lag", record.replica_lag))
    for what, count in rows:
        table.add_row(what, f"{count:,}")
    table.add_row("snapshot ids", ", ".join(map(str, record.snapshot_ids)) or "none (no new rows)")
    table.add_row("elapsed", f"{record.elapsed_s:.1f} s")
    console.print(table)
    for warning in record.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)
