"""What each new snapshot of an append-only table added: the rows of its new data files."""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.io.pyarrow import ArrowScan
from pyiceberg.manifest import DataFile, ManifestContent, ManifestEntryStatus
from pyiceberg.table import FileScanTask, Table
from pyiceberg.table.snapshots import Operation, Snapshot, ancestors_of


def snapshots_after(table: Table, last_seen: int | None) -> list[Snapshot]:
    """The snapshots committed after `last_seen` on the current branch, oldest first.

    None: only the current snapshot (a watcher starting up reports from now on). A
    `last_seen` no longer among the ancestors (expired, or the branch was reset) also yields
    only the current one, so a reader never replays the whole table by surprise.
    """
    current = table.current_snapshot()
    if current is None:
        return []
    if last_seen is None:
        return [current]
    newer: list[Snapshot] = []
    for snapshot in ancestors_of(current, table.metadata):
        if snapshot.snapshot_id == last_seen:
            return newer[::-1]
        newer.append(snapshot)
    return [current]


def added_files(table: Table, snapshot: Snapshot) -> list[DataFile]:
    """The data files an append snapshot added (none for a rewrite, delete or overwrite).

    A compaction rewrites existing rows into new files: those are not new explanations, so
    only `append` snapshots count.
    """
    if snapshot.summary is None or snapshot.summary.operation != Operation.APPEND:
        return []
    files = []
    for manifest in snapshot.manifests(table.io):
        if manifest.content != ManifestContent.DATA:
            continue
        if manifest.added_snapshot_id != snapshot.snapshot_id:
            continue
        for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True):
            if entry.status == ManifestEntryStatus.ADDED:
                files.append(entry.data_file)
    return files


def appended_rows(table: Table, snapshot: Snapshot, columns: Sequence[str] = ()) -> pa.Table:
    """The rows `snapshot` appended, projected on `columns` (all when empty).

    Read through pyiceberg's Arrow reader, so files written before a column was added read it
    as null (schema evolution by field id).
    """
    schema = table.schema()
    projected = schema.select(*columns) if columns else schema
    files = added_files(table, snapshot)
    if not files:
        return projected.as_arrow().empty_table()
    scan = ArrowScan(table.metadata, table.io, projected, AlwaysTrue())
    return scan.to_table([FileScanTask(f) for f in files])
