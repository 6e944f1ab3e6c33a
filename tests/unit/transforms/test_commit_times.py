"""The commit time of a row is its own snapshot's, and only rows a commit added get one."""

from __future__ import annotations

from datetime import timedelta

from tests.unit.lake.conftest import EVENT_DAY, explanation_row, explanation_table
from whylake.lake.catalog import EXPLANATIONS, CatalogConfig, ensure_tables, open_catalog
from whylake.lake.commit import append_once
from whylake.schemas.explanation import EXPLANATION_ARROW_SCHEMA
from whylake.transforms.write_iceberg import AppendConfig, _commit_times, _scope


def test_a_partial_replay_times_only_the_rows_it_added(tmp_path) -> None:
    catalog = open_catalog(CatalogConfig.embedded(tmp_path))
    ensure_tables(catalog)
    config = AppendConfig(
        table=EXPLANATIONS,
        key="explanation_id",
        schema=EXPLANATION_ARROW_SCHEMA,
        run_id="run",
        day_field="event_ts",
        time_field="event_ts",
        catalog=CatalogConfig.embedded(tmp_path),
    )
    group = f"acme/{EVENT_DAY.date().isoformat()}"
    rows = [
        explanation_row("acme", f"r{i}", event_ts=EVENT_DAY + timedelta(minutes=i))
        for i in range(6)
    ]

    def commit(batch: list[dict[str, object]]):  # type: ignore[no-untyped-def]
        table = explanation_table(batch)
        result = append_once(
            catalog,
            EXPLANATIONS,
            table,
            key="explanation_id",
            scope=_scope(group, config),
            run_id="run",
            batch_id=str(len(batch)),
            time_field="event_ts",
        )
        return result, table

    first, first_rows = commit(rows[:3])
    times = _commit_times(catalog, config, first, group, first_rows)
    snapshot = catalog.load_table(EXPLANATIONS).snapshot_by_id(first.snapshot_id)
    assert set(times.values()) == {snapshot.timestamp_ms} and len(times) == 3
    replay, replay_rows = commit(rows[1:])  # two present, three new
    assert (replay.rows_committed, replay.rows_already_present) == (3, 2)
    times = _commit_times(catalog, config, replay, group, replay_rows)
    assert set(times) == {r["explanation_id"] for r in rows[3:]}
    later = catalog.load_table(EXPLANATIONS).snapshot_by_id(replay.snapshot_id)
    assert set(times.values()) == {later.timestamp_ms}
