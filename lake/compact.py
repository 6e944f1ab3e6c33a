"""Compaction: rewrite a partition's small data files into larger ones, changing no row.

The streaming job commits once per window, tenant and day, so a day's partition collects
hundreds of small files; every scan and every commit's key check opens all of them. A
compaction reads one partition's small files, writes their rows into files of about the
target size and commits one Iceberg `replace` snapshot that removes exactly the files it read
and adds the new ones (Iceberg's rewrite-data-files, done with pyiceberg's snapshot API).

Why it is safe beside live writers and auditors:
- No row changes: the new files hold the rows of the old files, read through the table's
  current schema; earlier snapshots still name the old files, which stay on disk, so time
  travel to any snapshot before the compaction reads exactly what it read before.
- Concurrent appends are neither lost nor duplicated: the replace names the files it deletes
  one by one; when another writer committed meanwhile, pyiceberg refreshes the table and
  rebuilds the replace on top of it (the new appends' files stay), and a file that is no
  longer there (another compaction took it) fails the commit with `ValidationException`
  instead of adding its rows twice.
"""

from __future__ import annotations

import itertools
import logging
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException, ValidationException
from pyiceberg.expressions import (
    AlwaysTrue,
    And,
    BooleanExpression,
    EqualTo,
    GreaterThanOrEqual,
    LessThan,
)
from pyiceberg.io.pyarrow import ArrowScan, _dataframe_to_data_files
from pyiceberg.manifest import DataFile
from pyiceberg.table import FileScanTask, Table
from pyiceberg.table.refs import MAIN_BRANCH
from pyiceberg.table.snapshots import Operation, Summary
from pyiceberg.table.update.snapshot import _OverwriteFiles

from whylake.lake.commit import RUN_ID_PROPERTY, with_client_retry
from whylake.schemas.errors import ConfigError
from whylake.schemas.ids import check_tenant

log = logging.getLogger(__name__)

COMPACTION_PROPERTY = "whylake.compaction"
# The replace is rebuilt and re-validated by pyiceberg's own commit retry (see the module doc),
# so it keeps that retry although whylake's tables switch it off for appends (lake/commit.py:
# an append's key check would be bypassed). The values the tables carried before that change.
REPLACE_RETRY = {
    "commit.retry.num-retries": "10",
    "commit.retry.min-wait-ms": "50",
    "commit.retry.max-wait-ms": "5000",
}
_MB = 1024 * 1024


@dataclass(frozen=True)
class CompactConfig:
    """Which files count as small, how large the new ones get, and which partitions to visit."""

    target_file_mb: float = 128.0
    small_file_mb: float = 32.0  # files below this are rewritten
    min_files: int = 2  # a partition with fewer small files is left alone
    tenant: str | None = None
    day: date | None = None
    tenant_field: str = "tenant_id"
    day_field: str | None = "event_ts"  # None: the table is partitioned by tenant only

    def __post_init__(self) -> None:
        if not 0 < self.small_file_mb <= self.target_file_mb:
            raise ConfigError("need 0 < small_file_mb <= target_file_mb")
        if self.min_files < 2:
            raise ConfigError(f"min_files must be at least 2, got {self.min_files}")
        if self.tenant is not None:
            check_tenant(self.tenant)


@dataclass(frozen=True)
class PartitionCompaction:
    """What one partition's compaction did."""

    partition: str
    files_before: int
    files_after: int
    rows: int
    bytes_before: int
    bytes_after: int
    snapshot_id: int | None  # None: skipped (nothing to do, or lost a race to another compaction)
    note: str = ""


def compact_table(
    catalog: Catalog, table_name: str, config: CompactConfig
) -> list[PartitionCompaction]:
    """Compact every partition of `table_name` that has at least `min_files` small files."""
    table = catalog.load_table(table_name)
    run_id = f"compact-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    groups = _small_files_by_partition(table, config)
    results = []
    for partition, tasks in sorted(groups.items()):
        if len(tasks) < config.min_files:
            continue
        results.append(_compact_partition(catalog, table_name, partition, tasks, config, run_id))
    return results


def _scope(config: CompactConfig) -> BooleanExpression:
    expr: BooleanExpression = AlwaysTrue()
    if config.tenant is not None:
        expr = EqualTo(config.tenant_field, config.tenant)
    if config.day is not None and config.day_field is not None:
        start = datetime(config.day.year, config.day.month, config.day.day, tzinfo=UTC)
        window = And(
            GreaterThanOrEqual(config.day_field, start.isoformat()),
            LessThan(config.day_field, (start + timedelta(days=1)).isoformat()),
        )
        expr = window if isinstance(expr, AlwaysTrue) else And(expr, window)
    return expr


def _small_files_by_partition(table: Table, config: CompactConfig) -> dict[str, list[FileScanTask]]:
    """The current snapshot's small data files, grouped by (spec, partition value)."""
    groups: dict[str, list[FileScanTask]] = defaultdict(list)
    spec_id = table.spec().spec_id
    for task in table.scan(row_filter=_scope(config)).plan_files():
        f = task.file
        if f.spec_id != spec_id or task.delete_files:
            continue  # an old spec or row deletes: not for this job (whylake never deletes)
        if f.file_size_in_bytes >= config.small_file_mb * _MB:
            continue
        groups[_partition_label(table, f)].append(task)
    return groups


def _partition_label(table: Table, f: DataFile) -> str:
    spec = table.spec()
    values = [f.partition[i] for i in range(len(spec.fields))]
    return "/".join(
        f"{field.name}={value}" for field, value in zip(spec.fields, values, strict=True)
    )


def _bins(tasks: list[FileScanTask], target_bytes: float) -> list[list[FileScanTask]]:
    """Group files, in their order, into runs of about target_bytes each."""
    bins: list[list[FileScanTask]] = [[]]
    size = 0
    for task in tasks:
        if bins[-1] and size + task.file.file_size_in_bytes > target_bytes:
            bins.append([])
            size = 0
        bins[-1].append(task)
        size += task.file.file_size_in_bytes
    return bins


def _compact_partition(
    catalog: Catalog,
    table_name: str,
    partition: str,
    tasks: list[FileScanTask],
    config: CompactConfig,
    run_id: str,
) -> PartitionCompaction:
    table = with_client_retry(catalog.load_table(table_name), REPLACE_RETRY)
    before = sum(t.file.file_size_in_bytes for t in tasks)
    scan = ArrowScan(table.metadata, table.io, table.schema(), AlwaysTrue())
    new_files: list[DataFile] = []
    rows = 0
    counter = itertools.count(0)
    write_uuid = uuid.uuid4()
    for group in _bins(tasks, config.target_file_mb * _MB):
        data = scan.to_table(group)  # the files' rows, in the current schema, in file order
        rows += data.num_rows
        new_files.extend(_write(table, data, write_uuid, counter))
    if rows != sum(t.file.record_count for t in tasks):
        raise ConfigError(f"{partition}: read {rows} rows from files that record a different count")
    properties = {RUN_ID_PROPERTY: run_id, COMPACTION_PROPERTY: partition}
    try:
        with table.transaction() as tx:
            replace = _ReplaceFiles(
                operation=Operation.REPLACE,
                transaction=tx,
                io=table.io,
                branch=MAIN_BRANCH,
                snapshot_properties=properties,
            )
            with replace:
                for task in tasks:
                    replace.delete_data_file(task.file)
                for data_file in new_files:
                    replace.append_data_file(data_file)
    except (ValidationException, CommitFailedException) as exc:
        # Another compaction removed one of these files first: ours must not add their rows
        # again. Nothing was committed; the files written for it are removed.
        for data_file in new_files:
            _delete_quietly(table, data_file.file_path)
        log.warning("compaction of %s %s skipped: %s", table_name, partition, exc)
        return PartitionCompaction(
            partition, len(tasks), len(tasks), rows, before, before, None, str(exc)
        )
    snapshot_id = _snapshot_of(catalog.load_table(table_name), run_id, partition)
    after = sum(f.file_size_in_bytes for f in new_files)
    return PartitionCompaction(
        partition, len(tasks), len(new_files), rows, before, after, snapshot_id
    )


class _ReplaceFiles(_OverwriteFiles):
    """pyiceberg's file-level overwrite, recorded as Iceberg's `replace` operation.

    `replace` tells readers (and incremental consumers) that no data changed; pyiceberg 0.12
    computes summaries only for append / overwrite / delete, so the totals are computed as an
    overwrite and the operation is set afterwards.
    """

    def _summary(self, snapshot_properties: dict[str, str] = {}) -> Summary:  # noqa: B006
        self._operation = Operation.OVERWRITE
        try:
            summary = super()._summary(snapshot_properties)
        finally:
            self._operation = Operation.REPLACE
        return Summary(operation=Operation.REPLACE, **summary.additional_properties)

    def _validate_concurrency(self) -> None:
        """Iceberg's rewrite rule (Java `BaseRewriteFiles`): the files it removes must still
        be live and gain no row deletes; appends committed meanwhile are not a conflict
        (an overwrite's serializable check would refuse them)."""
        from pyiceberg.table.update.validate import (
            _validate_data_files_exist,
            _validate_no_new_deletes_for_data_files,
        )

        window = self._commit_window
        if window is None or window.is_empty() or window.head is None:
            return
        table = self._transaction._table
        _validate_data_files_exist(table, window.head, self._deleted_data_files, window.base)
        _validate_no_new_deletes_for_data_files(
            table, window.head, None, self._deleted_data_files, window.base
        )


def _write(table: Table, data: pa.Table, write_uuid: uuid.UUID, counter: Any) -> Iterable[DataFile]:
    """Write rows as data files of the table's partition spec (pyiceberg's own writer)."""
    return list(
        _dataframe_to_data_files(
            table_metadata=table.metadata,
            df=data,
            io=table.io,
            write_uuid=write_uuid,
            counter=counter,
        )
    )


def _snapshot_of(table: Table, run_id: str, partition: str) -> int | None:
    for snap in reversed(table.snapshots()):
        props = snap.summary.additional_properties if snap.summary else {}
        if props.get(RUN_ID_PROPERTY) == run_id and props.get(COMPACTION_PROPERTY) == partition:
            return snap.snapshot_id
    return None


def _delete_quietly(table: Table, path: str) -> None:
    try:
        table.io.delete(path)
    except OSError as exc:
        log.warning("could not remove unreferenced file %s: %s", path, exc)
