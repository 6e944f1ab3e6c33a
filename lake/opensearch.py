"""The OpenSearch hot replica's client side: connection, index names, bulk indexing (no Beam)."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date
from typing import Any

from whylake.schemas.errors import ConfigError
from whylake.schemas.explanation import EXPLANATION_SCHEMA_VERSION
from whylake.schemas.ids import check_tenant
from whylake.schemas.opensearch import (
    LAYOUT,
    explanation_mapping,
    index_template,
    top_attributions,
)
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
    batch_size: int = 1000  # documents per bulk request
    max_retries: int = 3
    timeout_s: float = 30.0
    # Bulk requests in flight at once (opensearch-py's parallel_bulk). The node indexes on
    # its own threads, so a second request in flight overlaps our serialisation with its work.
    threads: int = 2
    # What every index gets from the template; a backfill lifts refresh and replicas while it
    # loads and restores these afterwards.
    number_of_replicas: int = 0
    refresh_interval: str = "1s"

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"opensearch url must start with http:// or https://: {self.url!r}")
        if self.batch_size <= 0 or self.max_retries < 0:
            raise ConfigError("batch_size must be positive and max_retries non-negative")
        if self.threads < 1 or self.number_of_replicas < 0:
            raise ConfigError("threads must be at least 1 and number_of_replicas non-negative")
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
            serializer=_orjson_serializer(),
            **({"pool_maxsize": pool_maxsize} if pool_maxsize else {}),
        )

    def index_for(self, tenant_id: str, day: date) -> str:
        """One index per tenant per UTC day (and layout version): a tenant's queries name
        only its own indices."""
        return f"{self.index_prefix}-{LAYOUT}-{check_tenant(tenant_id)}-{day:%Y.%m.%d}"

    def tenant_pattern(self, tenant_id: str) -> str:
        return f"{self.index_prefix}-{LAYOUT}-{check_tenant(tenant_id)}-*"


def to_document(record: Row) -> Row:
    """An explanation record as an OpenSearch document: the record and its flat top-k.

    Datetimes stay datetimes: the orjson serializer writes them as RFC 3339 in C.
    """
    return {**record, **top_attributions(record.get("attributions"))}


def _orjson_serializer() -> Any:
    """opensearch-py's JSON serializer with orjson inside (C; writes datetimes itself).

    Measured on bench/replica.py's documents (30 attributions), on this 2-core machine while
    shared (load ~20): 44 us per document against 566 us for the client's default stdlib
    json with its `default` hook (13x).
    """
    import orjson
    from opensearchpy.exceptions import SerializationError
    from opensearchpy.serializer import JSONSerializer

    class OrjsonSerializer(JSONSerializer):  # type: ignore[misc]
        def dumps(self, data: Any) -> Any:
            if isinstance(data, str):
                return data
            try:
                return orjson.dumps(data, default=self.default).decode()
            except (TypeError, orjson.JSONEncodeError) as exc:
                raise SerializationError(data, exc) from exc

        def loads(self, s: Any) -> Any:
            try:
                return orjson.loads(s)
            except orjson.JSONDecodeError as exc:
                raise SerializationError(s, exc) from exc

    return OrjsonSerializer()


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

    The index template is put once per `known_indices` set (a writer's lifetime); the
    indices themselves are created by the bulk request that first names them, and an index
    that already exists is checked once for an older schema version (`upgrade_mapping`).
    Bulk requests go out `config.threads` at a time. A failed pass is retried with
    exponential backoff (bounded by max_retries; indexing by id is idempotent); a document
    OpenSearch rejects is counted as failed, never dropped silently.
    """
    from opensearchpy import OpenSearchException

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
            if _TEMPLATE_MARK not in known:
                ensure_template(client, config)
                known.add(_TEMPLATE_MARK)
            for index in {a["_index"] for a in actions} - known:
                upgrade_mapping(client, index)
                known.add(index)
            ok, errors = _bulk(client, config, actions)
            if errors:
                log.warning("opensearch rejected %d documents: %s", len(errors), errors[:1])
            return IndexOutcome(ok, len(errors), str(errors[:1]) if errors else None)
        except (OpenSearchException, ConnectionError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"
            if attempt < config.max_retries:
                time.sleep(min(4.0, 0.25 * 2**attempt))
    log.warning("opensearch unreachable, %d documents left to backfill: %s", len(actions), error)
    return IndexOutcome(0, len(actions), error)


_TEMPLATE_MARK = "\x00template"  # not an index name: marks "template put" in a known set


def _bulk(client: Any, config: OpenSearchConfig, actions: list[Row]) -> tuple[int, list[Any]]:
    """Index actions; returns (indexed, per-document errors). Transport errors raise."""
    from opensearchpy import helpers

    if config.threads == 1 or len(actions) <= config.batch_size:
        ok, errors = helpers.bulk(
            client,
            actions,
            chunk_size=config.batch_size,
            raise_on_error=False,
            max_retries=config.max_retries,
            initial_backoff=1,
        )
        return int(ok), list(errors) if isinstance(errors, list) else []
    indexed, failed = 0, []
    for success, item in helpers.parallel_bulk(
        client,
        actions,
        thread_count=config.threads,
        chunk_size=config.batch_size,
        queue_size=config.threads,
        raise_on_error=False,
    ):
        if success:
            indexed += 1
        else:
            failed.append(item)
    return indexed, failed


def upgrade_mapping(client: Any, index: str) -> None:
    """Bring an existing index made under an older schema version up to the current mapping.

    The mapping is `dynamic: strict`, so an index made before columns were added would refuse
    documents with them: it gets the new fields (adding fields is the one mapping change
    OpenSearch allows in place; old documents keep theirs). A new index needs nothing: the
    template gives it the current mapping when the bulk request creates it.
    """
    if not client.indices.exists(index=index):
        return
    current = client.indices.get_mapping(index=index)[index]["mappings"]
    version = current.get("_meta", {}).get("whylake_schema_version", 0)
    wanted = explanation_mapping()
    # A column appended without a version bump (optional columns of a later issue) must reach
    # the mapping too: compare the fields, not only the version.
    missing = set(wanted["properties"]) - set(current.get("properties", {}))
    if version < EXPLANATION_SCHEMA_VERSION or missing:
        client.indices.put_mapping(index=index, body=wanted)


def ensure_template(client: Any, config: OpenSearchConfig) -> None:
    """Put the composable index template (idempotent: the same body replaces itself)."""
    client.indices.put_index_template(
        name=config.index_prefix,
        body=index_template(
            config.index_prefix,
            replicas=config.number_of_replicas,
            refresh_interval=config.refresh_interval,
        ),
    )
