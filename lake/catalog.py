"""Open the Iceberg catalog from settings resolved on the launcher, and keep its tables current."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pyiceberg.catalog import AVAILABLE_CATALOGS, Catalog, CatalogType, infer_catalog_type
from pyiceberg.exceptions import NamespaceAlreadyExistsError, TableAlreadyExistsError
from pyiceberg.partitioning import UNPARTITIONED_PARTITION_SPEC, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import Table

from whylake.schemas.dead_letter import DEAD_LETTER_PARTITION_SPEC, DEAD_LETTER_SCHEMA
from whylake.schemas.errors import ConfigError
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

CATALOG_NAME = "whylake"
NAMESPACE = "whylake"
EXPLANATIONS = f"{NAMESPACE}.explanations"
DEAD_LETTERS = f"{NAMESPACE}.dead_letters"
RUNS = f"{NAMESPACE}.runs"
REVIEWS = f"{NAMESPACE}.reviews"
METRICS = f"{NAMESPACE}.metrics"
ALERTS = f"{NAMESPACE}.alerts"

# pyiceberg's own retry re-applies a fast append on the refreshed table. Raised from its default
# of 4, which lost 4 of 120 commits with 4 concurrent writers here (shared/NOTES.md); whylake
# also retries at its own level, re-checking idempotency first (lake/commit.py).
TABLE_PROPERTIES = {
    "format-version": "2",
    "commit.retry.num-retries": "10",
    "commit.retry.min-wait-ms": "50",
    "commit.retry.max-wait-ms": "5000",
    "write.parquet.compression-codec": "zstd",
}

_TABLES: dict[str, tuple[Schema, PartitionSpec]] = {
    EXPLANATIONS: (EXPLANATION_SCHEMA, EXPLANATION_PARTITION_SPEC),
    DEAD_LETTERS: (DEAD_LETTER_SCHEMA, DEAD_LETTER_PARTITION_SPEC),
    RUNS: (RUN_SCHEMA, UNPARTITIONED_PARTITION_SPEC),
    REVIEWS: (REVIEW_SCHEMA, REVIEW_PARTITION_SPEC),
    METRICS: (METRICS_SCHEMA, METRICS_PARTITION_SPEC),
    ALERTS: (ALERTS_SCHEMA, ALERTS_PARTITION_SPEC),
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
    return AVAILABLE_CATALOGS[catalog_type](config.name, properties)


def ensure_tables(catalog: Catalog) -> dict[str, Table]:
    """The whylake tables, created where missing and evolved where the contract grew.

    An existing table is only loaded: nothing is written unless its schema lacks a column of
    the contract (added, optional) or requires one the contract now leaves optional. A table is
    created only after the catalog says it does not exist, because pyiceberg's `create_table`
    writes a metadata file before the catalog refuses a duplicate.
    """
    if (NAMESPACE,) not in catalog.list_namespaces():
        with contextlib.suppress(NamespaceAlreadyExistsError):
            catalog.create_namespace(NAMESPACE)
    tables = {}
    for name, (schema, spec) in _TABLES.items():
        if catalog.table_exists(name):
            tables[name] = _evolve(catalog.load_table(name), schema)
            continue
        try:
            tables[name] = catalog.create_table(
                name, schema=schema, partition_spec=spec, properties=TABLE_PROPERTIES
            )
        except TableAlreadyExistsError:  # another process created it between the two calls
            tables[name] = _evolve(catalog.load_table(name), schema)
    return tables


def _evolve(table: Table, contract: Schema) -> Table:
    """Add the contract's missing columns and relax required ones it made optional (by name)."""
    current = {f.name: f for f in table.schema().fields}
    behind = [
        f
        for f in contract.fields
        if f.name not in current or (current[f.name].required and not f.required)
    ]
    if not behind:
        return table
    with table.update_schema() as update:
        update.union_by_name(contract)
    return table
