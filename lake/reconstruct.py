"""Reconstruct an explanation record as it stood at a past snapshot or time (time travel)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pyiceberg.catalog import Catalog
from pyiceberg.expressions import And, EqualTo
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot

from whylake.lake.catalog import EXPLANATIONS
from whylake.lake.history import lineage, point_in_time
from whylake.schemas.errors import ConfigError, RecordNotFoundError, SnapshotNotFoundError

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
HISTORY_FIELDS = (
    "explanation_id",
    "explained_at",
    "model_version",
    "explainer_method",
    "run_id",
    "policy_hash",
    "review_route",
)


@dataclass(frozen=True)
class Reconstruction:
    """One request's explanation record as visible in one snapshot, with its earlier versions."""

    record: dict[str, Any]  # the latest explained_at among the rows visible in the snapshot
    snapshot_id: int
    snapshot_committed_at: datetime
    history: list[dict[str, Any]]  # every record of the request visible then, oldest first
    as_of: datetime | None = None  # the time asked for, when reconstructed by time
    # The request's human reviews visible at the same time, oldest first (lake.reviews).
    reviews: list[dict[str, Any]] = field(default_factory=list)

    @property
    def tenant_id(self) -> str:
        """The tenant the record belongs to."""
        return str(self.record["tenant_id"])

    @property
    def request_id(self) -> str:
        """The request the record explains."""
        return str(self.record["request_id"])


def reconstruct(
    catalog: Catalog,
    tenant_id: str,
    request_id: str,
    *,
    as_of: datetime | None = None,
    snapshot_id: int | None = None,
) -> Reconstruction:
    """The explanation of `request_id` for `tenant_id` as the audit table held it then.

    With neither `as_of` nor `snapshot_id` this reads the current snapshot. The table is
    append-only, so a request explained again later has several rows; the record is the one
    with the latest `explained_at` visible in the snapshot, and `history` lists them all.

    Raises:
        SnapshotNotFoundError: no such snapshot id, or `as_of` precedes the first commit.
        RecordNotFoundError: the tenant has no record of that request in that snapshot.
        ValueError: both `as_of` and `snapshot_id`, or an `as_of` without a time zone.
    """
    _check_id("tenant_id", tenant_id)
    _check_id("request_id", request_id)
    # Through the commit log when the snapshot has expired (lake/history.py): the answer is the
    # same before and after maintenance.
    point = point_in_time(catalog, EXPLANATIONS, as_of=as_of, snapshot_id=snapshot_id)
    if point is None:
        if as_of is not None:
            known = lineage(catalog, EXPLANATIONS).describe()
            raise SnapshotNotFoundError(
                f"{EXPLANATIONS} had no snapshot at {as_of.isoformat()}; {known}"
            )
        raise SnapshotNotFoundError(
            f"{EXPLANATIONS} has no snapshots yet: nothing has been committed, so there is "
            "nothing to reconstruct; run a batch or streaming job first"
        )
    # Both predicates are pushed down: tenant_id prunes to the tenant's partitions, request_id
    # skips files by their column statistics. Rows of another tenant are never read.
    rows = point.scan(
        And(EqualTo("tenant_id", tenant_id), EqualTo("request_id", request_id))
    ).to_pylist()
    rows = [r for r in rows if r["tenant_id"] == tenant_id and r["request_id"] == request_id]
    committed_at = point.committed_at
    if not rows:
        raise RecordNotFoundError(
            f"tenant {tenant_id!r} has no explanation of request {request_id!r} in snapshot "
            f"{point.snapshot_id} (committed {committed_at.isoformat()}); check both ids, "
            "or ask for a later time or the current snapshot if it was explained since"
        )
    # explanation_id breaks ties so the answer is the same on every read.
    rows.sort(key=lambda r: (r["explained_at"], r["explanation_id"]))
    return Reconstruction(
        record=rows[-1],
        snapshot_id=point.snapshot_id,
        snapshot_committed_at=committed_at,
        # .get: rows written before a history column existed read it as null.
        history=[{k: r.get(k) for k in HISTORY_FIELDS} for r in rows],
        as_of=as_of,
    )


def snapshot_at(
    table: Table, *, as_of: datetime | None = None, snapshot_id: int | None = None
) -> Snapshot | None:
    """The snapshot with this id, or current at `as_of`, or the current one (None: no commits).

    Live snapshots only: for time travel that still answers after snapshot expiry use
    `lake.history.point_in_time`.

    Raises:
        SnapshotNotFoundError: no snapshot has that id, or `as_of` precedes the first commit.
        ValueError: both arguments given, or `as_of` has no time zone.
    """
    if as_of is not None and snapshot_id is not None:
        raise ConfigError("give as_of or snapshot_id, not both")
    if snapshot_id is not None:
        snapshot = table.snapshot_by_id(snapshot_id)
        if snapshot is None:
            raise SnapshotNotFoundError(
                f"{_name(table)} has no snapshot {snapshot_id}; {_snapshot_range(table)}"
            )
        return snapshot
    if as_of is None:
        return table.current_snapshot()
    snapshot = table.snapshot_as_of_timestamp(to_millis(as_of), inclusive=True)
    if snapshot is None:
        raise SnapshotNotFoundError(
            f"{_name(table)} had no snapshot at {as_of.isoformat()}; {_snapshot_range(table)}"
        )
    return snapshot


def to_millis(moment: datetime) -> int:
    """Milliseconds since the epoch, the unit of Iceberg snapshot times (floored)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ConfigError(
            f"as_of {moment.isoformat()} has no time zone; give one, e.g. "
            f"{moment.isoformat()}+00:00 for UTC"
        )
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def committed_time(snapshot: Snapshot) -> datetime:
    """When a snapshot was committed, in UTC."""
    return _EPOCH + timedelta(milliseconds=snapshot.timestamp_ms)


def parse_as_of(text: str) -> datetime:
    """Parse an ISO 8601 time with a zone ('2024-05-01T12:00:00Z') for a command line flag."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ConfigError(
            f"as_of {text!r} is not an ISO 8601 time; use e.g. 2024-05-01T12:00:00Z"
        ) from exc
    if moment.tzinfo is None:
        # An audit answer must not depend on the clock settings of the machine asking.
        raise ConfigError(f"as_of {text!r} has no time zone; add one, e.g. {text}Z for UTC")
    return moment


def to_json(reconstruction: Reconstruction) -> str:
    """Deterministic JSON: sorted keys, ISO 8601 UTC times, non-finite floats as strings."""
    document = {
        "as_of": reconstruction.as_of,
        "snapshot_id": reconstruction.snapshot_id,
        "snapshot_committed_at": reconstruction.snapshot_committed_at,
        "record": reconstruction.record,
        "history": reconstruction.history,
        "reviews": reconstruction.reviews,
    }
    return json.dumps(_jsonable(document), sort_keys=True, indent=2, allow_nan=False)


def jsonable(value: Any) -> Any:
    """A record (or any value) in strict-JSON types: ISO 8601 UTC times, NaN/inf as strings."""
    return _jsonable(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return value.isoformat(timespec="microseconds")
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    if isinstance(value, float) and not math.isfinite(value):
        # Strict JSON has no NaN/Infinity; a string keeps the value visible instead of null.
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _snapshot_range(table: Table) -> str:
    snapshots = sorted(table.snapshots(), key=lambda s: s.timestamp_ms)
    if not snapshots:
        return "it has no snapshots yet (nothing has been committed)"
    first, last = snapshots[0], snapshots[-1]
    return (
        f"its earliest commit is snapshot {first.snapshot_id} at "
        f"{committed_time(first).isoformat()} and its latest is snapshot {last.snapshot_id} at "
        f"{committed_time(last).isoformat()}; ask for a time or id in that range"
    )


def _name(table: Table) -> str:
    return ".".join(table.name())


def _check_id(name: str, value: str) -> None:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{name} must be a non-empty string, got {value!r}")
