"""History that survives maintenance: retention keeps snapshots; after expiry as-of answers."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.expressions import EqualTo, In

from tests.unit.keys import TEST_PII
from tests.unit.lake.conftest import EVENT_DAY, append_explanations, explanation_row
from whylake.lake.audit import run_tenant_sql
from whylake.lake.catalog import (
    DEAD_LETTERS,
    EXPLANATIONS,
    MAX_SNAPSHOT_AGE,
    RUNS,
    CatalogConfig,
    RetentionConfig,
    ensure_tables,
    open_catalog,
)
from whylake.lake.commit import append_once
from whylake.lake.compact import CompactConfig, compact_table
from whylake.lake.history import LOGGED_TABLES, point_in_time, record_history
from whylake.lake.maintenance import expire_snapshots, set_retention
from whylake.lake.reconstruct import reconstruct, snapshot_at, to_json
from whylake.lake.runs import RunRecord, record_run
from whylake.schemas.dead_letter import DEAD_LETTER_ARROW_SCHEMA, dead_letter
from whylake.schemas.errors import HistoryIncompleteError, RetentionError, SnapshotNotFoundError

SQL = {
    "explanations": "SELECT request_id, model_version, explainer_method FROM explanations "
    "ORDER BY ALL",
    "dead_letters": "SELECT request_id, error_message FROM dead_letters ORDER BY ALL",
    "runs": "SELECT run_id, status FROM runs ORDER BY ALL",
}


@dataclass
class Lake:
    catalog: Catalog
    moments: list[datetime]  # one instant after each of the commits, before the next
    snapshot_ids: list[int]  # of the explanations table, in commit order


def _after(catalog: Catalog, table: str) -> datetime:
    """A moment just after the table's latest commit, before any later one (ms resolution)."""
    committed = catalog.load_table(table).current_snapshot().timestamp_ms
    while datetime.now(UTC).timestamp() * 1000 < committed + 3:
        pass
    return datetime.fromtimestamp((committed + 1) / 1000, UTC)


def _build(home: Path) -> Lake:
    """Four rounds, each committing explanations, a dead letter and a run manifest row."""
    catalog = open_catalog(CatalogConfig.embedded(home))
    ensure_tables(catalog)
    moments, snapshots = [], []
    for i in range(4):
        run = f"run-{i}"
        rows = [
            explanation_row("acme", f"r-{i}", run_id=run),
            explanation_row("globex", f"r-{i}", run_id=run),
            # acme r-0 is explained again each round with a newer model: history grows
            explanation_row(
                "acme",
                "r-0",
                model_version=f"{i + 1}.0.0",
                explained_at=EVENT_DAY + timedelta(days=i + 1),
                run_id=run,
            ),
        ]
        snapshots.append(append_explanations(catalog, rows, f"b-{i}"))
        letter = dead_letter(
            run_id=run,
            stage="validate",
            error=f"bad {i}",
            record={"i": i},
            source=f"f.jsonl:{i}",
            pii=TEST_PII,
            tenant_id="acme",
            request_id=f"bad-{i}",
        )
        append_once(
            catalog,
            DEAD_LETTERS,
            _arrow([letter._asdict()]),
            key="dead_letter_id",
            scope=In("tenant_id", ["acme"]),
            run_id=run,
            batch_id=f"dl-{i}",
        )
        record_run(catalog, _run(run))
        moments.append(_after(catalog, RUNS))
    return Lake(catalog, moments, snapshots)


def _arrow(rows: list[dict[str, Any]]) -> Any:
    import pyarrow as pa

    return pa.Table.from_pylist(rows, schema=DEAD_LETTER_ARROW_SCHEMA)


def _run(run_id: str) -> RunRecord:
    return RunRecord(
        run_id=run_id,
        job="batch",
        status="succeeded",
        started_at=EVENT_DAY,
        runner="FnApiRunner",
        inputs=["in.jsonl"],
        tenants=["acme", "globex"],
        config="{}",
        versions="{}",
    )


def _answers(lake: Lake) -> dict[str, Any]:
    """Everything an auditor could ask, at each moment and each snapshot id."""
    out: dict[str, Any] = {}
    for i, moment in enumerate(lake.moments):
        for tenant, request in (("acme", "r-0"), ("acme", f"r-{i}"), ("globex", f"r-{i}")):
            rec = reconstruct(lake.catalog, tenant, request, as_of=moment)
            out[f"as-of {i} {tenant} {request}"] = json.loads(to_json(rec))
        if i == 1:  # tenant SQL (DuckDB loads its extensions each time) at one moment
            for name, sql in SQL.items():
                result = run_tenant_sql(lake.catalog, "acme", sql, as_of=moment)
                out[f"sql {i} {name}"] = (result.to_pylist(), dict(result.schema.metadata))
    for sid in lake.snapshot_ids:
        rec = reconstruct(lake.catalog, "acme", "r-0", snapshot_id=sid)
        out[f"snapshot {sid}"] = json.loads(to_json(rec))
    sid = lake.snapshot_ids[1]
    result = run_tenant_sql(lake.catalog, "globex", SQL["explanations"], snapshot_id=sid)
    out[f"sql snapshot {sid}"] = result.to_pylist()
    return out


def _expire_everything_but_the_heads(catalog: Catalog) -> None:
    """Iceberg's maintenance as an operator or a managed catalog would run it: no whylake."""
    for name in LOGGED_TABLES:
        table = catalog.load_table(name)
        if table.current_snapshot() is None:  # e.g. no review yet
            continue
        table.maintenance.expire_snapshots().older_than(datetime.now(UTC)).commit()
        assert len(catalog.load_table(name).snapshots()) == 1


def test_the_tables_carry_the_retention_horizon(tmp_path: Path) -> None:
    tables = ensure_tables(open_catalog(CatalogConfig.embedded(tmp_path)))
    for table in tables.values():
        assert int(table.metadata.properties[MAX_SNAPSHOT_AGE]) == 184 * 86_400_000
    assert RetentionConfig().days >= 180  # at least six months (EU AI Act Art. 19, 26)


def test_as_of_answers_are_the_same_after_the_snapshots_are_expired(tmp_path: Path) -> None:
    lake = _build(tmp_path)
    before = _answers(lake)
    # The answers are not trivial: each moment sees a different state.
    assert before["as-of 0 acme r-0"]["record"]["model_version"] == "1.0.0"
    assert before["as-of 3 acme r-0"]["record"]["model_version"] == "4.0.0"
    assert len(before["as-of 3 acme r-0"]["history"]) == 4
    assert len(before["sql 1 dead_letters"][0]) == 2

    record_history(lake.catalog)  # what each batch run does at its end
    _expire_everything_but_the_heads(lake.catalog)
    explanations = lake.catalog.load_table(EXPLANATIONS)
    # Iceberg's own time travel to those moments is gone ...
    assert explanations.snapshot_by_id(lake.snapshot_ids[0]) is None
    with pytest.raises(SnapshotNotFoundError):
        snapshot_at(explanations, as_of=lake.moments[0])
    assert not point_in_time(lake.catalog, EXPLANATIONS, as_of=lake.moments[0]).live
    # ... and whylake's answers are exactly what they were.
    assert _answers(lake) == before


def test_expiry_before_the_commits_were_logged_is_reported_not_answered(tmp_path: Path) -> None:
    lake = _build(tmp_path)
    _expire_everything_but_the_heads(lake.catalog)  # nobody ran record_history
    with pytest.raises(HistoryIncompleteError, match="expired before whylake logged"):
        reconstruct(lake.catalog, "acme", "r-0", as_of=lake.moments[1])
    with pytest.raises(HistoryIncompleteError):
        run_tenant_sql(lake.catalog, "acme", SQL["explanations"], as_of=lake.moments[0])
    # The present is still known.
    assert reconstruct(lake.catalog, "acme", "r-0").record["model_version"] == "4.0.0"


def test_a_rewrite_after_an_expired_snapshot_is_reported_not_answered(tmp_path: Path) -> None:
    lake = _build(tmp_path)
    record_history(lake.catalog)
    # Not something whylake does: a delete rewrites the history the files carry.
    lake.catalog.load_table(EXPLANATIONS).delete(EqualTo("request_id", "r-1"))
    record_history(lake.catalog)
    _expire_everything_but_the_heads(lake.catalog)
    with pytest.raises(HistoryIncompleteError, match="append-only"):
        reconstruct(lake.catalog, "acme", "r-0", as_of=lake.moments[1])


def test_a_compaction_keeps_kept_history_and_refuses_expired_history(tmp_path: Path) -> None:
    lake = _build(tmp_path)
    before = reconstruct(lake.catalog, "acme", "r-0", as_of=lake.moments[1])
    compactions = compact_table(
        lake.catalog, EXPLANATIONS, CompactConfig(target_file_mb=64, small_file_mb=32)
    )
    assert compactions and all(c.snapshot_id is not None for c in compactions)
    assert all(c.files_after < c.files_before for c in compactions)
    # While the snapshots are kept, time travel reads them as before.
    assert reconstruct(lake.catalog, "acme", "r-0", as_of=lake.moments[1]) == before
    record_history(lake.catalog)
    _expire_everything_but_the_heads(lake.catalog)
    # Expired, a compacted past cannot be rebuilt from the current files: said, not guessed.
    with pytest.raises(HistoryIncompleteError, match="replace"):
        reconstruct(lake.catalog, "acme", "r-0", as_of=lake.moments[1])
    assert reconstruct(lake.catalog, "acme", "r-0").record["model_version"] == "4.0.0"


def test_the_retention_horizon_protects_snapshots_from_maintenance(tmp_path: Path) -> None:
    lake = _build(tmp_path)
    before = _answers(lake)
    now = datetime.now(UTC)
    counts = {n: len(lake.catalog.load_table(n).snapshots()) for n in LOGGED_TABLES}
    # Nothing is older than the horizon (184 days): nothing goes, today or in 183 days.
    for when in (now, now + timedelta(days=183)):
        assert all(not e.expired for e in expire_snapshots(lake.catalog, now=when))
    # Asking to expire inside the horizon is refused, whoever asks.
    with pytest.raises(RetentionError, match="184 days"):
        expire_snapshots(lake.catalog, older_than=now)
    # Shortening the horizon is a step of its own, confirmed.
    with pytest.raises(RetentionError, match="shorten"):
        set_retention(lake.catalog, RetentionConfig(days=30))
    assert {n: len(lake.catalog.load_table(n).snapshots()) for n in LOGGED_TABLES} == counts

    # Past the horizon (and past the newest min_snapshots), snapshots are expired, logged first.
    set_retention(lake.catalog, RetentionConfig(days=184, min_snapshots=1))
    dry = expire_snapshots(lake.catalog, now=now + timedelta(days=185), dry_run=True)
    done = expire_snapshots(lake.catalog, now=now + timedelta(days=185))
    assert [e.expired for e in dry] == [e.expired for e in done]
    for e in done:
        if counts.get(e.table):  # the reviews table has no snapshot here
            assert len(e.expired) == counts[e.table] - 1 and e.kept == 1
    assert _answers(lake) == before
