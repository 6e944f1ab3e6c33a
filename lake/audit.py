"""Tenant-scoped SQL over the audit tables: DuckDB sees one tenant's rows and nothing else."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot

from whylake.lake.catalog import DEAD_LETTERS, EXPLANATIONS, RUNS
from whylake.lake.duck import connect, sql_string
from whylake.lake.reconstruct import committed_time, snapshot_at, to_millis
from whylake.schemas.errors import ConfigError, TenantScopeError

# What tenant SQL can name. Each is a DuckDB table holding a copy of the tenant's rows only.
TENANT_RELATIONS = ("explanations", "dead_letters", "runs")

# A run spans tenants: its counts, inputs, config, warnings and snapshot ids describe all of
# them, so tenant SQL sees only the columns that say nothing about other tenants, plus counts
# of this tenant's own rows that each run committed.
RUN_COLUMNS = ("run_id", "job", "status", "started_at", "finished_at", "runner", "versions")

RESULT_METADATA_PREFIX = "whylake."
_LOAD = "_whylake_load"  # the name an Arrow table is registered under while it is copied

# Settings fixed when the connection is created, before any data or query reaches it.
_LOCKED_DOWN: dict[str, Any] = {
    # No file, directory or network access: read_parquet, read_csv, read_text, glob,
    # iceberg_scan, COPY ... TO, ATTACH and LOAD '<path>' all fail with a permission error.
    "enable_external_access": False,
    # DuckDB's Python client otherwise resolves an unknown table name to a pandas / Arrow
    # object in the caller's Python frames (replacement scans): SQL must not see our variables.
    "python_enable_replacements": False,
    "python_scan_all_frames": False,
    # Secrets saved on disk (e.g. S3 keys in ~/.duckdb/stored_secrets) stay out of reach.
    "allow_persistent_secrets": False,
    # Extensions: nothing installed or loaded, implicitly or explicitly.
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
    "allow_unsigned_extensions": False,
}


def run_tenant_sql(
    catalog: Catalog,
    tenant_id: str,
    sql: str,
    *,
    as_of: datetime | None = None,
    snapshot_id: int | None = None,
) -> pa.Table:
    """Run one read-only query over `explanations`, `dead_letters` and `runs` of one tenant.

    Only the tenant's rows are read from Iceberg (partition-pruned on tenant_id) into a fresh
    in-memory DuckDB whose file access, extension loading and configuration are locked before
    the query runs, so no text in `sql` can reach another tenant's rows. `as_of` or
    `snapshot_id` (of the explanations table) time-travels every relation to that moment. The
    result's schema metadata names the tenant and the snapshots it was read from. Any single
    statement DuckDB's parser types as SELECT is allowed (WITH, FROM-first, DESCRIBE, SHOW,
    SUMMARIZE).

    Raises:
        TenantScopeError: `sql` is not exactly one SELECT, or it tried to read files.
        SnapshotNotFoundError: no such snapshot, or `as_of` precedes the first commit.
        duckdb.Error: the query itself is invalid (syntax, unknown column, ...).
    """
    if not isinstance(tenant_id, str) or not tenant_id:
        raise ConfigError(f"tenant_id must be a non-empty string, got {tenant_id!r}")
    # Checked before any data is loaded: a rejected query costs nothing.
    statement = single_select(sql)
    scope = _TenantScope.load(catalog, tenant_id, as_of=as_of, snapshot_id=snapshot_id)
    con = duckdb.connect(":memory:", config=_LOCKED_DOWN)
    try:
        scope.materialize(con)
        # Last step before the query: after this no SET, RESET or PRAGMA can undo the above.
        con.execute("SET lock_configuration = true")
        try:
            result = con.execute(statement).to_arrow_table()
        except duckdb.PermissionException as exc:
            raise TenantScopeError(
                f"tenant SQL cannot read files, URLs or other databases ({exc}); query only "
                f"the relations {', '.join(TENANT_RELATIONS)}, which hold tenant "
                f"{tenant_id!r}'s rows"
            ) from exc
    finally:
        con.close()
    metadata = dict(result.schema.metadata or {})
    metadata.update(scope.metadata())
    return result.replace_schema_metadata(metadata)


def single_select(sql: str) -> duckdb.Statement:
    """The one SELECT statement in `sql`, as DuckDB's own parser reads it.

    Raises:
        TenantScopeError: no statement, several, or one that is not a SELECT.
    """
    if not isinstance(sql, str):
        raise TenantScopeError(f"tenant SQL must be a string, got {type(sql).__name__}")
    # DuckDB's parser, not a regex: comments, string literals and quoting are read exactly as
    # the engine will read them, and the parsed statement is what gets executed.
    statements = duckdb.extract_statements(sql)
    if len(statements) != 1:
        kinds = ", ".join(s.type.name for s in statements) or "none"
        raise TenantScopeError(
            f"tenant SQL must be exactly one SELECT statement; got {len(statements)} ({kinds}). "
            "Remove the extra statements (a ';' inside a comment or string is fine)"
        )
    statement = statements[0]
    if statement.type != duckdb.StatementType.SELECT:
        raise TenantScopeError(
            f"tenant SQL may only read: got a {statement.type.name} statement "
            f"({_abbreviate(statement.query)!r}); write a SELECT (or WITH ... SELECT) over "
            f"{', '.join(TENANT_RELATIONS)}"
        )
    return statement


class _TenantScope:
    """The tenant's rows of each relation, read at one point in time."""

    def __init__(
        self, tenant_id: str, relations: dict[str, pa.Table], snapshots: dict[str, int | None]
    ) -> None:
        self.tenant_id = tenant_id
        self.relations = relations
        self.snapshots = snapshots

    @classmethod
    def load(
        cls,
        catalog: Catalog,
        tenant_id: str,
        *,
        as_of: datetime | None,
        snapshot_id: int | None,
    ) -> _TenantScope:
        """Read the tenant's rows at `as_of` / `snapshot_id` of the explanations table."""
        explanations = catalog.load_table(EXPLANATIONS)
        anchor = snapshot_at(explanations, as_of=as_of, snapshot_id=snapshot_id)
        # The other tables have their own snapshot ids: align them by time. When only the
        # current state is asked for, each table's current snapshot is used.
        moment = committed_time(anchor) if anchor is not None and snapshot_id is not None else as_of
        dead_letters = catalog.load_table(DEAD_LETTERS)
        runs = catalog.load_table(RUNS)
        chosen = {
            EXPLANATIONS: anchor,
            DEAD_LETTERS: _snapshot_or_none(dead_letters, moment),
            RUNS: _snapshot_or_none(runs, moment),
        }
        relations = {
            "explanations": _tenant_rows(explanations, chosen[EXPLANATIONS], tenant_id),
            "dead_letters": _tenant_rows(dead_letters, chosen[DEAD_LETTERS], tenant_id),
            "runs": _tenant_runs(runs, chosen[RUNS], tenant_id),
        }
        snapshots = {n: (s.snapshot_id if s is not None else None) for n, s in chosen.items()}
        return cls(tenant_id, relations, snapshots)

    def materialize(self, con: duckdb.DuckDBPyConnection) -> None:
        """Copy the relations into `con` as tables; nothing stays linked to Python objects."""
        # Results come back in UTC whatever the machine's zone (audit answers must not vary).
        con.execute("SET TimeZone = 'UTC'")
        for name in ("explanations", "dead_letters"):
            self._copy(con, name, f"SELECT * FROM {_LOAD}")
        self._copy(
            con,
            "runs",
            f"""
            SELECT r.*,
                   (SELECT count(*) FROM explanations e WHERE e.run_id = r.run_id)
                       AS explanation_rows,
                   (SELECT count(*) FROM dead_letters d WHERE d.run_id = r.run_id)
                       AS dead_letter_rows
            FROM {_LOAD} r
            """,
        )

    def _copy(self, con: duckdb.DuckDBPyConnection, name: str, select: str) -> None:
        con.register(_LOAD, self.relations[name])
        try:
            con.execute(f"CREATE TABLE {name} AS {select}")
        finally:
            con.unregister(_LOAD)

    def metadata(self) -> dict[str, str]:
        """Schema metadata recording the scope a result was computed in."""
        out = {f"{RESULT_METADATA_PREFIX}tenant-id": self.tenant_id}
        for table, snapshot in self.snapshots.items():
            short = table.rsplit(".", 1)[-1]
            out[f"{RESULT_METADATA_PREFIX}{short}-snapshot-id"] = (
                str(snapshot) if snapshot is not None else ""
            )
        return out


def _snapshot_or_none(table: Table, moment: datetime | None) -> Snapshot | None:
    if moment is None:
        return table.current_snapshot()
    # Before a table's first commit it was simply empty (e.g. no dead letter yet): no error.
    return table.snapshot_as_of_timestamp(to_millis(moment), inclusive=True)


def _tenant_rows(table: Table, snapshot: Snapshot | None, tenant_id: str) -> pa.Table:
    schema = table.schema().as_arrow()
    if snapshot is None:
        return schema.empty_table()
    # DuckDB's iceberg extension reads the snapshot in a separate loader connection (file
    # access on, never seen by the tenant's SQL); the WHERE on the identity(tenant_id)
    # partition column prunes to the tenant's files before any row is read.
    loader = connect()
    try:
        rows = (
            loader.execute(
                f"SELECT * FROM iceberg_scan('{sql_string(table.metadata_location)}', "
                f"snapshot_from_id => {int(snapshot.snapshot_id)}) WHERE tenant_id = $tenant",
                {"tenant": tenant_id},
            )
            .to_arrow_table()
            .cast(schema)
        )
    finally:
        loader.close()
    # The invariant everything rests on, checked rather than assumed.
    if rows.num_rows and not pc.all(pc.equal(rows["tenant_id"], tenant_id)).as_py():
        raise TenantScopeError(
            f"a scan of {'.'.join(table.name())} for tenant {tenant_id!r} returned other "
            "tenants' rows; refusing to answer (report this as a bug)"
        )
    return rows


def _tenant_runs(table: Table, snapshot: Snapshot | None, tenant_id: str) -> pa.Table:
    columns = list(RUN_COLUMNS)
    if snapshot is None:
        return table.schema().as_arrow().empty_table().select(columns)
    # The runs table is small (one row per job run) and unpartitioned: filter in memory.
    runs = table.scan(snapshot_id=snapshot.snapshot_id).to_arrow()
    mask = pa.array(
        [tenant_id in (tenants or []) for tenants in runs["tenants"].to_pylist()], pa.bool_()
    )
    return runs.filter(mask).select(columns)


def _abbreviate(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
