"""The commit protocol's cost does not grow with the table: what it reads, shown by damage.

Each test removes or corrupts the data the protocol must *not* read; a protocol that read it
fails. The controls show the same damage is fatal to a read that does need it.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyiceberg.expressions import And, EqualTo, GreaterThanOrEqual, LessThan

from tests.unit.lake.conftest import EVENT_DAY, explanation_row, explanation_table
from whylake.lake.catalog import (
    EXPLANATIONS,
    LAYOUT_PROPERTIES,
    CatalogConfig,
    ensure_tables,
    open_catalog,
)
from whylake.lake.commit import BATCH_KEYS_PROPERTY, CommitResult, append_once, key_digest
from whylake.schemas.errors import ConfigError

DAY = EVENT_DAY.replace(hour=0, minute=0)
SCOPE = And(
    EqualTo("tenant_id", "acme"),
    And(
        GreaterThanOrEqual("event_ts", DAY.isoformat()),
        LessThan("event_ts", (DAY + timedelta(days=1)).isoformat()),
    ),
)


def _rows(names: list[str], hour: int) -> list[dict[str, Any]]:
    """Rows of acme, one minute apart from `hour`:00 on the test day."""
    return [
        explanation_row("acme", n, event_ts=DAY + timedelta(hours=hour, minutes=i))
        for i, n in enumerate(names)
    ]


def _append(catalog: Any, rows: list[dict[str, Any]], batch: str) -> CommitResult:
    return append_once(
        catalog,
        EXPLANATIONS,
        explanation_table(rows),
        key="explanation_id",
        scope=SCOPE,
        run_id="run",
        batch_id=batch,
        time_field="event_ts",
    )


def _files(catalog: Any, start_hour: int, end_hour: int) -> list[str]:
    """Local paths of the data files whose event times fall in [start_hour, end_hour)."""
    table = catalog.load_table(EXPLANATIONS)
    window = And(
        GreaterThanOrEqual("event_ts", (DAY + timedelta(hours=start_hour)).isoformat()),
        LessThan("event_ts", (DAY + timedelta(hours=end_hour)).isoformat()),
    )
    return [t.file.file_path.removeprefix("file://") for t in table.scan(window).plan_files()]


def _stored(catalog: Any) -> list[str]:
    table = catalog.load_table(EXPLANATIONS)
    return sorted(table.scan(selected_fields=("request_id",)).to_arrow()["request_id"].to_pylist())


@pytest.fixture
def catalog(tmp_path: Path) -> Any:
    catalog = open_catalog(CatalogConfig.embedded(tmp_path))
    ensure_tables(catalog)
    return catalog


def test_a_replayed_batch_is_known_from_metadata_without_reading_a_data_file(catalog) -> None:
    rows = _rows([f"r{i}" for i in range(5)], hour=9)
    first = _append(catalog, rows, "b1")
    summary = catalog.load_table(EXPLANATIONS).current_snapshot().summary.additional_properties
    assert summary[BATCH_KEYS_PROPERTY] == key_digest(explanation_table(rows)["explanation_id"])
    for path in _files(catalog, 0, 24):
        os.remove(path)  # the rows' only copy: a replay that read them would fail now
    # Shuffled and with a key repeated: the same key set is the same batch.
    again = _append(catalog, [rows[3], *rows, rows[0]], "b1-replayed-by-another-run")
    assert (first.rows_committed, again.rows_committed, again.rows_already_present) == (5, 0, 7)
    assert again.snapshot_id is None and again.attempts == 1
    # The control: one key more is another batch, whose check must read the (gone) file.
    with pytest.raises(OSError):
        _append(catalog, _rows([f"r{i}" for i in range(6)], hour=9), "b2")


def test_a_replay_with_other_boundaries_reads_only_files_of_its_event_times(catalog) -> None:
    morning = _rows([f"m{i}" for i in range(6)], hour=9)
    _append(catalog, morning[:3], "m-a")
    _append(catalog, morning[3:], "m-b")
    _append(catalog, _rows([f"a{i}" for i in range(4)], hour=15), "afternoon")
    afternoon_files = _files(catalog, 15, 16)
    assert afternoon_files and not set(afternoon_files) & set(_files(catalog, 9, 10))
    for path in afternoon_files:
        os.remove(path)
    # A replay straddling the two morning batches, with two rows of its own after them.
    replay = morning[1:5] + _rows(["late-0", "late-1"], hour=10)
    result = _append(catalog, replay, "replay")
    assert (result.rows_committed, result.rows_already_present) == (2, 4)
    table = catalog.load_table(EXPLANATIONS)
    morning_only = And(SCOPE, LessThan("event_ts", (DAY + timedelta(hours=12)).isoformat()))
    kept = table.scan(morning_only, selected_fields=("request_id",)).to_arrow()
    assert sorted(kept["request_id"].to_pylist()) == sorted(
        [f"m{i}" for i in range(6)] + ["late-0", "late-1"]
    )
    # The control: a batch among the afternoon's event times must read their (gone) file.
    with pytest.raises(OSError):
        _append(catalog, _rows(["a9"], hour=15), "afternoon-late")


def test_the_check_skips_row_groups_outside_the_batchs_event_times(catalog) -> None:
    table = catalog.load_table(EXPLANATIONS)
    with table.transaction() as tx:  # row groups of 4 rows, so one file holds three
        tx.set_properties({"write.parquet.row-group-limit": "4"})
    # Appended out of order: the protocol writes them sorted by event time.
    day = _rows([f"d{i:02d}" for i in range(12)], hour=8)
    _append(catalog, day[::-1], "day")
    (path,) = _files(catalog, 0, 24)
    parquet = pq.ParquetFile(path)
    assert parquet.metadata.num_row_groups == 3
    times = parquet.read(columns=["event_ts"])["event_ts"].to_pylist()
    assert times == sorted(times)
    # Destroy the last row group's key column (minutes 8-11): its footer statistics stay.
    column = parquet.schema_arrow.get_field_index("explanation_id")
    chunk = parquet.metadata.row_group(2).column(column)
    start = min(o for o in (chunk.dictionary_page_offset, chunk.data_page_offset) if o is not None)
    with open(path, "r+b") as f:
        f.seek(start)
        f.write(b"\xff" * chunk.total_compressed_size)
    # A replay of minutes 1-3 plus a new row at minute 4 reads row groups 0 and 1 only.
    result = _append(catalog, day[1:4] + _rows(["x"] * 5, hour=8)[4:], "early")
    assert (result.rows_committed, result.rows_already_present) == (1, 3)
    # The control: minute 10 lies in the destroyed row group.
    with pytest.raises((OSError, pa.ArrowInvalid)):
        _append(catalog, [day[10]], "late")


def test_rows_without_the_time_that_bounds_the_check_are_refused(catalog) -> None:
    rows = explanation_table(_rows(["r0"], hour=9))
    nulls = rows.set_column(
        rows.schema.get_field_index("event_ts"),
        pa.field("event_ts", rows.schema.field("event_ts").type),  # nullable for this test
        pa.nulls(1, rows.schema.field("event_ts").type),
    )
    with pytest.raises(ConfigError, match="event_ts must be set on every row"):
        append_once(
            catalog,
            EXPLANATIONS,
            nulls,
            key="explanation_id",
            scope=SCOPE,
            run_id="run",
            batch_id="b",
            time_field="event_ts",
        )
    assert _stored(catalog) == []


def test_tables_get_small_row_groups_once_and_keep_an_owners_choice(tmp_path: Path) -> None:
    catalog = open_catalog(CatalogConfig.embedded(tmp_path))
    table = ensure_tables(catalog)[EXPLANATIONS]
    for key, value in LAYOUT_PROPERTIES.items():
        assert table.properties[key] == value
    with table.transaction() as tx:
        tx.remove_properties(*LAYOUT_PROPERTIES)
    assert ensure_tables(catalog)[EXPLANATIONS].properties.items() >= LAYOUT_PROPERTIES.items()
    table = catalog.load_table(EXPLANATIONS)
    with table.transaction() as tx:
        tx.set_properties({"write.parquet.row-group-limit": "500000"})
    again = ensure_tables(catalog)[EXPLANATIONS]
    assert again.properties["write.parquet.row-group-limit"] == "500000"
