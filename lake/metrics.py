"""The monitoring tables (metrics, alerts): tenant-scoped reads and idempotent appends.

Every read names one tenant and is pushed down to that tenant's identity partition, then
checked row by row (as tenant SQL is): no function here can return another tenant's rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog import Catalog
from pyiceberg.expressions import (
    And,
    BooleanExpression,
    EqualTo,
    GreaterThanOrEqual,
    LessThan,
    LessThanOrEqual,
)

from whylake.lake.catalog import ALERTS, EXPLANATIONS, METRICS
from whylake.lake.commit import CommitResult, append_once
from whylake.schemas.arrow import strict_table
from whylake.schemas.errors import TenantScopeError
from whylake.schemas.ids import check_tenant
from whylake.schemas.metrics import ALERTS_ARROW_SCHEMA

# What drift needs of each explained row (nothing else is read).
EXPLAINED_COLUMNS = (
    "explanation_id",
    "tenant_id",
    "request_id",
    "event_ts",
    "model_id",
    "model_version",
    "attributions",
    "inclusion_probability",
    "ht_weight",
    "flags",
    "trust_tier",
)


def _tenant_filter(
    tenant: str,
    day_field: str,
    since: date | None,
    until: date | None,
    model: str | None,
    *,
    timestamp: bool = False,
) -> BooleanExpression:
    expr: BooleanExpression = EqualTo("tenant_id", check_tenant(tenant))
    if model is not None:
        expr = And(expr, EqualTo("model_id", model))
    if timestamp:
        if since is not None:
            start = datetime(since.year, since.month, since.day, tzinfo=UTC)
            expr = And(expr, GreaterThanOrEqual(day_field, start.isoformat()))
        if until is not None:
            end = datetime(until.year, until.month, until.day, tzinfo=UTC) + timedelta(days=1)
            expr = And(expr, LessThan(day_field, end.isoformat()))
        return expr
    if since is not None:
        expr = And(expr, GreaterThanOrEqual(day_field, since.isoformat()))
    if until is not None:
        expr = And(expr, LessThanOrEqual(day_field, until.isoformat()))
    return expr


def _checked(rows: pa.Table, tenant: str, table: str) -> pa.Table:
    # The invariant every monitoring view rests on, checked rather than assumed.
    if rows.num_rows and not pc.all(pc.equal(rows["tenant_id"], tenant)).as_py():
        raise TenantScopeError(
            f"a scan of {table} for tenant {tenant!r} returned other tenants' rows; refusing to "
            "answer (report this as a bug)"
        )
    return rows


def read_metrics(
    catalog: Catalog,
    tenant: str,
    *,
    model: str | None = None,
    since: date | None = None,
    until: date | None = None,
) -> list[dict[str, Any]]:
    """The tenant's metrics rows (every run's), days in [since, until]."""
    return _scan_days(catalog, METRICS, tenant, model, since, until)


def read_alerts(
    catalog: Catalog,
    tenant: str,
    *,
    model: str | None = None,
    since: date | None = None,
    until: date | None = None,
) -> list[dict[str, Any]]:
    """The tenant's alerts, days in [since, until], oldest first."""
    out = _scan_days(catalog, ALERTS, tenant, model, since, until)
    return sorted(out, key=lambda r: (r["day"], r["kind"], r["slo"] or "", r["alert_id"]))


def _scan_days(
    catalog: Catalog,
    name: str,
    tenant: str,
    model: str | None,
    since: date | None,
    until: date | None,
) -> list[dict[str, Any]]:
    """One tenant's rows of a table partitioned by `day`, checked to be that tenant's."""
    rows = (
        catalog.load_table(name)
        .scan(row_filter=_tenant_filter(tenant, "day", since, until, model))
        .to_arrow()
    )
    return _checked(rows, tenant, name).to_pylist()


def read_explained(
    catalog: Catalog,
    tenant: str,
    *,
    model: str | None = None,
    since: date | None = None,
    until: date | None = None,
) -> pa.Table:
    """The tenant's explained rows with the columns drift needs, events in [since, until]."""
    table = catalog.load_table(EXPLANATIONS)
    row_filter = _tenant_filter(tenant, "event_ts", since, until, model, timestamp=True)
    rows = table.scan(row_filter=row_filter, selected_fields=EXPLAINED_COLUMNS).to_arrow()
    return _checked(rows, tenant, EXPLANATIONS)


def explanations_snapshot(catalog: Catalog) -> int | None:
    """The explanations table's current snapshot id: alerts cite the state they read."""
    snapshot = catalog.load_table(EXPLANATIONS).current_snapshot()
    return snapshot.snapshot_id if snapshot is not None else None


def append_alerts(
    catalog: Catalog, alerts: Sequence[dict[str, Any]], *, run_id: str
) -> list[CommitResult]:
    """Append alerts idempotently (alert ids are deterministic), one commit per tenant."""
    results = []
    for tenant in sorted({a["tenant_id"] for a in alerts}):
        mine = [a for a in alerts if a["tenant_id"] == tenant]
        table = strict_table(mine, ALERTS_ARROW_SCHEMA)
        results.append(
            append_once(
                catalog,
                ALERTS,
                table,
                key="alert_id",
                scope=EqualTo("tenant_id", check_tenant(tenant)),
                run_id=run_id,
                batch_id=f"{tenant}:alerts:{len(mine)}:{min(a['alert_id'] for a in mine)[:16]}",
            )
        )
    return results
