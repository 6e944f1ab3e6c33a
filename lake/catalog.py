"""Open the Iceberg catalog from settings resolved on the launcher, and keep its tables current."""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pyiceberg.catalog import AVAILABLE_CATALOGS, Catalog, CatalogType, infer_catalog_type
from pyiceberg.exceptions import (
    CommitFailedException,
    NamespaceAlreadyExistsError,
    TableAlreadyExistsError,
)
from pyiceberg.partitioning import UNPARTITIONED_PARTITION_SPEC, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import Table

from whylake.schemas.commit_log import COMMIT_LOG_SCHEMA
from whylake.schemas.dead_letter import DEAD_LETTER_PARTITION_SPEC, DEAD_LETTER_SCHEMA
from whylake.schemas.errors import CommitRetriesExhaustedError, ConfigError
from whylake.schemas.explanation import EXPLANATION_PARTITION_SPEC, EXPLANATION_SCHEMA
from whylake.schemas.metrics import (
    ALERTS_PARTITION_SPEC,
    ALERTS_SCHEMA,
    METRICS_PARTITION_SPEC,
    METRICS_SCHEMA,
)
from whylake.schemas.review import REVIEW_PARTITION_SPEC, REVIEW_SCHEMA
from whylake.schemas.run_manifest import RUN_SCHEMA
from whylake.schemas.secrets import Secret

log = logging.getLogger(__name__)

CATALOG_NAME = "whylake"
NAMESPACE = "whylake"
EXPLANATIONS = f"{NAMESPACE}.explanations"
DEAD_LETTERS = f"{NAMESPACE}.dead_letters"
RUNS = f"{NAMESPACE}.runs"
REVIEWS = f"{NAMESPACE}.reviews"
METRICS = f"{NAMESPACE}.metrics"
ALERTS = f"{NAMESPACE}.alerts"
COMMITS = f"{NAMESPACE}.commits"

# pyiceberg's own commit retry refreshes the table and re-applies a fast append on the new head
# without re-running whylake's key check, so two writers of the same keys both commit them (the
# 778-rows-for-389 defect of issue 14). Off on every whylake table: lake/commit.py retries at
# its own level, re-checking the keys each time (it also switches the retry off per commit, so
# a table whose property someone changed stays safe). ensure_tables puts these values back.
COMMIT_PROPERTIES = {
    "commit.retry.num-retries": "0",
}
# Row groups of at most 32Ki rows (pyiceberg's default is 1Mi): with rows appended in event-time
# order, Parquet's row-group statistics let the commit protocol's bounded key check
# (lake/commit.py) skip all but the row groups of a batch's minutes; DuckDB still scans row
# groups of this size at full speed. Set once where missing, never overridden.
LAYOUT_PROPERTIES = {
    "write.parquet.row-group-limit": "32768",
}
TABLE_PROPERTIES = {
    "format-version": "2",
    **COMMIT_PROPERTIES,
    **LAYOUT_PROPERTIES,
    "write.parquet.compression-codec": "zstd",
}

_DAY_MS = 86_400_000
# The EU AI Act asks providers (Art. 19(1)) and deployers (Art. 26(6)) of high-risk systems to
# keep automatically generated logs for at least six months; six calendar months can span 184
# days (July to December). Iceberg's standard expiry default is 5 days.
DEFAULT_RETENTION_DAYS = 184
MAX_SNAPSHOT_AGE = "history.expire.max-snapshot-age-ms"
MIN_SNAPSHOTS = "history.expire.min-snapshots-to-keep"


@dataclass(frozen=True)
class RetentionConfig:
    """The compliance horizon: snapshots younger than `days` are kept by any expiry.

    Written into each table as Iceberg's `history.expire.max-snapshot-age-ms` and
    `history.expire.min-snapshots-to-keep`, the defaults of Iceberg's own ExpireSnapshots (Java,
    Spark's expire_snapshots procedure, managed catalogs' maintenance) and of `whylake
    maintenance expire-snapshots`. ensure_tables only ever lengthens a table's horizon;
    shortening it is an explicit maintenance step (`lake.maintenance.set_retention`).
    """

    days: int = DEFAULT_RETENTION_DAYS
    min_snapshots: int = 100  # kept whatever their age: the latest states of an idle table

    def __post_init__(self) -> None:
        if self.days < 1:
            raise ConfigError(f"retention days must be at least 1, got {self.days}")
        if self.min_snapshots < 1:
            raise ConfigError(f"min_snapshots must be at least 1, got {self.min_snapshots}")

    @property
    def max_age_ms(self) -> int:
        return self.days * _DAY_MS

    def properties(self) -> dict[str, str]:
        """The table properties that carry this horizon."""
        return {MAX_SNAPSHOT_AGE: str(self.max_age_ms), MIN_SNAPSHOTS: str(self.min_snapshots)}

    @classmethod
    def of(cls, table: Table) -> RetentionConfig | None:
        """The horizon a table carries, or None when it has none of its own (Iceberg's 5 days)."""
        props = table.metadata.properties
        if MAX_SNAPSHOT_AGE not in props:
            return None
        days = max(1, int(props[MAX_SNAPSHOT_AGE]) // _DAY_MS)
        return cls(days=days, min_snapshots=max(1, int(props.get(MIN_SNAPSHOTS, "1"))))


_TABLES: dict[str, tuple[Schema, PartitionSpec]] = {
    EXPLANATIONS: (EXPLANATION_SCHEMA, EXPLANATION_PARTITION_SPEC),
    DEAD_LETTERS: (DEAD_LETTER_SCHEMA, DEAD_LETTER_PARTITION_SPEC),
    RUNS: (RUN_SCHEMA, UNPARTITIONED_PARTITION_SPEC),
    REVIEWS: (REVIEW_SCHEMA, REVIEW_PARTITION_SPEC),
    METRICS: (METRICS_SCHEMA, METRICS_PARTITION_SPEC),
    ALERTS: (ALERTS_SCHEMA, ALERTS_PARTITION_SPEC),
    COMMITS: (COMMIT_LOG_SCHEMA, UNPARTITIONED_PARTITION_SPEC),
}

# Catalog properties whose values are credentials (REST tokens, S3 / GCS keys, passwords).
_SECRET_PROPERTY = re.compile(r"secret|password|token|credential|access-key|session", re.I)


@dataclass(frozen=True)
class CatalogConfig:
    """Which catalog to open and its properties, resolved once on the machine that launches.

    Workers open exactly this catalog: they read no pyiceberg configuration file or
    environment of their own. Credential-like properties are held as `Secret`s, so the config
    can be shown (`describe`) and logged without them.
    """

    name: str = CATALOG_NAME
    properties: tuple[tuple[str, str | Secret], ...] = ()

    def __post_init__(self) -> None:
        keys = [k for k, _ in self.properties]
        if len(set(keys)) != len(keys):
            raise ConfigError(f"catalog {self.name!r}: a property is given twice in {keys}")

    @classmethod
    def of(cls, name: str, properties: Mapping[str, str]) -> CatalogConfig:
        """From plain properties (e.g. pyiceberg's config), wrapping credentials as secrets."""
        held: list[tuple[str, str | Secret]] = []
        for key, value in sorted(properties.items()):
            text = str(value)
            secret = _SECRET_PROPERTY.search(key) and text
            held.append((key, Secret(text, f"catalog property {key}") if secret else text))
        return cls(name, tuple(held))

    @classmethod
    def embedded(cls, home: Path | str) -> CatalogConfig:
        """The embedded default: a SQLite catalog and a local warehouse folder under `home`."""
        root = Path(home).resolve()
        return cls.of(
            CATALOG_NAME,
            {
                "type": "sql",
                "uri": f"sqlite:///{root / 'catalog.db'}",
                "warehouse": f"file://{root / 'warehouse'}",
            },
        )

    def revealed(self) -> dict[str, str]:
        """The properties as pyiceberg takes them (secrets revealed: for the catalog only)."""
        return {k: v.reveal() if isinstance(v, Secret) else v for k, v in self.properties}

    def describe(self) -> dict[str, str]:
        """The properties with every secret masked, for manifests and logs."""
        return {k: repr(v) if isinstance(v, Secret) else v for k, v in self.properties}


def open_catalog(config: CatalogConfig) -> Catalog:
    """Load the configured catalog; the embedded default's warehouse folder is created here.

    Built from the config's properties alone, as pyiceberg's `load_catalog` would build it but
    without merging the local environment's `PYICEBERG_CATALOG__*` settings: on a worker those
    would silently point at another catalog than the launcher resolved.
    """
    properties = config.revealed()
    if not properties:
        raise ConfigError(
            f"catalog {config.name!r} has no properties: give a type and uri "
            "(or use CatalogConfig.embedded(home))"
        )
    warehouse = properties.get("warehouse", "")
    if properties.get("type") == "sql" and warehouse.startswith("file://"):
        Path(warehouse.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
    declared = properties.get("type")
    catalog_type = CatalogType(declared.lower()) if declared else None
    catalog_type = catalog_type or infer_catalog_type(config.name, dict(properties))
    if catalog_type is None:
        raise ConfigError(f"catalog {config.name!r}: cannot tell its type from {list(properties)}")
    if catalog_type is CatalogType.SQL:
        return _open_sql_catalog(config.name, properties)
    return AVAILABLE_CATALOGS[catalog_type](config.name, properties)


def _open_sql_catalog(name: str, properties: dict[str, str]) -> Catalog:
    """pyiceberg's SQL catalog, opened safely while other processes open it for the first time.

    pyiceberg checks for its catalog tables and then creates them, two steps another process
    can come between: the later one fails with `table iceberg_tables already exists` (SQLite)
    or a duplicate-key error (PostgreSQL). Opening again finds the tables, so a failure of the
    first open is retried a few times (jittered) before it is reported.
    """
    from sqlalchemy.exc import DBAPIError

    attempts = 6
    for attempt in range(1, attempts + 1):
        try:
            return AVAILABLE_CATALOGS[CatalogType.SQL](name, properties)
        except DBAPIError as exc:
            if attempt == attempts:
                raise
            log.info("opening catalog %r raced another process (%s); retrying", name, exc)
            time.sleep(random.uniform(0.02, 0.1) * attempt)
    raise AssertionError("unreachable")


def ensure_tables(catalog: Catalog, retention: RetentionConfig | None = None) -> dict[str, Table]:
    """The whylake tables, created where missing and brought up to the contract where not.

    An existing table is only loaded: nothing is written unless its schema lacks a column of
    the contract (added, optional) or requires one the contract now leaves optional, or its
    properties differ from the commit settings whylake's exactly-once protocol needs, or it
    has no retention horizon yet (the default is set) or a shorter one than an explicit
    `retention` (lengthened, never shortened: that takes `lake.maintenance.set_retention`,
    whose choice a later command with the default then leaves alone). A table is
    created only after the catalog says it does not exist, because pyiceberg's `create_table`
    writes a metadata file before the catalog refuses a duplicate. Safe to call from many
    processes at once: a lost race to create or evolve a table is retried against the winner.
    """
    if (NAMESPACE,) not in catalog.list_namespaces():
        try:
            catalog.create_namespace(NAMESPACE)
        except NamespaceAlreadyExistsError:
            pass
        except Exception:
            # pyiceberg's SQL catalog checks, then inserts: a process that loses the race gets
            # the database's duplicate-key error instead of NamespaceAlreadyExistsError.
            if (NAMESPACE,) not in catalog.list_namespaces():
                raise
    tables = {}
    for name, (schema, spec) in _TABLES.items():
        if not catalog.table_exists(name):
            try:
                catalog.create_table(
                    name,
                    schema=schema,
                    partition_spec=spec,
                    properties={
                        **TABLE_PROPERTIES,
                        **(retention or RetentionConfig()).properties(),
                    },
                )
            except Exception as exc:
                # Created by another process between the two calls (TableAlreadyExistsError,
                # or a duplicate-key error from the catalog's database)?
                if not isinstance(exc, TableAlreadyExistsError) and not catalog.table_exists(name):
                    raise
                # The metadata file this lost create_table wrote first stays behind: deleting
                # "unreferenced" first versions raced with the winner here once (a process then
                # read a 00000 file that was gone), and an orphan is harmless to every reader
                # that goes through the catalog, while a deleted current file is not.
        tables[name] = _settle(catalog, name, schema, retention)
    return tables


def _settle(
    catalog: Catalog, name: str, contract: Schema, retention: RetentionConfig | None
) -> Table:
    """Load a table and evolve its schema and properties to the contract, retrying on conflict."""
    for attempt in range(1, 11):
        table = catalog.load_table(name)
        columns = _columns_behind(table, contract)
        properties = _properties_behind(table, retention)
        if not columns and not properties:
            return table
        try:
            with table.transaction() as tx:
                if columns:
                    with tx.update_schema() as update:
                        update.union_by_name(contract)
                if properties:
                    tx.set_properties(properties)
        except CommitFailedException:  # another process evolved it first: look again
            time.sleep(random.uniform(0.0, 0.05 * 2**attempt))
            continue
        return catalog.load_table(name)
    raise CommitRetriesExhaustedError(
        f"could not bring {name} up to the contract: it kept changing"
    )


def _properties_behind(table: Table, retention: RetentionConfig | None) -> dict[str, str]:
    """The properties to set: commit settings that differ; layout settings and a horizon that
    are missing; a horizon below the ask."""
    current = table.metadata.properties
    wanted = {k: v for k, v in COMMIT_PROPERTIES.items() if current.get(k) != v}
    wanted.update({k: v for k, v in LAYOUT_PROPERTIES.items() if k not in current})
    for key, value in (retention or RetentionConfig()).properties().items():
        if key not in current or (retention is not None and int(current[key]) < int(value)):
            wanted[key] = value
    return wanted


def _columns_behind(table: Table, contract: Schema) -> list[str]:
    """Columns of the contract the table lacks, or requires while the contract does not."""
    current = {f.name: f for f in table.schema().fields}
    return [
        f.name
        for f in contract.fields
        if f.name not in current or (current[f.name].required and not f.required)
    ]
