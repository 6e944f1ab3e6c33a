"""A reader with no whylake code: plain DuckDB and the extension packages read the audit tables."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import pytest

from whylake.lake.catalog import EXPLANATIONS

if TYPE_CHECKING:
    from tests.unit.lake.conftest import SeededLake


def _extension(package: str, name: str) -> str:
    # What an auditor's notebook would do: find the file the PyPI package ships.
    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.submodule_search_locations, f"{package} is not installed"
    root = Path(next(iter(spec.submodule_search_locations)))
    return str(root / "extensions" / f"v{duckdb.__version__}" / f"{name}.duckdb_extension")


@pytest.fixture(scope="module")
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    """Plain DuckDB with avro + iceberg loaded from the installed packages (never the network)."""
    connection = duckdb.connect(config={"autoinstall_known_extensions": False})
    connection.execute(f"LOAD '{_extension('duckdb_extension_avro', 'avro')}'")
    connection.execute(f"LOAD '{_extension('duckdb_extension_iceberg', 'iceberg')}'")
    yield connection
    connection.close()


@pytest.fixture
def metadata(seeded_lake: SeededLake) -> str:
    """The current metadata file: pyiceberg writes no version-hint, so iceberg_scan needs it."""
    return seeded_lake.catalog.load_table(EXPLANATIONS).metadata_location


def test_iceberg_scan_sees_every_committed_row(
    con: duckdb.DuckDBPyConnection, metadata: str
) -> None:
    counts = con.execute(
        "SELECT tenant_id, count(*) FROM iceberg_scan(?) GROUP BY ALL ORDER BY ALL", [metadata]
    ).fetchall()
    assert counts == [("acme", 4), ("globex", 3)]


def test_snapshots_are_listed_and_time_travel_returns_the_older_state(
    con: duckdb.DuckDBPyConnection, metadata: str, seeded_lake: SeededLake
) -> None:
    snapshots = con.execute(
        "SELECT snapshot_id, timestamp_ms FROM iceberg_snapshots(?) ORDER BY sequence_number",
        [metadata],
    ).fetchall()
    assert [s[0] for s in snapshots] == [
        seeded_lake.first_snapshot_id,
        seeded_lake.second_snapshot_id,
    ]
    by_id = con.execute(
        "SELECT count(*) FROM iceberg_scan(?, snapshot_from_id => ?)",
        [metadata, seeded_lake.first_snapshot_id],
    ).fetchone()
    # iceberg_snapshots reports UTC as a naive TIMESTAMP; snapshot_from_timestamp takes the same.
    first_committed = snapshots[0][1]
    by_time = con.execute(
        "SELECT count(*) FROM iceberg_scan(?, snapshot_from_timestamp => ?)",
        [metadata, first_committed],
    ).fetchone()
    assert by_id == by_time == (4,)


def test_the_partition_spec_is_visible(con: duckdb.DuckDBPyConnection, metadata: str) -> None:
    fields = con.execute(
        """
        SELECT DISTINCT partition_field_name, partition_source_columns, partition_field_transform
        FROM iceberg_partition_stats(?) ORDER BY ALL
        """,
        [metadata],
    ).fetchall()
    assert fields == [("event_day", ["event_ts"], "day"), ("tenant_id", ["tenant_id"], "identity")]
    # The metadata file itself says the same, to any JSON reader.
    (specs,) = con.execute(
        'SELECT "partition-specs" FROM read_json(?, maximum_object_size = 10000000)', [metadata]
    ).fetchone()
    assert [(f["name"], f["transform"]) for f in specs[0]["fields"]] == [
        ("tenant_id", "identity"),
        ("event_day", "day"),
    ]


def test_a_tenant_filter_prunes_other_tenants_files(
    con: duckdb.DuckDBPyConnection, metadata: str
) -> None:
    files = dict(
        con.execute(
            """
            SELECT regexp_extract(file_path, 'tenant_id=([^/]+)', 1) AS tenant, count(*)
            FROM iceberg_metadata(?) WHERE manifest_content = 'DATA'
            GROUP BY ALL
            """,
            [metadata],
        ).fetchall()
    )
    assert files == {"acme": 3, "globex": 2}  # one file per tenant x day x commit

    def files_read(where: str) -> int:
        plan = con.execute(
            f"EXPLAIN ANALYZE SELECT max(request_id) FROM iceberg_scan('{metadata}') {where}"
        ).fetchall()[0][1]
        match = re.search(r"Total Files Read: (\d+)", plan)
        assert match, f"DuckDB {duckdb.__version__} no longer reports files read:\n{plan}"
        return int(match.group(1))

    assert files_read("") == 5
    assert files_read("WHERE tenant_id = 'acme'") == files["acme"]
    assert files_read("WHERE tenant_id = 'globex'") == files["globex"]


def test_whylake_connect_loads_the_same_extensions(metadata: str) -> None:
    from whylake.lake.duck import connect

    with connect() as whylake_con:
        assert whylake_con.execute(
            "SELECT count(*) FROM iceberg_scan(?)", [metadata]
        ).fetchone() == (7,)


def test_a_mismatched_duckdb_names_the_versions_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from whylake.lake.duck import extension_path
    from whylake.schemas.errors import DuckDBExtensionError

    monkeypatch.setattr(duckdb, "__version__", "9.9.9")
    with pytest.raises(DuckDBExtensionError, match=r"duckdb 9\.9\.9.*duckdb==1\.5\.5"):
        extension_path("iceberg")
