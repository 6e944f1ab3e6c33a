"""The OpenSearch hot replica's client side: connection, index names, bulk indexing (no Beam)."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from whylake.schemas.errors import ConfigError
from whylake.schemas.explanation import EXPLANATION_SCHEMA_VERSION
from whylake.schemas.ids import check_tenant
from whylake.schemas.opensearch import explanation_mapping
from whylake.schemas.secrets import Secret

log = logging.getLogger(__name__)
Row = dict[str, Any]


@dataclass(frozen=True)
class OpenSearchConfig:
    """Where the replica lives and how hard to push; TLS and basic auth for real clusters."""

    url: str
    username: str | None = None
    password: Secret | None = None
    verify_certs: bool = True
    ca_certs: str | None = None
    index_prefix: str = "whylake-explanations"
    batch_size: int = 1000
    max_retries: int = 3
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"opensearch url must start with http:// or https://: {self.url!r}")
        if self.batch_size <= 0 or self.max_retries < 0:
            raise ConfigError("batch_size must be positive and max_retries non-negative")
        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", self.index_prefix):
            raise ConfigError(f"index_prefix {self.index_prefix!r}: lowercase letters, digits, -_")

    def client(self, pool_maxsize: int | None = None) -> Any:
        """A client; `pool_maxsize` keeps that many connections for callers on many threads."""
        from opensearchpy import OpenSearch

        password = self.password.reveal() if self.password is not None else ""
        auth = (self.username, password) if self.username else None
        return OpenSearch(
            hosts=[self.url],
            http_auth=auth,
            verify_certs=self.verify_certs,
            ca_certs=self.ca_certs,
            timeout=self.timeout_s,
            max_retries=0,
            ssl_show_warn=False,
            **({"pool_maxsize": pool_maxsize} if pool_maxsize else {}),
        )

    def index_for(self, tenant_id: str, day: date) -> str:
        """One index per tenant per UTC day: a tenant's queries name only its own indices."""
        return f"{self.index_prefix}-{check_tenant(tenant_id)}-{day:%Y.%m.%d}"

    def tenant_pattern(self, tenant_id: str) -> str:
        return f"{self.index_prefix}-{check_tenant(tenant_id)}-*"


def to_document(record: Row) -> Row:
    """An explanation record as an OpenSearch document (JSON-safe times)."""
    doc = {}
    for key, value in record.items():
        doc[key] = value.astimezone(UTC).isoformat() if isinstance(value, datetime) else value
    return doc


@dataclass(frozen=True)
class IndexOutcome:
    """How many documents a bulk write indexed and how many it could not."""

    indexed: int
    failed: int
    error: str | None = None


def index_records(
    client: Any,
    config: OpenSearchConfig,
    records: Iterable[Row],
    known_indices: set[str] | None = None,
) -> IndexOutcome:
    """Bulk-index records with their explanation_id as document id (a replay overwrites).

    Retries a failed bulk request with exponential backoff (bounded by max_retries); a
    document OpenSearch rejects is counted as failed, never dropped silently.
    """
    from opensearchpy import OpenSearchException, helpers

    known = known_indices if known_indices is not None else set()
    actions = [
        {
            "_op_type": "index",
            "_id": record["explanation_id"],
            "_source": to_document(record),
            "_index": config.index_for(
                record["tenant_id"], record["event_ts"].astimezone(UTC).date()
            ),
        }
        for record in records
    ]
    if not actions:
        return IndexOutcome(0, 0)
    error: str | None = None
    for attempt in range(config.max_retries + 1):
        try:
            for index in {a["_index"] for a in actions} - known:
                ensure_index(client, index)
                known.add(index)
            ok, errors = helpers.bulk(
                client,
                actions,
                chunk_size=config.batch_size,
                raise_on_error=False,
                max_retries=config.max_retries,
                initial_backoff=1,
            )
            failed = len(errors) if isinstance(errors, list) else int(errors)
            if failed:
                log.warning(
                    "opensearch rejected %d documents: %s",
                    failed,
                    errors[:1] if isinstance(errors, list) else errors,
                )
            return IndexOutcome(int(ok), failed, str(errors[:1]) if failed else None)
        except (OpenSearchException, ConnectionError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"
            if attempt < config.max_retries:
                time.sleep(min(4.0, 0.25 * 2**attempt))
    log.warning("opensearch unreachable, %d documents left to backfill: %s", len(actions), error)
    return IndexOutcome(0, len(actions), error)


def ensure_index(client: Any, index: str) -> None:
    """Create the index with the schema-derived mapping, or bring an older one's mapping up.

    The mapping is `dynamic: strict`, so an index made under an older schema version would
    refuse documents with the columns added since: its mapping gets the new fields (adding
    fields is the one mapping change OpenSearch allows in place; old documents keep theirs).
    """
    from opensearchpy.exceptions import RequestError

    if client.indices.exists(index=index):
        current = client.indices.get_mapping(index=index)[index]["mappings"]
        version = current.get("_meta", {}).get("whylake_schema_version", 0)
        if version < EXPLANATION_SCHEMA_VERSION:
            client.indices.put_mapping(index=index, body=explanation_mapping())
        return
    try:
        client.indices.create(
            index=index,
            body={
                "settings": {
                    "number_of_shards": 1,
                    "number_of_replicas": 0,
                    "refresh_interval": "1s",
                },
                "mappings": explanation_mapping(),
            },
        )
    except RequestError as exc:  # another worker created it first
        if "resource_already_exists_exception" not in str(exc):
            raise
