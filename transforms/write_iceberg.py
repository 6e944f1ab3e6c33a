"""Append records to an Iceberg table exactly once, one commit per group of rows."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam import pvalue
from apache_beam.metrics import Metrics
from apache_beam.pvalue import PCollection, TaggedOutput
from pyiceberg.expressions import (
    And,
    BooleanExpression,
    EqualTo,
    GreaterThanOrEqual,
    LessThan,
)

from whylake.lake.catalog import CatalogConfig, open_catalog
from whylake.lake.commit import (
    CommitConfig,
    CommitResult,
    append_once,
    check_scope,
    key_digest,
)
from whylake.lake.failpoints import POINTS as FAILPOINTS
from whylake.lake.failpoints import Failpoints
from whylake.schemas.arrow import strict_table
from whylake.schemas.errors import ConfigError

Row = dict[str, Any]
ROWS = "rows"
COMMITTED = "committed"


@dataclass(frozen=True)
class AppendConfig:
    """Which table, which key makes a row unique, and how rows are grouped into commits."""

    table: str
    key: str
    schema: pa.Schema
    run_id: str
    tenant_field: str = "tenant_id"
    day_field: str | None = None  # group (and dedupe) per tenant and day of this timestamp
    # A timestamp the key is derived from (lake.commit.append_once): bounds the key check.
    time_field: str | None = None
    catalog: CatalogConfig = field(default_factory=CatalogConfig)
    commit: CommitConfig = field(default_factory=CommitConfig)
    emit_rows: bool = False  # also output each group's rows once its commit is durable
    # Also output (committed_at_ms, row) per row on `committed`: the commit time of the snapshot
    # that added the row, or None for a row an earlier run had committed (monitoring's latency).
    emit_committed: bool = False
    failpoints: Failpoints = field(default_factory=Failpoints)  # testing only: lake/failpoints.py

    def __post_init__(self) -> None:
        if self.key not in self.schema.names:
            raise ConfigError(f"key {self.key!r} is not a column of the {self.table} schema")
        if self.time_field is not None and self.time_field not in self.schema.names:
            raise ConfigError(f"{self.time_field!r} is not a column of the {self.table} schema")


class AppendToIceberg(beam.PTransform[PCollection[Any], pvalue.DoOutputsTuple]):
    """Group rows per tenant (and day), then append each group idempotently in one snapshot.

    Output: PCollection[CommitResult], one per group, for the run manifest; with
    `emit_rows`, a tagged output `rows` carries every row of a group after its commit (new or
    already present), so a replica written from it never runs ahead of Iceberg; with
    `emit_committed`, a tagged output `committed` carries (commit time in ms or None, row).
    """

    def __init__(self, config: AppendConfig, to_dict: Callable[[Any], Row] = dict) -> None:
        super().__init__()
        self.config = config
        self.to_dict = to_dict

    def expand(self, rows: PCollection[Any]) -> pvalue.DoOutputsTuple:
        config, to_dict = self.config, self.to_dict
        return (
            rows
            | "AsDict" >> beam.Map(to_dict)
            | "KeyByPartition" >> beam.Map(lambda r: (_group_key(r, config), r))
            | "GroupByPartition" >> beam.GroupByKey()
            | "CommitGroup"
            >> beam.ParDo(_AppendGroupFn(config))
            .with_output_types(CommitResult)
            .with_outputs(ROWS, COMMITTED, main="commits")
        )

    def display_data(self) -> dict[str, Any]:
        return {
            "table": self.config.table,
            "key": self.config.key,
            "catalog": self.config.catalog.name,
            "group_by_day": self.config.day_field or "",
        }


def _group_key(row: Row, config: AppendConfig) -> str:
    tenant = row[config.tenant_field]
    if config.day_field is None:
        return tenant
    day = row[config.day_field].astimezone(UTC).date().isoformat()
    return f"{tenant}/{day}"


def _scope(group: str, config: AppendConfig) -> BooleanExpression:
    """The partitions a group's rows live in: where its existing keys are looked up."""
    tenant, _, day = group.partition("/")
    expr: BooleanExpression = EqualTo(config.tenant_field, tenant)
    if day and config.day_field:
        start = datetime.fromisoformat(day).replace(tzinfo=UTC)
        window = And(
            GreaterThanOrEqual(config.day_field, start.isoformat()),
            LessThan(config.day_field, (start + timedelta(days=1)).isoformat()),
        )
        expr = And(expr, window)
    return expr


class _AppendGroupFn(beam.DoFn):  # type: ignore[misc]
    def __init__(self, config: AppendConfig) -> None:
        self.config = config
        self.committed = Metrics.counter("whylake", f"{config.table}.committed")
        self.present = Metrics.counter("whylake", f"{config.table}.already_present")
        # e.g. after-explanations-commit for whylake.explanations; a table without a failpoint
        # of its own (one added later) has none, instead of failing every run.
        after = f"after-{config.table.rsplit('.', 1)[-1].replace('_', '-')}-commit"
        self.after_commit = after if after in FAILPOINTS else None

    def setup(self) -> None:
        self.catalog = open_catalog(self.config.catalog)

    def process(self, element: tuple[str, Iterable[Row]]) -> Iterator[CommitResult]:
        group, rows = element
        rows = sorted(rows, key=lambda r: r[self.config.key])
        table = strict_table(rows, self.config.schema)
        self.config.failpoints.hit("before-first-commit")
        result = append_once(
            self.catalog,
            self.config.table,
            table,
            key=self.config.key,
            scope=_scope(group, self.config),
            run_id=self.config.run_id,
            # Names the group's key set (the digest the commit protocol matches on): a retry of
            # the same group reuses it.
            batch_id=f"{group}:{key_digest(table[self.config.key])[:16]}",
            time_field=self.config.time_field,
            config=self.config.commit,
        )
        if self.after_commit is not None:
            self.config.failpoints.hit(self.after_commit)
        self.committed.inc(result.rows_committed)
        self.present.inc(result.rows_already_present)
        yield result
        if self.config.emit_rows:
            for row in rows:
                yield TaggedOutput(ROWS, row)
        if self.config.emit_committed:
            times = _commit_times(self.catalog, self.config, result, group, table)
            for row in rows:
                yield TaggedOutput(COMMITTED, (times.get(row[self.config.key]), row))


def _commit_times(
    catalog: Any, config: AppendConfig, result: CommitResult, group: str, rows: pa.Table
) -> dict[str, int]:
    """Commit time (ms) of each row this append added; rows already present get none.

    The snapshot's own timestamp is the commit time. When a replay added only some of the rows,
    the keys present just before our snapshot (its parent) are the ones that were not ours.
    """
    if result.snapshot_id is None:
        return {}
    table = catalog.load_table(config.table)
    snapshot = table.snapshot_by_id(result.snapshot_id)
    keys = rows[config.key].to_pylist()
    if result.rows_already_present == 0 or snapshot.parent_snapshot_id is None:
        return dict.fromkeys(keys, snapshot.timestamp_ms)
    before = table.scan(
        row_filter=check_scope(rows, _scope(group, config), config.time_field),
        snapshot_id=snapshot.parent_snapshot_id,
        selected_fields=(config.key,),
    ).to_arrow()[config.key]
    old = set(before.to_pylist())
    return {k: snapshot.timestamp_ms for k in keys if k not in old}
