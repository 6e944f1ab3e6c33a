"""Time travel that survives snapshot expiry: the commit log, and tables read as of a past commit.

Iceberg answers "as of T" from snapshots, and snapshot expiry (Iceberg's standard maintenance,
run on its own by managed catalogs) removes them. whylake's tables are append-only, so the data
files of every past state stay live in the current snapshot, each with the data sequence number
of the commit that added it. What expiry loses is only which commit was current at T, and its
sequence number; `whylake.commits` keeps exactly that, one row per snapshot, written before
anything is expired (`record_history`, run at the end of each batch run and first thing by
`lake.maintenance.expire_snapshots`). Then

    rows as of T = the current snapshot's files with sequence number <= that of the commit
                   current at T (the latest commit of main with a time <= T, as Iceberg's
                   snapshot log answers it)

which is the same set of rows the expired snapshot held, as long as every later commit only
appended (checked: a rewrite, an overwrite or a delete makes the past unrecoverable this way,
and the read says so instead of answering). While the snapshot is still there it is read
directly, as before.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.expressions import AlwaysTrue, BooleanExpression, EqualTo, In
from pyiceberg.io.pyarrow import ArrowScan
from pyiceberg.manifest import ManifestEntry
from pyiceberg.schema import Schema
from pyiceberg.table import FileScanTask, ManifestGroupPlanner, Table
from pyiceberg.table.snapshots import Snapshot

from whylake.lake.catalog import COMMITS, DEAD_LETTERS, EXPLANATIONS, REVIEWS, RUNS
from whylake.lake.commit import BATCH_ID_PROPERTY, RUN_ID_PROPERTY, append_once
from whylake.schemas.arrow import strict_table
from whylake.schemas.commit_log import COMMIT_LOG_ARROW_SCHEMA
from whylake.schemas.errors import ConfigError, HistoryIncompleteError, SnapshotNotFoundError

# The tables whose past can be asked for (the commit log itself is only ever read current).
LOGGED_TABLES = (EXPLANATIONS, DEAD_LETTERS, RUNS, REVIEWS)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ALL: BooleanExpression = AlwaysTrue()
_FIRST_SEQUENCE_NUMBER = 1  # of a format-version 2 table's first commit
APPEND = "append"


@dataclass(frozen=True)
class Commit:
    """One commit (snapshot) of a table, from its live metadata or from the commit log."""

    table_name: str
    snapshot_id: int
    parent_snapshot_id: int | None
    sequence_number: int
    committed_at_ms: int
    operation: str | None
    schema_id: int | None

    @property
    def committed_at(self) -> datetime:
        """When it was committed, in UTC."""
        return _EPOCH + timedelta(milliseconds=self.committed_at_ms)

    @classmethod
    def of(cls, table_name: str, snapshot: Snapshot) -> Commit:
        return cls(
            table_name=table_name,
            snapshot_id=snapshot.snapshot_id,
            parent_snapshot_id=snapshot.parent_snapshot_id,
            sequence_number=snapshot.sequence_number or 0,
            committed_at_ms=snapshot.timestamp_ms,
            operation=snapshot.summary.operation.value if snapshot.summary else None,
            schema_id=snapshot.schema_id,
        )


def record_history(
    catalog: Catalog,
    tables: Iterable[str] = LOGGED_TABLES,
    *,
    run_id: str = "history",
    recorded_at: datetime | None = None,
) -> int:
    """Log every snapshot of `tables` that whylake.commits does not hold yet; return how many.

    Idempotent (keyed by table and snapshot id) and safe to run from several processes.
    """
    recorded_at = recorded_at or datetime.now(UTC)
    names = list(tables)
    rows: list[dict[str, Any]] = []
    for name in names:
        for snapshot in catalog.load_table(name).snapshots():
            rows.append(_log_row(name, snapshot, recorded_at))
    if not rows:
        return 0
    ids = sorted(r["commit_id"] for r in rows)
    digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]
    result = append_once(
        catalog,
        COMMITS,
        strict_table(rows, COMMIT_LOG_ARROW_SCHEMA),
        key="commit_id",
        scope=In("table_name", names),
        run_id=run_id,
        batch_id=f"history:{digest}",
    )
    return result.rows_committed


def logged_commits(catalog: Catalog, table_name: str) -> dict[int, Commit]:
    """The commit log's rows for one table, by snapshot id (empty before the log exists)."""
    try:
        log_table = catalog.load_table(COMMITS)
    except NoSuchTableError:
        return {}
    rows = log_table.scan(row_filter=EqualTo("table_name", table_name)).to_arrow().to_pylist()
    return {
        r["snapshot_id"]: Commit(
            table_name=table_name,
            snapshot_id=r["snapshot_id"],
            parent_snapshot_id=r["parent_snapshot_id"],
            sequence_number=r["sequence_number"],
            committed_at_ms=(r["committed_at"] - _EPOCH) // timedelta(milliseconds=1),
            operation=r["operation"],
            schema_id=r["schema_id"],
        )
        for r in rows
    }


@dataclass(frozen=True)
class Lineage:
    """The commits of a table's main branch, oldest first, as far back as they are known."""

    table: Table
    commits: list[Commit]

    @property
    def complete(self) -> bool:
        """Whether it reaches the table's first commit (nothing expired before it was logged)."""
        return not self.commits or (
            self.commits[0].parent_snapshot_id is None
            and self.commits[0].sequence_number <= _FIRST_SEQUENCE_NUMBER
        )

    def describe(self) -> str:
        """The range of commits, for error messages."""
        if not self.commits:
            return "it has no snapshots yet (nothing has been committed)"
        first, last = self.commits[0], self.commits[-1]
        known = "" if self.complete else " (earlier commits expired before they were logged)"
        return (
            f"its earliest commit is snapshot {first.snapshot_id} at "
            f"{first.committed_at.isoformat()}{known} and its latest is snapshot "
            f"{last.snapshot_id} at {last.committed_at.isoformat()}; ask for a time or id in "
            "that range"
        )


def lineage(catalog: Catalog, table_name: str) -> Lineage:
    """Main's commits from the live snapshots and the commit log, oldest first."""
    table = catalog.load_table(table_name)
    live = {s.snapshot_id: Commit.of(table_name, s) for s in table.snapshots()}
    logged = logged_commits(catalog, table_name)
    head = table.current_snapshot()
    chain: list[Commit] = []
    seen: set[int] = set()
    at = head.snapshot_id if head is not None else None
    while at is not None and at not in seen:
        seen.add(at)
        # The log keeps a commit's true parent: expiry sets a survivor's parent id to None.
        commit = logged.get(at) or live.get(at)
        if commit is None:
            break  # expired before it was logged: the history below is unknown
        chain.append(commit)
        at = commit.parent_snapshot_id
    chain.reverse()
    return Lineage(table, chain)


@dataclass(frozen=True)
class TablePoint:
    """A table as it stood after one commit; readable whether or not the snapshot still exists."""

    table: Table
    commit: Commit
    later: tuple[Commit, ...]  # the commits of main after it, oldest first

    @property
    def snapshot_id(self) -> int:
        return self.commit.snapshot_id

    @property
    def committed_at(self) -> datetime:
        return self.commit.committed_at

    @property
    def live(self) -> bool:
        """Whether the snapshot is still in the table's metadata (not expired)."""
        return self.table.snapshot_by_id(self.commit.snapshot_id) is not None

    def schema(self) -> Schema:
        """The schema the table had then (the current one if that schema was removed)."""
        if self.commit.schema_id is not None:
            then = self.table.metadata.schema_by_id(self.commit.schema_id)
            if then is not None:
                return then
        return self.table.schema()

    def scan(
        self,
        row_filter: BooleanExpression = _ALL,
        selected_fields: tuple[str, ...] = ("*",),
    ) -> pa.Table:
        """The rows matching `row_filter` as of this commit, as Iceberg time travel reads them.

        Raises:
            HistoryIncompleteError: the snapshot expired and a later commit rewrote files.
        """
        if self.live:
            return self.table.scan(
                row_filter=row_filter, selected_fields=selected_fields, snapshot_id=self.snapshot_id
            ).to_arrow()
        schema = self.schema()
        projected = schema if "*" in selected_fields else schema.select(*selected_fields)
        return ArrowScan(self.table.metadata, self.table.io, projected, row_filter).to_table(
            self.tasks(row_filter)
        )

    def tasks(self, row_filter: BooleanExpression = _ALL) -> list[FileScanTask]:
        """The data files holding this commit's rows that `row_filter` may match, pruned.

        For a reader of its own (DuckDB `read_parquet` over `task.file.file_path`). Raises
        HistoryIncompleteError as `scan` does.
        """
        if self.live:
            snapshot = self.table.snapshot_by_id(self.snapshot_id)
            assert snapshot is not None
            keep = _everything
        else:
            rewritten = [c for c in self.later if c.operation not in (APPEND, None)]
            if rewritten:
                first = rewritten[0]
                raise HistoryIncompleteError(
                    f"{self.commit.table_name} snapshot {self.snapshot_id} expired, and snapshot "
                    f"{first.snapshot_id} (committed {first.committed_at.isoformat()}) did a "
                    f"{first.operation} after it, so its rows cannot be told from later ones; "
                    "whylake's tables must stay append-only (see README: maintenance)"
                )
            head = self.table.current_snapshot()
            assert head is not None
            snapshot = head
            ceiling = self.commit.sequence_number

            def keep(entry: ManifestEntry) -> bool:
                return (entry.sequence_number or 0) <= ceiling

        planner = ManifestGroupPlanner(self.table.metadata, self.table.io, row_filter)
        tasks = list(planner.plan_files(snapshot.manifests(self.table.io), keep))
        if not self.live and any(t.delete_files for t in tasks):
            raise HistoryIncompleteError(
                f"{self.commit.table_name} has row-level deletes: an expired snapshot's rows "
                "cannot be rebuilt from the current files"
            )
        return tasks


def point_in_time(
    catalog: Catalog,
    table_name: str,
    *,
    as_of: datetime | None = None,
    snapshot_id: int | None = None,
) -> TablePoint | None:
    """The table at `snapshot_id`, or as current at `as_of`, or now; None if nothing was then.

    None means the table had no commit yet at that time (or at all): an empty table.

    Raises:
        SnapshotNotFoundError: no commit of main has that snapshot id.
        HistoryIncompleteError: the answer lies in history that expired before it was logged.
        ConfigError: both `as_of` and `snapshot_id`, or an `as_of` without a time zone.
    """
    if as_of is not None and snapshot_id is not None:
        raise ConfigError("give as_of or snapshot_id, not both")
    known = lineage(catalog, table_name)
    commits = known.commits
    index: int | None
    if snapshot_id is not None:
        index = next((i for i, c in enumerate(commits) if c.snapshot_id == snapshot_id), None)
        if index is None:
            incomplete = "" if known.complete else " (or it expired before it was logged)"
            raise SnapshotNotFoundError(
                f"{table_name} has no snapshot {snapshot_id}{incomplete}; {known.describe()}"
            )
    elif as_of is not None:
        moment = _millis(as_of)
        # As Iceberg's snapshot log answers it: the latest commit, in commit order, at or
        # before the moment.
        index = next(
            (i for i in reversed(range(len(commits))) if commits[i].committed_at_ms <= moment), None
        )
        if index is None:
            if not known.complete:
                raise HistoryIncompleteError(
                    f"{table_name} as of {as_of.isoformat()} is unknown: its snapshots of that "
                    f"time were expired before whylake logged them; {known.describe()}"
                )
            return None
    else:
        index = len(commits) - 1 if commits else None
        if index is None:
            return None
    return TablePoint(known.table, commits[index], tuple(commits[index + 1 :]))


def _everything(entry: ManifestEntry) -> bool:
    return True


def _millis(moment: datetime) -> int:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ConfigError(
            f"as_of {moment.isoformat()} has no time zone; give one, e.g. "
            f"{moment.isoformat()}+00:00 for UTC"
        )
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def _log_row(table_name: str, snapshot: Snapshot, recorded_at: datetime) -> dict[str, Any]:
    commit = Commit.of(table_name, snapshot)
    summary = snapshot.summary.additional_properties if snapshot.summary else {}
    added = summary.get("added-records")
    return {
        "commit_id": f"{table_name}@{snapshot.snapshot_id}",
        "table_name": table_name,
        "snapshot_id": commit.snapshot_id,
        "parent_snapshot_id": commit.parent_snapshot_id,
        "sequence_number": commit.sequence_number,
        "committed_at": commit.committed_at,
        "operation": commit.operation,
        "run_id": summary.get(RUN_ID_PROPERTY),
        "batch_id": summary.get(BATCH_ID_PROPERTY),
        "schema_id": commit.schema_id,
        "added_records": int(added) if added is not None else None,
        "recorded_at": recorded_at,
    }
