"""Open the Iceberg catalog (embedded SQLite, or pyiceberg's usual config) and its tables."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from pyiceberg.catalog import Catalog, load_catalog
from pyiceberg.exceptions import NamespaceAlreadyExistsError, TableAlreadyExistsError
from pyiceberg.partitioning import UNPARTITIONED_PARTITION_SPEC, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.utils.config import Config

from schemas.dead_letter import DEAD_LETTER_PARTITION_SPEC, DEAD_LETTER_SCHEMA
from schemas.explanation import EXPLANATION_PARTITION_SPEC, EXPLANATION_SCHEMA
from schemas.run_manifest import RUN_SCHEMA

CATALOG_NAME = "whylake"
NAMESPACE = "whylake"
EXPLANATIONS = f"{NAMESPACE}.explanations"
DEAD_LETTERS = f"{NAMESPACE}.dead_letters"
RUNS = f"{NAMESPACE}.runs"

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
}


def default_home() -> Path:
    """Where the embedded default keeps its catalog and warehouse (WHYLAKE_HOME, or ./.whylake)."""
    return Path(os.environ.get("WHYLAKE_HOME", ".whylake")).resolve()


@dataclass(frozen=True)
class CatalogConfig:
    """Which catalog to open: a name in pyiceberg's config, or the embedded default under home."""

    name: str = CATALOG_NAME
    home: Path | None = None

    def properties(self) -> dict[str, str]:
        """The embedded default's properties, unless pyiceberg's config names this catalog."""
        if Config().get_catalog_config(self.name):
            # ~/.pyiceberg.yaml or PYICEBERG_CATALOG__<NAME>__* configure a production catalog
            # (REST, Glue, PostgreSQL SQL catalog); whylake adds nothing to it.
            return {}
        home = (self.home or default_home()).resolve()
        (home / "warehouse").mkdir(parents=True, exist_ok=True)
        return {
            "type": "sql",
            "uri": f"sqlite:///{home / 'catalog.db'}",
            "warehouse": f"file://{home / 'warehouse'}",
        }


def open_catalog(config: CatalogConfig | None = None) -> Catalog:
    """Load the catalog; the embedded default is created on first use."""
    config = config or CatalogConfig()
    return load_catalog(config.name, **config.properties())


def ensure_tables(catalog: Catalog) -> dict[str, Table]:
    """Create the whylake namespace and tables if missing; return them by name."""
    with contextlib.suppress(NamespaceAlreadyExistsError):
        catalog.create_namespace(NAMESPACE)
    tables = {}
    for name, (schema, spec) in _TABLES.items():
        try:
            tables[name] = catalog.create_table(
                name, schema=schema, partition_spec=spec, properties=TABLE_PROPERTIES
            )
        except TableAlreadyExistsError:
            tables[name] = catalog.load_table(name)
    return tables
