"""Append rows to an Iceberg table exactly once, at a cost that does not grow with the table.

The protocol, per attempt of `append_once`:

1. load the table: its main branch is at snapshot S;
2. from metadata alone: if a snapshot in S's history already carries this batch's key digest
   (sha256 of its sorted distinct keys, in the snapshot summary), every key of the batch is in
   the table: nothing to do. A retried commit, a rerun over the same input and a concurrent
   writer of the same batch all stop here, without reading a data file (the batch ids of
   Iceberg's Flink and Kafka Connect sinks, made exact by naming the key set itself);
3. otherwise a bounded key check: read the keys present *at S* among the rows of the batch's
   partitions *whose event time lies in the batch's event-time range* and keep the rows whose
   key is absent. Exact because a row's key is derived from its event time (`explanation_id`
   hashes it; `time_field` is only given for such keys): a row with the same key has the same
   event time, so it lies in the range. Bounded because Iceberg's file statistics and
   Parquet's row-group statistics skip every file and row group whose event times lie outside
   the range; rows are appended sorted by event time (and tables keep row groups small,
   lake/catalog.py), so a batch spanning minutes reads the row groups of those minutes, not
   the partition. A batch spanning a whole day still reads the day (reported in
   bench/results/storage.json);
4. fast-append those rows, the digest in the summary, with pyiceberg's own commit retry
   switched off: the catalog accepts a snapshot only while main is still at S (every snapshot
   producer sends that requirement), so the rows were checked against exactly the state they
   are appended to;
5. on a conflict (another writer moved main) or a commit whose outcome is unknown, wait with
   full jitter and go back to 1: the next attempt sees what the other writer, or this one,
   committed in the meantime.

pyiceberg's own retry must stay off: it refreshes the table and re-applies the same append on
the new head without steps 2-3, so two writers of the same keys both commit them (with its
`commit.retry.num-retries` at 10, eight writers of overlapping keys committed 27 of 160 keys
twice; shared/NOTES.md). `lake.catalog` sets the property to 0 on every whylake table, and this
module switches the retry off per commit as well, so the guarantee does not hang on a table
property that anyone with catalog access can change.

Snapshot expiry removes old summaries from step 2's view: a replay of a batch older than the
retention horizon falls through to step 3, which is exact on its own.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException, CommitStateUnknownException
from pyiceberg.expressions import (
    And,
    BooleanExpression,
    GreaterThanOrEqual,
    LessThanOrEqual,
)
from pyiceberg.table import Table, TableProperties

from whylake.schemas.errors import (
    CommitProtocolError,
    CommitRetriesExhaustedError,
    ConfigError,
    TableSchemaMismatchError,
)

log = logging.getLogger(__name__)

RUN_ID_PROPERTY = "whylake.run-id"
BATCH_ID_PROPERTY = "whylake.batch-id"
BATCH_KEYS_PROPERTY = "whylake.batch-keys-sha256"

# Errors after which a commit did not land, or may have landed: both are safe to retry here,
# because the next attempt re-reads the keys before it appends anything.
RETRYABLE = (CommitFailedException, CommitStateUnknownException)


@dataclass(frozen=True)
class CommitConfig:
    """How hard to try before giving up on a conflicting commit.

    Waits grow as min_wait_s * 2**attempt up to max_wait_s, each drawn uniformly below that
    bound ("full jitter", Brooker 2015: of the schemes compared it spreads contending writers
    best, with the fewest wasted attempts), within max_attempts and a total of max_total_s.
    """

    max_attempts: int = 30
    min_wait_s: float = 0.05
    max_wait_s: float = 5.0
    max_total_s: float = 600.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if not 0 <= self.min_wait_s <= self.max_wait_s:
            raise ConfigError("need 0 <= min_wait_s <= max_wait_s")
        if self.max_total_s <= 0:
            raise ConfigError(f"max_total_s must be positive, got {self.max_total_s}")

    def wait_s(self, attempt: int, rng: random.Random) -> float:
        """The pause after failed attempt number `attempt` (1-based)."""
        return rng.uniform(0.0, min(self.max_wait_s, self.min_wait_s * 2 ** (attempt - 1)))


@dataclass(frozen=True)
class CommitResult:
    """What one idempotent append did."""

    table: str
    batch_id: str
    snapshot_id: int | None  # None when every row was already present
    rows_committed: int
    rows_already_present: int
    attempts: int


# Unseeded on purpose: writers that drew the same waits would collide again in lockstep.
_JITTER = random.Random()


def append_once(
    catalog: Catalog,
    table_name: str,
    rows: pa.Table,
    *,
    key: str,
    scope: BooleanExpression,
    run_id: str,
    batch_id: str,
    time_field: str | None = None,
    config: CommitConfig = CommitConfig(),
) -> CommitResult:
    """Append the rows whose `key` is not yet in the table, in one snapshot tagged with the batch.

    `scope` is a filter covering every row of `rows` (e.g. their tenant and days) so the
    existing keys are read from those partitions only. `time_field` names a timestamp column
    from which `key` is derived (rows with one key have one value there): the key check then
    reads only the rows in the batch's range of it, and rows are appended sorted by it. Each
    attempt re-reads the table, so a writer that loses a race to another writer of the same
    keys commits nothing twice, and a writer whose rows were not committed by anyone keeps
    trying until they are; the snapshot summary carries run and batch ids and the key digest.

    Raises:
        CommitRetriesExhaustedError: still conflicting after the configured attempts or time;
            nothing of this call was committed that a rerun would not skip.
        CommitProtocolError: a commit landed on another snapshot than its keys were read at.
    """
    deadline = time.monotonic() + config.max_total_s
    digest = key_digest(rows[key])
    checked = check_scope(rows, scope, time_field)
    properties = {RUN_ID_PROPERTY: run_id, BATCH_ID_PROPERTY: batch_id, BATCH_KEYS_PROPERTY: digest}
    for attempt in range(1, config.max_attempts + 1):
        table = _without_client_retry(catalog.load_table(table_name))
        head = table.current_snapshot()
        read_at = head.snapshot_id if head is not None else None
        if landed(table, digest):
            return CommitResult(table_name, batch_id, None, 0, rows.num_rows, attempt)
        fresh = new_rows(table, rows, key=key, scope=checked)
        skipped = rows.num_rows - fresh.num_rows
        if fresh.num_rows == 0:
            return CommitResult(table_name, batch_id, None, 0, skipped, attempt)
        if time_field is not None:
            fresh = fresh.sort_by([(time_field, "ascending"), (key, "ascending")])
        try:
            table.append(
                to_table_schema(fresh, table.schema().as_arrow(), table_name),
                snapshot_properties=properties,
            )
        except RETRYABLE as exc:
            wait = config.wait_s(attempt, _JITTER)
            if attempt == config.max_attempts or time.monotonic() + wait > deadline:
                break
            log.info(
                "commit of batch %s to %s conflicted (%s); retry %d/%d in %.2fs",
                batch_id,
                table_name,
                type(exc).__name__,
                attempt,
                config.max_attempts,
                wait,
            )
            time.sleep(wait)
            continue
        snapshot = table.current_snapshot()
        if snapshot is None or snapshot.parent_snapshot_id != read_at:
            # The invariant the guarantee rests on, checked rather than assumed.
            raise CommitProtocolError(
                f"batch {batch_id} to {table_name} landed on snapshot "
                f"{snapshot.parent_snapshot_id if snapshot else None}, not on {read_at} where "
                "its keys were checked: rows may be duplicated (did pyiceberg retry the commit "
                "itself?); report this as a bug"
            )
        return CommitResult(
            table_name, batch_id, snapshot.snapshot_id, fresh.num_rows, skipped, attempt
        )
    raise CommitRetriesExhaustedError(
        f"batch {batch_id} to {table_name} still conflicted after {attempt} attempts "
        f"(limits: {config.max_attempts} attempts, {config.max_total_s:.0f} s); other writers "
        "kept committing first. It committed nothing, so rerunning the job is safe"
    )


def key_digest(keys: pa.ChunkedArray | pa.Array) -> str:
    """sha256 of a batch's distinct keys in sorted order: the same key set, the same digest."""
    distinct = pc.unique(keys)
    ordered = pc.take(distinct, pc.sort_indices(distinct))
    return hashlib.sha256("".join(f"{k}\n" for k in ordered.to_pylist()).encode()).hexdigest()


def landed(table: Table, digest: str) -> bool:
    """Whether a snapshot of main's history (as far as it is kept) committed this key set.

    Metadata only: the snapshots are in the table metadata already loaded. The walk follows
    parent ids through a dict, since pyiceberg's `snapshot_by_id` searches the list each time
    (quadratic over a day of streaming commits).
    """
    by_id = {s.snapshot_id: s for s in table.metadata.snapshots}
    snapshot = table.current_snapshot()
    while snapshot is not None:
        summary = snapshot.summary.additional_properties if snapshot.summary else {}
        if summary.get(BATCH_KEYS_PROPERTY) == digest:
            return True
        parent = snapshot.parent_snapshot_id
        snapshot = by_id.get(parent) if parent is not None else None
    return False


def check_scope(
    rows: pa.Table, scope: BooleanExpression, time_field: str | None
) -> BooleanExpression:
    """`scope` narrowed to the rows' range of `time_field` (inclusive), when one is given."""
    if time_field is None or rows.num_rows == 0:
        return scope
    low, high = pc.min_max(rows[time_field]).values()
    if not low.is_valid or not high.is_valid:
        raise ConfigError(f"{time_field} must be set on every row when it bounds the key check")
    return And(
        scope,
        And(
            GreaterThanOrEqual(time_field, low.as_py().isoformat()),
            LessThanOrEqual(time_field, high.as_py().isoformat()),
        ),
    )


def new_rows(table: Table, rows: pa.Table, *, key: str, scope: BooleanExpression) -> pa.Table:
    """The rows whose key is absent from `scope` at the table's current snapshot, once each.

    Whatever it reads must be read at the snapshot `table` holds, the one the append is
    conditional on.
    """
    key_type = rows.schema.field(key).type
    wanted = pc.unique(rows[key])
    present = []
    # Streamed, keeping only the batch's own keys: memory follows the batch, not the rows read
    # (a day-spanning check of a 10M-row partition peaked at 3.6 GB reading them whole).
    reader = table.scan(row_filter=scope, selected_fields=(key,)).to_arrow_batch_reader()
    for batch in reader:
        keys = batch.column(0).cast(key_type)
        present.append(keys.filter(pc.is_in(keys, value_set=wanted)))
    seen = pa.chunked_array(present, type=key_type).combine_chunks()
    fresh = rows.filter(pc.invert(pc.is_in(rows[key], value_set=seen)))
    # A batch may repeat a key (a producer logged a request twice): keep the first.
    return _first_per_key(fresh, key)


def to_table_schema(rows: pa.Table, schema: pa.Schema, table_name: str) -> pa.Table:
    """`rows` with exactly the table's columns, in the table's order, matched by name.

    A table's column order is the order its columns were added: ensure_tables evolves older
    tables by name, so a table created before several schema changes (merged in any order) has
    the same columns as the writer's Arrow schema but not in the same order, and Arrow's cast
    matches columns by position. A column the rows lack reads as nulls when it is optional (a
    writer older than the column).

    Raises:
        TableSchemaMismatchError: a column the table does not have (its rows would be dropped
            silently), or a required column missing.
    """
    unknown = [name for name in rows.column_names if schema.get_field_index(name) < 0]
    if unknown:
        raise TableSchemaMismatchError(
            f"rows for {table_name} have columns the table lacks: {', '.join(unknown)}; run "
            "any whylake command once to evolve the tables (lake.catalog.ensure_tables)"
        )
    present = set(rows.column_names)
    missing = [f.name for f in schema if f.name not in present and not f.nullable]
    if missing:
        raise TableSchemaMismatchError(
            f"rows for {table_name} lack required columns: {', '.join(missing)}"
        )
    columns = [
        rows[f.name] if f.name in present else pa.nulls(rows.num_rows, f.type) for f in schema
    ]
    return pa.Table.from_arrays(columns, names=schema.names).cast(schema)


def _without_client_retry(table: Table) -> Table:
    """The same table whose commits pyiceberg does not retry on its own (see the module doc)."""
    return with_client_retry(table, {TableProperties.COMMIT_NUM_RETRIES: "0"})


def with_client_retry(table: Table, retry: dict[str, str]) -> Table:
    """The same table whose commits pyiceberg retries as `retry` says (commit.retry.* values).

    pyiceberg reads its retry budget from the table's properties when it commits; this copy
    holds them overridden. The catalog applies the commit to the metadata it has itself, so
    nothing of the override is ever written. Only for commits that pyiceberg re-validates on
    its own when it retries (a file replace checks its files are still live); never for an
    append that a key check guards (see the module doc).
    """
    properties = table.metadata.properties
    if all(properties.get(k) == v for k, v in retry.items()):
        return table
    metadata = table.metadata.model_copy(update={"properties": {**properties, **retry}})
    return Table(table.name(), metadata, table.metadata_location, table.io, table.catalog)


def _first_per_key(rows: pa.Table, key: str) -> pa.Table:
    """The first row of each key, in the original order."""
    if rows.num_rows == 0:
        return rows
    positions = rows.select([key]).append_column("_pos", pa.array(range(rows.num_rows)))
    first = positions.group_by(key, use_threads=False).aggregate([("_pos", "min")])["_pos_min"]
    if len(first) == rows.num_rows:
        return rows
    return rows.take(pa.array(np.sort(first.to_numpy())))
