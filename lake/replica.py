"""Operate the OpenSearch hot replica: backfill from Iceberg, retention, tenant-scoped search."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pyiceberg.catalog import Catalog
from pyiceberg.expressions import And, BooleanExpression, EqualTo, GreaterThanOrEqual

from whylake.lake.catalog import EXPLANATIONS
from whylake.lake.opensearch import IndexOutcome, OpenSearchConfig, index_records
from whylake.schemas.errors import ConfigError
from whylake.schemas.ids import check_tenant


def backfill(
    catalog: Catalog,
    config: OpenSearchConfig,
    since: date,
    tenant: str | None = None,
    chunk: int = 5000,
) -> IndexOutcome:
    """Index every explanation with event_ts on or after `since` (optionally one tenant).

    Iceberg is the system of record; documents keep their explanation ids, so a backfill over
    documents already present overwrites them and adds nothing.
    """
    start = datetime(since.year, since.month, since.day, tzinfo=UTC)
    expr: BooleanExpression = GreaterThanOrEqual("event_ts", start.isoformat())
    if tenant:
        expr = And(EqualTo("tenant_id", check_tenant(tenant)), expr)
    client = config.client()
    known: set[str] = set()
    indexed = failed = 0
    error = None
    try:
        for rows in _chunks(catalog, expr, chunk):
            outcome = index_records(client, config, rows, known)
            indexed, failed = indexed + outcome.indexed, failed + outcome.failed
            error = error or outcome.error
    finally:
        client.close()
    return IndexOutcome(indexed, failed, error)


def _chunks(catalog: Catalog, expr: BooleanExpression, size: int) -> Iterator[list[dict[str, Any]]]:
    reader = catalog.load_table(EXPLANATIONS).scan(row_filter=expr).to_arrow_batch_reader()
    for batch in reader:
        rows = batch.to_pylist()
        for i in range(0, len(rows), size):
            yield rows[i : i + size]


def retention(config: OpenSearchConfig, days: int, today: date | None = None) -> list[str]:
    """Delete the per-tenant per-day indices older than `days`; returns the names deleted."""
    if days < 1:
        raise ConfigError(f"--days must be at least 1, got {days}")
    cutoff = (today or datetime.now(UTC).date()) - timedelta(days=days)
    client = config.client()
    try:
        names = list(
            client.indices.get(index=f"{config.index_prefix}-*", expand_wildcards="open,closed")
        )
        old = [n for n in names if (d := _index_day(n)) is not None and d < cutoff]
        for name in old:
            client.indices.delete(index=name)
        return sorted(old)
    finally:
        client.close()


def _index_day(name: str) -> date | None:
    try:
        return datetime.strptime(name.rsplit("-", 1)[-1], "%Y.%m.%d").date()
    except ValueError:
        return None


@dataclass(frozen=True)
class SearchQuery:
    """What a support engineer looks for, always within one tenant."""

    tenant_id: str
    request_id: str | None = None
    feature: str | None = None  # explanations where this feature's |attribution| >= min_value
    min_abs_attribution: float = 0.0
    since: datetime | None = None
    until: datetime | None = None
    size: int = 20


def search(
    config: OpenSearchConfig, query: SearchQuery, client: Any | None = None
) -> list[dict[str, Any]]:
    """Documents of one tenant's indices only, newest event first (reuses `client` if given)."""
    must: list[dict[str, Any]] = [{"term": {"tenant_id": query.tenant_id}}]
    if query.request_id:
        must.append({"term": {"request_id": query.request_id}})
    if query.since or query.until:
        window = {}
        if query.since:
            window["gte"] = query.since.isoformat()
        if query.until:
            window["lt"] = query.until.isoformat()
        must.append({"range": {"event_ts": window}})
    if query.feature:
        threshold = abs(query.min_abs_attribution)
        must.append(
            {
                "nested": {
                    "path": "attributions",
                    "query": {
                        "bool": {
                            "must": [{"term": {"attributions.feature": query.feature}}],
                            "should": [
                                {"range": {"attributions.value": {"gte": threshold}}},
                                {"range": {"attributions.value": {"lte": -threshold}}},
                            ],
                            "minimum_should_match": 1,
                        }
                    },
                }
            }
        )
    own = client is None
    client = client if client is not None else config.client()
    try:
        # The index pattern names the tenant (validated: no wildcard or comma can widen it);
        # the term filter on tenant_id is a second, independent fence.
        response = client.search(
            index=config.tenant_pattern(query.tenant_id),
            body={
                "query": {"bool": {"filter": must}},
                "size": query.size,
                "sort": [{"event_ts": "desc"}],
            },
            params={"ignore_unavailable": "true", "allow_no_indices": "true"},
        )
    finally:
        if own:
            client.close()
    return [hit["_source"] for hit in response["hits"]["hits"]]
