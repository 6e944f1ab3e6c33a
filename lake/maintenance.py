"""Safe maintenance of the audit tables: snapshot expiry that honours the retention horizon.

Expiry here first logs every snapshot in whylake.commits (so time travel keeps answering after
the snapshot is gone, lake/history.py), then removes only snapshots older than each table's
horizon (`history.expire.max-snapshot-age-ms`) and outside its newest
`history.expire.min-snapshots-to-keep`, as Iceberg's own ExpireSnapshots reads those
properties, with pyiceberg's maintenance API. Asking for more is refused: shortening the
horizon is a separate, explicit step (`set_retention(..., shorten=True)`).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException

from whylake.lake.catalog import ALERTS, COMMITS, METRICS, RetentionConfig
from whylake.lake.history import LOGGED_TABLES, lineage, logged_commits, record_history
from whylake.schemas.errors import HistoryIncompleteError, RetentionError

# Every whylake table. The monitoring tables' history is not logged (nothing reads them as of a
# past time), but they keep the same horizon: their alerts are part of the audit trail.
MAINTAINED_TABLES = (*LOGGED_TABLES, METRICS, ALERTS, COMMITS)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Expiry:
    """What snapshot expiry did (or, in a dry run, would do) to one table."""

    table: str
    retention_days: int
    cutoff: datetime  # snapshots committed before this were eligible
    expired: tuple[int, ...]
    kept: int  # snapshots left in the table's metadata


def retention_of(catalog: Catalog, table_name: str) -> RetentionConfig:
    """The horizon a table carries (the default where it carries none: never less than that)."""
    return RetentionConfig.of(catalog.load_table(table_name)) or RetentionConfig()


def set_retention(
    catalog: Catalog,
    retention: RetentionConfig,
    *,
    shorten: bool = False,
    tables: tuple[str, ...] = MAINTAINED_TABLES,
) -> dict[str, RetentionConfig]:
    """Write the horizon into the tables' properties; returns each table's horizon before.

    Raises:
        RetentionError: it would shorten a table's horizon and `shorten` is not set.
    """
    before = {name: retention_of(catalog, name) for name in tables}
    shorter = [n for n, r in before.items() if r.days > retention.days]
    if shorter and not shorten:
        raise RetentionError(
            f"{', '.join(shorter)} keep {before[shorter[0]].days} days of snapshot history; "
            f"{retention.days} days would shorten it. Check your retention obligations (the EU "
            "AI Act asks for at least six months of logs), then pass --shorten to confirm"
        )
    for name in tables:
        table = catalog.load_table(name)
        with table.transaction() as tx:
            tx.set_properties(retention.properties())
    return before


def expire_snapshots(
    catalog: Catalog,
    *,
    older_than: datetime | None = None,
    now: datetime | None = None,
    dry_run: bool = False,
    tables: tuple[str, ...] = MAINTAINED_TABLES,
) -> list[Expiry]:
    """Expire snapshots outside the retention horizon, after logging them; report per table.

    `older_than` (default: now minus each table's horizon) may only be earlier than the
    horizon allows, never later. `now` is for tests and for a maintenance job that runs on a
    schedule's logical time.

    Raises:
        RetentionError: `older_than` reaches inside a table's retention horizon.
        HistoryIncompleteError: a snapshot to expire is missing from the commit log.
    """
    now = now or datetime.now(UTC)
    plans = []
    for name in tables:
        retention = retention_of(catalog, name)
        horizon = now - timedelta(days=retention.days)
        cutoff = older_than or horizon
        if cutoff > horizon:
            raise RetentionError(
                f"{name} keeps {retention.days} days of snapshot history (everything committed "
                f"after {horizon.isoformat()}); expiring up to {cutoff.isoformat()} would reach "
                "inside it. Shorten the horizon first (`whylake maintenance retention --days N "
                "--shorten`) if your obligations allow"
            )
        plans.append((name, retention, cutoff))
    if not dry_run:
        # The log first: once a snapshot is gone, its time and sequence number are gone too.
        record_history(catalog, run_id="maintenance")
    done = []
    for name, retention, cutoff in plans:
        for attempt in range(1, 6):
            try:
                done.append(_expire_table(catalog, name, retention, cutoff, dry_run))
                break
            except CommitFailedException:  # a writer committed meanwhile: plan again
                if attempt == 5:
                    raise
                time.sleep(random.uniform(0.0, 0.1 * 2**attempt))
    return done


def _expire_table(
    catalog: Catalog, name: str, retention: RetentionConfig, cutoff: datetime, dry_run: bool
) -> Expiry:
    table = catalog.load_table(name)
    keep = {c.snapshot_id for c in lineage(catalog, name).commits[-retention.min_snapshots :]}
    limit_ms = (cutoff - _EPOCH) // timedelta(milliseconds=1)
    # Branch and tag heads are never expired (pyiceberg skips them too).
    protected = {ref.snapshot_id for ref in table.metadata.refs.values()}
    doomed = sorted(
        s.snapshot_id
        for s in table.snapshots()
        if s.timestamp_ms < limit_ms and s.snapshot_id not in keep | protected
    )
    left = len(table.snapshots()) - (0 if dry_run else len(doomed))
    if doomed and not dry_run:
        if name != COMMITS:
            unlogged = set(doomed) - set(logged_commits(catalog, name))
            if unlogged:
                raise HistoryIncompleteError(
                    f"{name}: snapshots {sorted(unlogged)[:5]} are not in {COMMITS} yet; "
                    "refusing to expire them (time travel to them would be lost)"
                )
        table.maintenance.expire_snapshots().by_ids(doomed).commit()
    return Expiry(name, retention.days, cutoff, tuple(doomed), left)
