"""ensure_tables writes nothing for tables that are current, and brings older ones up to date."""

from __future__ import annotations

from pathlib import Path

from whylake.lake.catalog import (
    _TABLES,
    MAX_SNAPSHOT_AGE,
    MIN_SNAPSHOTS,
    NAMESPACE,
    CatalogConfig,
    RetentionConfig,
    ensure_tables,
    open_catalog,
)
from whylake.lake.maintenance import set_retention

OLD_PROPERTIES = {  # what whylake wrote before issue 14
    "format-version": "2",
    "commit.retry.num-retries": "10",
    "commit.retry.min-wait-ms": "50",
    "commit.retry.max-wait-ms": "5000",
    "write.parquet.compression-codec": "zstd",
}


def _files(home: Path) -> dict[str, int]:
    """Every file under the home with its modification time: any write shows."""
    return {str(p.relative_to(home)): p.stat().st_mtime_ns for p in home.rglob("*") if p.is_file()}


def _metadata_files(home: Path) -> list[str]:
    return sorted(str(p.relative_to(home)) for p in home.rglob("*.metadata.json"))


def test_ensure_tables_on_existing_tables_creates_nothing(tmp_path: Path) -> None:
    ensure_tables(open_catalog(CatalogConfig.embedded(tmp_path)))
    before = _files(tmp_path)
    assert len(_metadata_files(tmp_path)) == len(_TABLES)
    for _ in range(3):  # as every command does, each with its own catalog
        tables = ensure_tables(open_catalog(CatalogConfig.embedded(tmp_path)))
    # No new metadata file (no orphan a catalog-less reader could mistake for the table),
    # no rewritten file, and the catalog still points at the first metadata of each table.
    assert _files(tmp_path) == before
    assert {t.metadata_location.rsplit("/", 1)[-1][:6] for t in tables.values()} == {"00000-"}


def test_tables_of_an_older_whylake_get_the_commit_and_retention_properties(
    tmp_path: Path,
) -> None:
    catalog = open_catalog(CatalogConfig.embedded(tmp_path))
    catalog.create_namespace(NAMESPACE)
    for name, (schema, spec) in _TABLES.items():
        catalog.create_table(name, schema=schema, partition_spec=spec, properties=OLD_PROPERTIES)
    assert len(_metadata_files(tmp_path)) == len(_TABLES)

    tables = ensure_tables(catalog)
    for table in tables.values():
        props = table.metadata.properties
        assert props["commit.retry.num-retries"] == "0"
        assert int(props[MAX_SNAPSHOT_AGE]) == RetentionConfig().max_age_ms
        assert int(props[MIN_SNAPSHOTS]) == RetentionConfig().min_snapshots
    # One property update per table, and only the first time.
    assert len(_metadata_files(tmp_path)) == 2 * len(_TABLES)
    before = _files(tmp_path)
    ensure_tables(open_catalog(CatalogConfig.embedded(tmp_path)))
    assert _files(tmp_path) == before


def test_someone_raising_the_commit_retries_again_is_undone(tmp_path: Path) -> None:
    catalog = open_catalog(CatalogConfig.embedded(tmp_path))
    explanations = ensure_tables(catalog)[f"{NAMESPACE}.explanations"]
    with explanations.transaction() as tx:
        tx.set_properties({"commit.retry.num-retries": "4"})
    fixed = ensure_tables(catalog)[f"{NAMESPACE}.explanations"]
    assert fixed.metadata.properties["commit.retry.num-retries"] == "0"


def test_ensure_tables_only_ever_lengthens_the_retention_horizon(tmp_path: Path) -> None:
    catalog = open_catalog(CatalogConfig.embedded(tmp_path))
    name = f"{NAMESPACE}.explanations"
    longer = RetentionConfig(days=400, min_snapshots=5)
    assert RetentionConfig.of(ensure_tables(catalog, longer)[name]) == longer
    # A command that asks for nothing (the default) leaves a table's own horizon alone ...
    assert RetentionConfig.of(ensure_tables(catalog)[name]) == longer
    # ... one that asks for a shorter one keeps the longer age (and raises the count it asks for),
    # and a longer one lengthens it.
    shorter = ensure_tables(catalog, RetentionConfig(30, min_snapshots=50))[name]
    assert RetentionConfig.of(shorter) == RetentionConfig(400, 50)
    assert RetentionConfig.of(ensure_tables(catalog, RetentionConfig(730))[name]).days == 730


def test_a_horizon_shortened_on_purpose_stays_short(tmp_path: Path) -> None:
    catalog = open_catalog(CatalogConfig.embedded(tmp_path))
    ensure_tables(catalog)
    set_retention(catalog, RetentionConfig(days=30), shorten=True)
    tables = ensure_tables(open_catalog(CatalogConfig.embedded(tmp_path)))  # a later command
    assert {RetentionConfig.of(t).days for t in tables.values()} == {30}
