"""Run the batch pipeline with live progress and an honest run manifest: started, then final."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from pyiceberg.catalog import Catalog
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from whylake.lake.catalog import COMMITS, ensure_tables, open_catalog
from whylake.lake.history import record_history
from whylake.lake.runs import (
    FAILED,
    SUCCEEDED,
    SUCCEEDED_WITH_WARNINGS,
    RunRecord,
    record_run,
    snapshots_of_run,
    start_run,
)
from whylake.pipelines.batch import RunOutcome, run
from whylake.pipelines.configs import BatchJobConfig
from whylake.transforms.progress import listen

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
    """Run one batch job end to end; whylake.runs gets a `started` row first, a final row last.

    A run that raises is recorded `failed` (with the error) before the error propagates; a run
    that is killed keeps its `started` row, so `whylake runs` shows it never finished.
    """
    console = console or Console(stderr=True)
    catalog = open_catalog(config.store.catalog)
    ensure_tables(catalog, config.store.retention)
    started = start_run(
        catalog,
        run_id=config.run_id,
        job="batch",
        runner=config.runner,
        inputs=list(config.inputs),
        tenants=[config.tenant] if config.tenant else sorted(config.store.policies.tenants),
        config=json.dumps(config.describe(), sort_keys=True),
        started_at=datetime.now(UTC),
    )
    t0 = time.perf_counter()
    try:
        outcome = _run_with_progress(config, console)
    except BaseException as exc:
        failed = _final(catalog, config, started, None, time.perf_counter() - t0, error=exc)
        log.warning("run %s failed: %s", config.run_id, exc)
        console.print(f"[red]run {config.run_id} failed:[/red] {exc}", highlight=False)
        record_run(catalog, failed)
        raise
    final = _final(catalog, config, started, outcome, outcome.elapsed_s)
    config.store.failpoints.hit("before-final-manifest")
    record_run(catalog, final)
    _log_history(catalog, config.run_id)
    print_summary(final, outcome.counters, console)
    return BatchSummary(final)


def _log_history(catalog: Catalog, run_id: str) -> None:
    """Log this run's commits (and any a killed run left) so time travel outlives expiry.

    Best effort: the run's rows are durable already, snapshots stay inside the retention
    horizon, and `whylake maintenance expire-snapshots` logs every snapshot before it expires
    one, so a failure here costs nothing but a warning.
    """
    try:
        record_history(catalog, run_id=run_id)
    except Exception as exc:  # noqa: BLE001 - see the docstring; said out loud, not swallowed
        log.warning("run %s: could not update %s (%s); maintenance will", run_id, COMMITS, exc)


def _run_with_progress(config: BatchJobConfig, console: Console) -> RunOutcome:
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
            return run(config)
        finally:
            stop()


def _final(
    catalog: Catalog,
    config: BatchJobConfig,
    started: RunRecord,
    outcome: RunOutcome | None,
    elapsed_s: float,
    error: BaseException | None = None,
) -> RunRecord:
    """The final manifest row: counts, snapshots, warnings and an honest status."""
    c = outcome.counters if outcome is not None else {}
    read = c.get("records_read", 0)
    invalid = c.get("records_unreadable", 0) + c.get("records_invalid", 0)
    sampled = c.get("records_sampled", 0)
    failed = c.get("records_failed_explain", 0) + c.get("records_failed_check", 0)
    problems: list[str] = []  # each makes the run fail
    warnings: list[str] = []
    if error is not None:
        problems.append(f"the run raised {type(error).__name__}: {error}")
    accounted = invalid + c.get("records_out_of_scope", 0) + c.get("records_valid", 0)
    if outcome is not None and accounted != read:
        problems.append(
            f"count mismatch: read {read} != invalid + out of scope + valid ({accounted})"
        )
    if outcome is not None:
        problems.extend(_lost_on_the_way(c, invalid, failed))
    if outcome is not None and read and invalid == read:
        # Bad input never crashes the job, but a run in which nothing could be used is no
        # success: the input is wrong (a schema change upstream, the wrong files).
        problems.append(f"none of the {read} records read was valid: see dead_letters")
    if failed:
        share = failed / sampled if sampled else 1.0
        message = f"{failed} of {sampled} sampled records could not be explained: see dead_letters"
        if share > config.max_failed_share:
            problems.append(
                f"{message} ({share:.1%} > max_failed_share {config.max_failed_share:.1%})"
            )
        else:
            warnings.append(message)
    lag = c.get("replica_lag", 0) if config.store.opensearch else None
    if lag:
        warnings.append(
            f"{lag} explanations are in Iceberg but not yet in OpenSearch: run "
            "`whylake replica backfill --since <day>` when it is reachable"
        )
    status = FAILED if problems else SUCCEEDED_WITH_WARNINGS if warnings else SUCCEEDED
    return RunRecord(
        **{
            **started.__dict__,
            "status": status,
            "finished_at": datetime.now(UTC),
            "elapsed_s": elapsed_s,
            "records_read": read,
            "records_invalid": invalid,
            "records_sampled": sampled,
            # Explained and past the output checks: a record the check stage refuses is
            # counted once, as failed, so that sampled = explained + failed holds.
            "records_explained": c.get("records_explained", 0) - c.get("records_failed_check", 0),
            "records_failed": failed,
            "records_committed": c.get("whylake.explanations.committed", 0),
            "records_already_present": c.get("whylake.explanations.already_present", 0),
            "snapshot_ids": snapshots_of_run(catalog, config.run_id),
            "warnings": [*problems, *warnings],
            "replica_lag": lag,
        }
    )


def _lost_on_the_way(c: dict[str, int], invalid: int, failed: int) -> list[str]:
    """Records a stage produced that never reached their table (each commit adds up, or fails).

    Every dead letter the stages counted must be committed or found already present, and so
    must every explanation that passed its checks; a runner that drops elements between a stage
    and the commit (see pipelines/batch.py) makes the run fail instead of passing silently.
    """
    problems = []
    letters = c.get("whylake.dead_letters.committed", 0) + c.get(
        "whylake.dead_letters.already_present", 0
    )
    if letters != invalid + failed:
        problems.append(
            f"count mismatch: {invalid + failed} dead letters were produced but {letters} "
            "reached whylake.dead_letters; rerun the job (it is idempotent)"
        )
    passed = c.get("records_explained", 0) - c.get("records_failed_check", 0)
    stored = c.get("whylake.explanations.committed", 0) + c.get(
        "whylake.explanations.already_present", 0
    )
    if stored != passed:
        problems.append(
            f"count mismatch: {passed} explanations passed their checks but {stored} reached "
            "whylake.explanations; rerun the job (it is idempotent)"
        )
    return problems


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
    table.add_row("elapsed", f"{record.elapsed_s or 0:.1f} s")
    console.print(table)
    style = "red" if record.status == FAILED else "yellow"
    for warning in record.warnings:
        console.print(f"[{style}]{record.status}:[/{style}] {warning}", highlight=False)
