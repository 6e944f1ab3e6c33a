"""Append rows to an Iceberg table exactly once: skip keys already present, retry on conflict."""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.expressions import BooleanExpression

from whylake.schemas.errors import CommitRetriesExhaustedError, ConfigError

log = logging.getLogger(__name__)

RUN_ID_PROPERTY = "whylake.run-id"
BATCH_ID_PROPERTY = "whylake.batch-id"


@dataclass(frozen=True)
class CommitConfig:
    """How hard to try before giving up on a conflicting commit."""

    max_attempts: int = 20
    min_wait_s: float = 0.05
    max_wait_s: float = 5.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if not 0 <= self.min_wait_s <= self.max_wait_s:
            raise ConfigError("need 0 <= min_wait_s <= max_wait_s")


@dataclass(frozen=True)
class CommitResult:
    """What one idempotent append did."""

    table: str
    batch_id: str
    snapshot_id: int | None  # None when every row was already present
    rows_committed: int
    rows_already_present: int
    attempts: int


def append_once(
    catalog: Catalog,
    table_name: str,
    rows: pa.Table,
    *,
    key: str,
    scope: BooleanExpression,
    run_id: str,
    batch_id: str,
    config: CommitConfig = CommitConfig(),
) -> CommitResult:
    """Append the rows whose `key` is not yet in the table, in one snapshot tagged with the batch.

    `scope` is a filter covering every row of `rows` (e.g. their tenant and days) so the
    existing keys are read from those partitions only. Each attempt re-reads the table, so a
    writer that loses a race to another writer of the same keys commits nothing twice; the
    snapshot summary carries run and batch ids for the audit trail.
    """
    for attempt in range(1, config.max_attempts + 1):
        table = catalog.load_table(table_name)
        existing = table.scan(row_filter=scope, selected_fields=(key,)).to_arrow()[key]
        fresh = rows.filter(pc.invert(pc.is_in(rows[key], value_set=existing.combine_chunks())))
        # A batch may repeat a key (a producer logged a request twice): keep the first.
        fresh = _first_per_key(fresh, key)
        skipped = rows.num_rows - fresh.num_rows
        if fresh.num_rows == 0:
            return CommitResult(table_name, batch_id, None, 0, skipped, attempt)
        try:
            table.append(
                fresh.cast(table.schema().as_arrow()),
                snapshot_properties={RUN_ID_PROPERTY: run_id, BATCH_ID_PROPERTY: batch_id},
            )
        except CommitFailedException as exc:
            wait = min(config.max_wait_s, config.min_wait_s * 2 ** (attempt - 1))
            log.warning(
                "commit of batch %s to %s conflicted (%s); retry %d/%d in %.2fs",
                batch_id,
                table_name,
                exc,
                attempt,
                config.max_attempts,
                wait,
            )
            time.sleep(wait * random.uniform(1.0, 1.5))
            continue
        snapshot = table.current_snapshot()
        assert snapshot is not None
        return CommitResult(
            table_name, batch_id, snapshot.snapshot_id, fresh.num_rows, skipped, attempt
        )
    raise CommitRetriesExhaustedError(
        f"batch {batch_id} to {table_name} still conflicted after {config.max_attempts} attempts; "
        "it committed nothing, so rerunning the job is safe"
    )


def _first_per_key(rows: pa.Table, key: str) -> pa.Table:
    """The first row of each key, in the original order."""
    if rows.num_rows == 0:
        return rows
    positions = rows.select([key]).append_column("_pos", pa.array(range(rows.num_rows)))
    first = positions.group_by(key, use_threads=False).aggregate([("_pos", "min")])["_pos_min"]
    if len(first) == rows.num_rows:
        return rows
    return rows.take(pa.array(np.sort(first.to_numpy())))
