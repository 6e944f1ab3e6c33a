"""The run manifest: one row per job run in whylake.runs, written after the run's commits."""

from __future__ import annotations

import json
import platform
import subprocess
from dataclasses import dataclass
from datetime import datetime
from importlib import metadata
from pathlib import Path

from pyiceberg.catalog import Catalog
from pyiceberg.expressions import AlwaysTrue

from lake.catalog import DEAD_LETTERS, EXPLANATIONS, RUNS
from lake.commit import RUN_ID_PROPERTY, append_once
from schemas.arrow import strict_table
from schemas.run_manifest import RUN_ARROW_SCHEMA


@dataclass(frozen=True)
class RunRecord:
    """One run's manifest row, as the job assembles it."""

    run_id: str
    job: str
    status: str
    started_at: datetime
    finished_at: datetime
    runner: str
    inputs: list[str]
    tenants: list[str]
    records_read: int
    records_invalid: int
    records_sampled: int
    records_explained: int
    records_failed: int
    records_committed: int
    records_already_present: int
    snapshot_ids: list[int]
    elapsed_s: float
    config: str
    versions: str
    warnings: list[str]
    replica_lag: int | None = None


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
    """Code and dependency versions for the manifest: the git commit if known, and libraries."""
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
    try:
        here = Path(__file__).resolve().parent
        versions["git_commit"] = (
            subprocess.run(
                ["git", "-C", str(here), "rev-parse", "HEAD"],
                capture_output=True,
                text=True,
                timeout=5,
                check=False,
            ).stdout.strip()
            or "unknown"
        )
    except (OSError, subprocess.SubprocessError):
        versions["git_commit"] = "unknown"
    return json.dumps(versions, sort_keys=True)


def record_run(catalog: Catalog, record: RunRecord) -> None:
    """Append the manifest row once (keyed by run id)."""
    row = strict_table([record.__dict__], RUN_ARROW_SCHEMA)
    append_once(
        catalog,
        RUNS,
        row,
        key="run_id",
        scope=AlwaysTrue(),
        run_id=record.run_id,
        batch_id=f"manifest:{record.run_id}",
    )


def list_runs(catalog: Catalog, limit: int = 20) -> list[dict[str, object]]:
    """The latest runs, newest first."""
    rows = catalog.load_table(RUNS).scan().to_arrow().to_pylist()
    rows.sort(key=lambda r: r["started_at"], reverse=True)
    return rows[:limit]
