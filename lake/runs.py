"""The run manifest in whylake.runs: a `started` row before a run works, a final row after.

A run that raises is recorded `failed` with the error; a run that is killed keeps only its
`started` row, so it shows as started without a finish instead of vanishing.
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass, field
from datetime import datetime
from importlib import metadata

from pyiceberg.catalog import Catalog
from pyiceberg.expressions import AlwaysTrue

from whylake.lake.catalog import DEAD_LETTERS, EXPLANATIONS, RUNS
from whylake.lake.commit import RUN_ID_PROPERTY, append_once
from whylake.schemas.arrow import strict_table
from whylake.schemas.errors import ConfigError
from whylake.schemas.run_manifest import RUN_ARROW_SCHEMA

STARTED = "started"
SUCCEEDED = "succeeded"
SUCCEEDED_WITH_WARNINGS = "succeeded_with_warnings"
FAILED = "failed"
STOPPED = "stopped"  # a streaming job stopped by an operator
FINAL_STATUSES = (SUCCEEDED, SUCCEEDED_WITH_WARNINGS, FAILED, STOPPED)


@dataclass(frozen=True)
class RunRecord:
    """One run's manifest row, as the job assembles it."""

    run_id: str
    job: str
    status: str
    started_at: datetime
    runner: str
    inputs: list[str]
    tenants: list[str]
    config: str
    versions: str
    finished_at: datetime | None = None
    elapsed_s: float | None = None
    records_read: int = 0
    records_invalid: int = 0
    records_sampled: int = 0
    records_explained: int = 0
    records_failed: int = 0
    records_committed: int = 0
    records_already_present: int = 0
    snapshot_ids: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    replica_lag: int | None = None

    def __post_init__(self) -> None:
        if self.status != STARTED and self.status not in FINAL_STATUSES:
            raise ConfigError(f"status {self.status!r} is not one of {(STARTED, *FINAL_STATUSES)}")

    @property
    def entry_id(self) -> str:
        return f"{self.run_id}/{'started' if self.status == STARTED else 'final'}"


def snapshots_of_run(
    catalog: Catalog, run_id: str, tables: tuple[str, ...] = (EXPLANATIONS, DEAD_LETTERS)
) -> list[int]:
    """Snapshot ids whose summary names this run (the commits it made, in commit order)."""
    found = []
    for name in tables:
        table = catalog.load_table(name)
        for snap in table.snapshots():
            summary = snap.summary.additional_properties if snap.summary else {}
            if summary.get(RUN_ID_PROPERTY) == run_id:
                found.append((snap.timestamp_ms, snap.snapshot_id))
    return [sid for _, sid in sorted(found)]


def code_versions() -> str:
    """Code and dependency versions for the manifest (the installed distributions)."""
    versions = {"python": platform.python_version()}
    for name in (
        "whylake",
        "apache-beam",
        "pyiceberg",
        "pyarrow",
        "torch",
        "duckdb",
        "shap",
        "captum",
        "great-expectations",
    ):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return json.dumps(versions, sort_keys=True)


def record_run(catalog: Catalog, record: RunRecord) -> None:
    """Append a manifest row once (keyed by run id and phase: a retry adds nothing)."""
    row = strict_table([{**record.__dict__, "entry_id": record.entry_id}], RUN_ARROW_SCHEMA)
    append_once(
        catalog,
        RUNS,
        row,
        key="entry_id",
        scope=AlwaysTrue(),
        run_id=record.run_id,
        batch_id=f"manifest:{record.entry_id}",
    )


def start_run(
    catalog: Catalog,
    *,
    run_id: str,
    job: str,
    runner: str,
    inputs: list[str],
    tenants: list[str],
    config: str,
    started_at: datetime,
) -> RunRecord:
    """Write a run's `started` row, before it does any work, and return it."""
    record = RunRecord(
        run_id=run_id,
        job=job,
        status=STARTED,
        started_at=started_at,
        runner=runner,
        inputs=inputs,
        tenants=tenants,
        config=config,
        versions=code_versions(),
    )
    record_run(catalog, record)
    return record


def list_runs(catalog: Catalog, limit: int = 20) -> list[dict[str, object]]:
    """The latest runs, newest first: each run's final row, or its `started` row if none."""
    latest: dict[str, dict[str, object]] = {}
    for row in catalog.load_table(RUNS).scan().to_arrow().to_pylist():
        seen = latest.get(row["run_id"])
        if seen is None or seen["status"] == STARTED:
            latest[row["run_id"]] = row
    rows = sorted(latest.values(), key=lambda r: r["started_at"], reverse=True)  # type: ignore[arg-type, return-value]
    return rows[:limit]
