"""Operate the OpenSearch hot replica: backfill from Iceberg, retention, tenant-scoped search."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pyiceberg.catalog import Catalog
from pyiceberg.expressions import And, BooleanExpression, EqualTo, GreaterThanOrEqual

from whylake.lake.catalog import EXPLANATIONS
from whylake.lake.opensearch import (
    IndexOutcome,
    OpenSearchConfig,
    ensure_template,
    index_records,
)
from whylake.schemas.errors import ConfigError
from whylake.schemas.ids import check_tenant
from whylake.schemas.opensearch import TOP_K, top_field


def backfill(
    catalog: Catalog,
    config: OpenSearchConfig,
    since: date,
    tenant: str | None = None,
    chunk: int = 5000,
) -> IndexOutcome:
    """Index every explanation with event_ts on or after `since` (optionally one tenant).

    Iceberg is the system of record; documents keep their explanation ids, so a backfill over
    documents already present overwrites them and adds nothing. While it loads, the indices
    it writes have refresh off and no replicas (a bulk load's usual settings); afterwards
    they get the configured refresh interval and replica count back, and are refreshed.
    """
    start = datetime(since.year, since.month, since.day, tzinfo=UTC)
    expr: BooleanExpression = GreaterThanOrEqual("event_ts", start.isoformat())
    if tenant:
        expr = And(EqualTo("tenant_id", check_tenant(tenant)), expr)
    client = config.client()
    known: set[str] = set()
    loading: set[str] = set()
    indexed = failed = 0
    error = None
    try:
        ensure_template(client, config)
        for rows in _chunks(catalog, expr, chunk):
            _prepare_for_load(client, config, rows, loading)
            outcome = index_records(client, config, rows, known)
            indexed, failed = indexed + outcome.indexed, failed + outcome.failed
            error = error or outcome.error
    finally:
        try:
            _restore_after_load(client, config, loading)
        finally:
            client.close()
    return IndexOutcome(indexed, failed, error)


BULK_LOAD_SETTINGS = {"refresh_interval": "-1", "number_of_replicas": 0}


def _prepare_for_load(
    client: Any, config: OpenSearchConfig, rows: list[dict[str, Any]], loading: set[str]
) -> None:
    """Create (from the template) or switch each new target index to bulk-load settings."""
    from opensearchpy.exceptions import RequestError

    names = {config.index_for(r["tenant_id"], r["event_ts"].astimezone(UTC).date()) for r in rows}
    for name in sorted(names - loading):
        if client.indices.exists(index=name):
            client.indices.put_settings(index=name, body={"index": BULK_LOAD_SETTINGS})
        else:
            try:
                client.indices.create(index=name, body={"settings": {"index": BULK_LOAD_SETTINGS}})
            except RequestError as exc:  # a live writer created it meanwhile
                if "resource_already_exists_exception" not in str(exc):
                    raise
                client.indices.put_settings(index=name, body={"index": BULK_LOAD_SETTINGS})
        loading.add(name)


def _restore_after_load(client: Any, config: OpenSearchConfig, loading: set[str]) -> None:
    if not loading:
        return
    names = ",".join(sorted(loading))
    settings = {
        "refresh_interval": config.refresh_interval,
        "number_of_replicas": config.number_of_replicas,
    }
    client.indices.put_settings(index=names, body={"index": settings})
    client.indices.refresh(index=names)


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
    feature: str | None = None  # this feature in the top k with |attribution| >= min_abs
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
        # Flat top-k fields (schemas/opensearch.py): the feature at some rank 1..k with at
        # least this |attribution|. Exact for features in an explanation's top k.
        threshold = abs(query.min_abs_attribution)
        ranks = [
            {
                "bool": {
                    "filter": [
                        {"term": {f"{top_field(rank)}.feature": query.feature}},
                        {"range": {f"{top_field(rank)}.abs_value": {"gte": threshold}}},
                    ]
                }
            }
            for rank in range(1, TOP_K + 1)
        ]
        must.append({"bool": {"should": ranks, "minimum_should_match": 1}})
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
