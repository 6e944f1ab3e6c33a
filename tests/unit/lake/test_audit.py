"""Tenant-scoped SQL: one tenant's rows only, whatever the SQL text tries."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import pytest

from tests.unit.lake.conftest import EVENT_DAY
from whylake.lake.audit import SqlLimits, run_tenant_sql, single_select
from whylake.lake.catalog import EXPLANATIONS
from whylake.lake.reconstruct import committed_time
from whylake.schemas.errors import (
    ConfigError,
    QueryLimitError,
    SnapshotNotFoundError,
    TenantScopeError,
)

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog

    from tests.unit.lake.conftest import SeededLake


def _rows(lake: SeededLake, sql: str, tenant: str = "acme", **kwargs: object) -> list[dict]:
    return run_tenant_sql(lake.catalog, tenant, sql, **kwargs).to_pylist()  # type: ignore[arg-type]


def test_a_tenant_sees_only_its_own_rows(seeded_lake: SeededLake) -> None:
    acme = _rows(seeded_lake, "SELECT tenant_id, request_id FROM explanations ORDER BY ALL")
    globex = _rows(seeded_lake, "FROM explanations SELECT DISTINCT tenant_id", tenant="globex")
    assert {r["tenant_id"] for r in acme} == {"acme"}
    assert [r["request_id"] for r in acme] == ["r-1", "r-1", "r-2", "r-3"]
    assert globex == [{"tenant_id": "globex"}]
    dead = _rows(seeded_lake, "SELECT tenant_id, count(*) AS n FROM dead_letters GROUP BY ALL")
    assert dead == [{"tenant_id": "acme", "n": 1}]


def test_an_unknown_tenant_sees_empty_relations(seeded_lake: SeededLake) -> None:
    assert _rows(seeded_lake, "SELECT count(*) AS n FROM explanations", tenant="initech") == [
        {"n": 0}
    ]


def test_runs_are_those_naming_the_tenant_without_other_tenants_figures(
    seeded_lake: SeededLake,
) -> None:
    runs = run_tenant_sql(seeded_lake.catalog, "acme", "SELECT * FROM runs ORDER BY run_id")
    assert runs.column("run_id").to_pylist() == ["run-1", "run-2"]  # run-3 was globex's only
    # Counts, inputs, config and warnings of a run describe every tenant in it: not exposed.
    for leaky in ("tenants", "inputs", "config", "warnings", "records_read", "snapshot_ids"):
        assert leaky not in runs.column_names
    # Instead: how many of this tenant's rows each run committed.
    assert runs.column("explanation_rows").to_pylist() == [2, 2]
    assert runs.column("dead_letter_rows").to_pylist() == [1, 0]


def test_union_with_a_subquery_meant_for_another_tenant_finds_nothing(
    seeded_lake: SeededLake,
) -> None:
    rows = _rows(
        seeded_lake,
        """
        SELECT tenant_id, request_id FROM explanations
        UNION ALL
        SELECT tenant_id, request_id FROM (SELECT * FROM explanations WHERE tenant_id = 'globex')
        UNION ALL
        SELECT tenant_id, request_id FROM query_table('explanations') WHERE tenant_id <> 'acme'
        """,
    )
    assert rows and {r["tenant_id"] for r in rows} == {"acme"}


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1; DROP TABLE explanations",
        "SELECT * FROM explanations; SELECT * FROM dead_letters",
        # A second statement hidden after a comment is still a second statement to the parser.
        "SELECT 1 /* harmless */ ; /* really */ SET enable_external_access = true",
        "SELECT 1 -- trailing comment\n; ATTACH 'other.db' AS other",
        "",
        "-- only a comment",
    ],
)
def test_anything_but_one_statement_is_rejected(sql: str) -> None:
    with pytest.raises(TenantScopeError, match="exactly one SELECT"):
        single_select(sql)


@pytest.mark.parametrize(
    "sql",
    [
        "DROP TABLE explanations",
        "ATTACH '/tmp/other.db' AS other",
        "SET enable_external_access = true",
        "RESET lock_configuration",
        "PRAGMA enable_profiling",
        "COPY explanations TO '/tmp/leak.csv'",
        "COPY (SELECT 1) TO '/tmp/leak.parquet' (FORMAT parquet)",
        "INSTALL httpfs",
        "LOAD iceberg",
        "CREATE TABLE t AS SELECT 1",
        "INSERT INTO explanations SELECT * FROM explanations",
        "EXPORT DATABASE '/tmp/db'",
        "CALL pragma_version()",
        "EXPLAIN SELECT 1",
    ],
)
def test_statements_that_are_not_a_select_are_rejected(sql: str) -> None:
    with pytest.raises(TenantScopeError, match="may only read"):
        single_select(sql)


def test_a_comment_or_string_with_a_semicolon_is_one_statement(seeded_lake: SeededLake) -> None:
    rows = _rows(seeded_lake, "SELECT 'a;b' AS s /* ; DROP TABLE x */ -- ; more")
    assert rows == [{"s": "a;b"}]


def test_reading_the_warehouse_files_directly_is_refused(seeded_lake: SeededLake) -> None:
    table = seeded_lake.catalog.load_table(EXPLANATIONS)
    warehouse = seeded_lake.home / "warehouse"
    attempts = [
        f"SELECT * FROM read_parquet('{warehouse}/**/*.parquet')",
        f"SELECT * FROM '{warehouse}/whylake/explanations/data/tenant_id=globex/*/*.parquet'",
        f"SELECT * FROM glob('{warehouse}/**')",
        f"SELECT * FROM read_text('{seeded_lake.home}/catalog.db')",
        f"SELECT * FROM read_csv('{seeded_lake.home}/catalog.db')",
        "SELECT * FROM read_parquet('https://example.com/x.parquet')",
    ]
    # DuckDB may open the tenant's own planned files by exact path, and nothing else: not one
    # file of another tenant, not the catalog, not a folder listing.
    globex_files = sorted(warehouse.glob("whylake/explanations/data/tenant_id=globex/*/*.parquet"))
    assert globex_files
    attempts += [f"SELECT * FROM read_parquet('{f}')" for f in globex_files]
    attempts += [f"SELECT * FROM '{globex_files[0]}'"]
    for sql in attempts:
        with pytest.raises(TenantScopeError, match="cannot read files"):
            run_tenant_sql(seeded_lake.catalog, "acme", sql)
    # The iceberg extension is not even loaded, and autoloading it is off.
    with pytest.raises(duckdb.CatalogException, match="iceberg_scan"):
        run_tenant_sql(
            seeded_lake.catalog, "acme", f"SELECT * FROM iceberg_scan('{table.metadata_location}')"
        )


def test_python_objects_in_the_callers_scope_are_not_reachable(seeded_lake: SeededLake) -> None:
    # DuckDB's replacement scans would otherwise read this Arrow table by its variable name.
    other_tenants = seeded_lake.catalog.load_table(EXPLANATIONS).scan().to_arrow()  # noqa: F841
    with pytest.raises(duckdb.CatalogException, match="other_tenants"):
        run_tenant_sql(seeded_lake.catalog, "acme", "SELECT * FROM other_tenants")


def test_settings_are_locked_and_external_access_is_off(seeded_lake: SeededLake) -> None:
    settings = _rows(
        seeded_lake,
        """
        SELECT name, value FROM duckdb_settings()
        WHERE name IN ('enable_external_access', 'lock_configuration',
                       'python_enable_replacements', 'autoload_known_extensions', 'TimeZone')
        ORDER BY name
        """,
    )
    assert {s["name"]: s["value"] for s in settings} == {
        "TimeZone": "UTC",
        "autoload_known_extensions": "false",
        "enable_external_access": "false",
        "lock_configuration": "true",
        "python_enable_replacements": "false",
    }


def test_time_travel_by_time_and_by_snapshot(seeded_lake: SeededLake) -> None:
    sql = "SELECT request_id, model_version FROM explanations ORDER BY ALL"
    then = [("r-1", "1.0.0"), ("r-2", "1.0.0")]
    now = [("r-1", "1.0.0"), ("r-1", "2.0.0"), ("r-2", "1.0.0"), ("r-3", "1.0.0")]

    def pairs(**kwargs: object) -> list[tuple[str, str]]:
        return [(r["request_id"], r["model_version"]) for r in _rows(seeded_lake, sql, **kwargs)]

    assert pairs(as_of=seeded_lake.between) == then
    assert pairs(snapshot_id=seeded_lake.first_snapshot_id) == then
    assert pairs(snapshot_id=seeded_lake.second_snapshot_id) == now
    assert pairs() == now


def test_result_records_its_scope(seeded_lake: SeededLake) -> None:
    result = run_tenant_sql(
        seeded_lake.catalog,
        "acme",
        "SELECT count(*) AS n FROM explanations",
        snapshot_id=seeded_lake.first_snapshot_id,
    )
    meta = {k.decode(): v.decode() for k, v in result.schema.metadata.items()}
    assert meta["whylake.tenant-id"] == "acme"
    assert meta["whylake.explanations-snapshot-id"] == str(seeded_lake.first_snapshot_id)


def test_a_time_before_the_first_commit_is_an_error(seeded_lake: SeededLake) -> None:
    first = seeded_lake.catalog.load_table(EXPLANATIONS).snapshot_by_id(
        seeded_lake.first_snapshot_id
    )
    assert first is not None
    before = committed_time(first) - timedelta(days=1)
    with pytest.raises(SnapshotNotFoundError, match="earliest commit"):
        run_tenant_sql(seeded_lake.catalog, "acme", "SELECT 1", as_of=before)


def test_an_empty_lake_answers_with_empty_relations(lake_catalog: Catalog) -> None:
    result = run_tenant_sql(
        lake_catalog,
        "acme",
        "SELECT (SELECT count(*) FROM explanations) AS e, (SELECT count(*) FROM dead_letters) AS d,"
        " (SELECT count(*) FROM runs) AS r;",
    )
    assert result.to_pylist() == [{"e": 0, "d": 0, "r": 0}]


def test_the_database_holds_the_three_relations_and_nothing_else(
    seeded_lake: SeededLake,
) -> None:
    # The relations are views over the tenant's planned files: nothing is copied into tables,
    # and no helper object (an Arrow dataset, the runs rows) has a name SQL could use.
    assert _rows(seeded_lake, "SELECT count(*) AS n FROM duckdb_tables()") == [{"n": 0}]
    views = _rows(seeded_lake, "SELECT view_name FROM duckdb_views() WHERE NOT internal ORDER BY 1")
    assert [v["view_name"] for v in views] == ["dead_letters", "explanations", "runs"]
    assert [r["name"] for r in _rows(seeded_lake, "SHOW TABLES")] == [
        "dead_letters",
        "explanations",
        "runs",
    ]


# ---------------------------------------------------------------- resource limits (issue 14)


def test_a_runaway_query_stops_at_its_time_limit_with_a_clear_error(
    seeded_lake: SeededLake,
) -> None:
    limits = SqlLimits(timeout_s=1.0)
    started = time.monotonic()
    with pytest.raises(QueryLimitError, match="1 s time limit"):
        run_tenant_sql(
            seeded_lake.catalog, "acme", "SELECT count(*) FROM range(1000000000000)", limits=limits
        )
    # Generous: the interrupt lands within milliseconds; only a hung query would take this long.
    assert time.monotonic() - started < 30
    # The text: DuckDB 1.5 does not even bind range(DOUBLE), so it ends at once.
    with pytest.raises((QueryLimitError, duckdb.Error)):
        run_tenant_sql(
            seeded_lake.catalog, "acme", "SELECT count(*) FROM range(1e12)", limits=limits
        )


def test_a_query_past_its_memory_limit_stops_with_a_clear_error(seeded_lake: SeededLake) -> None:
    # list() keeps every value in one aggregate state: it cannot spill.
    with pytest.raises(QueryLimitError, match="64MB memory limit"):
        run_tenant_sql(
            seeded_lake.catalog,
            "acme",
            "SELECT list(i) FROM range(50000000) t(i)",
            limits=SqlLimits(memory_limit="64MB"),
        )


def test_operators_that_can_spill_finish_within_a_small_memory_limit(
    seeded_lake: SeededLake, tmp_path: Path
) -> None:
    # 3M distinct BIGINTs need far more than 32 MB as a hash table: DuckDB spills to disk,
    # even though the tenant's SQL itself cannot touch a file.
    rows = _rows(
        seeded_lake,
        "SELECT count(*) AS n FROM (SELECT DISTINCT i FROM range(3000000) t(i))",
        limits=SqlLimits(memory_limit="32MB", temp_directory=str(tmp_path)),
    )
    assert rows == [{"n": 3_000_000}]


def test_results_are_bounded_in_rows(seeded_lake: SeededLake) -> None:
    limits = SqlLimits(max_result_rows=5)
    assert len(_rows(seeded_lake, "SELECT * FROM range(5)", limits=limits)) == 5
    with pytest.raises(QueryLimitError, match="more than 5 rows"):
        run_tenant_sql(seeded_lake.catalog, "acme", "SELECT * FROM range(6)", limits=limits)


def test_the_limits_are_the_ones_configured(seeded_lake: SeededLake) -> None:
    rows = _rows(
        seeded_lake,
        "SELECT current_setting('threads') AS t, current_setting('memory_limit') AS m",
        limits=SqlLimits(threads=1, memory_limit="300MB"),
    )
    assert rows[0]["t"] == 1
    assert rows[0]["m"].replace(" ", "") in {"300.0MB", "286.1MiB"}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"timeout_s": 0},
        {"memory_limit": "lots"},
        {"memory_limit": "1GB; SET x=1"},
        {"threads": 0},
        {"max_result_rows": 0},
        {"max_temp_size": "-1GB"},
    ],
)
def test_limits_check_themselves(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        SqlLimits(**kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------- reading only what is needed


def _day_lake(catalog: Catalog, commit_rows: object, make_row: object) -> None:
    rows = [
        make_row(t, f"{t}-{d}-{i}", event_ts=EVENT_DAY + timedelta(days=d))  # type: ignore[operator]
        for t in ("acme", "globex")
        for d in range(3)
        for i in range(4)
    ]
    commit_rows(catalog, rows, "b-days")  # type: ignore[operator]


def _data_files(catalog: Catalog, tenant: str, day: int | None = None) -> list[Path]:
    folder = Path(catalog.load_table(EXPLANATIONS).location().removeprefix("file://")) / "data"
    files = sorted(folder.glob(f"tenant_id={tenant}/*/*.parquet"))
    if day is None:
        return files
    wanted = (EVENT_DAY + timedelta(days=day)).date().isoformat()
    return [f for f in files if f.parent.name == f"event_day={wanted}"]


def test_other_tenants_files_are_never_opened(
    lake_catalog: Catalog, commit_rows: object, make_row: object
) -> None:
    _day_lake(lake_catalog, commit_rows, make_row)
    # Break every globex data file: a plan that so much as read one footer would fail.
    for path in _data_files(lake_catalog, "globex"):
        path.write_bytes(b"not parquet")
    sql = "SELECT count(*) AS n, count(DISTINCT tenant_id) AS t FROM explanations"
    assert run_tenant_sql(lake_catalog, "acme", sql).to_pylist() == [{"n": 12, "t": 1}]
    with pytest.raises(duckdb.Error):
        run_tenant_sql(lake_catalog, "globex", sql)


def test_since_and_until_prune_day_partitions(
    lake_catalog: Catalog, commit_rows: object, make_row: object
) -> None:
    _day_lake(lake_catalog, commit_rows, make_row)
    for path in _data_files(lake_catalog, "acme", day=0) + _data_files(lake_catalog, "acme", 2):
        path.write_bytes(b"not parquet")
    day1 = EVENT_DAY.replace(hour=0, minute=0) + timedelta(days=1)
    result = run_tenant_sql(
        lake_catalog,
        "acme",
        "SELECT min(event_ts) AS lo, max(event_ts) AS hi, count(*) AS n FROM explanations",
        since=day1,
        until=day1 + timedelta(days=1),
    ).to_pylist()
    assert result == [
        {"lo": EVENT_DAY + timedelta(days=1), "hi": EVENT_DAY + timedelta(days=1), "n": 4}
    ]
    with pytest.raises(ConfigError, match="before until"):
        run_tenant_sql(lake_catalog, "acme", "SELECT 1", since=day1, until=day1)


def test_a_column_added_after_the_files_were_written_reads_as_nulls(
    lake_catalog: Catalog, commit_rows: object, make_row: object
) -> None:
    from pyiceberg.types import StringType

    commit_rows(lake_catalog, [make_row("acme", "r-1"), make_row("acme", "r-2")], "b-old")  # type: ignore[operator]
    with lake_catalog.load_table(EXPLANATIONS).update_schema() as update:
        update.add_column("reviewer_note", StringType())
    rows = run_tenant_sql(
        lake_catalog,
        "acme",
        "SELECT count(*) AS n, count(reviewer_note) AS noted FROM explanations",
    ).to_pylist()
    assert rows == [{"n": 2, "noted": 0}]
