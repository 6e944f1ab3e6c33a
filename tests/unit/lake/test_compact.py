"""Compaction rewrites small files into large ones without changing a row, past or present."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.expressions import EqualTo

from tests.unit.lake.conftest import EVENT_DAY, explanation_row
from whylake.lake import compact as compact_module
from whylake.lake.catalog import EXPLANATIONS, CatalogConfig, ensure_tables, open_catalog
from whylake.lake.commit import append_once
from whylake.lake.compact import CompactConfig, compact_table
from whylake.schemas.arrow import strict_table
from whylake.schemas.explanation import EXPLANATION_ARROW_SCHEMA

SMALL = CompactConfig(target_file_mb=64, small_file_mb=32)


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    catalog = open_catalog(CatalogConfig.embedded(tmp_path))
    ensure_tables(catalog)
    return catalog


def _append(catalog: Catalog, tenant: str, start: int, n: int, day_offset: int = 0) -> None:
    event_ts = EVENT_DAY + timedelta(days=day_offset)
    rows = [
        explanation_row(tenant, f"{tenant}-{i:05d}", event_ts=event_ts)
        for i in range(start, start + n)
    ]
    append_once(
        catalog,
        EXPLANATIONS,
        strict_table(rows, EXPLANATION_ARROW_SCHEMA),
        key="explanation_id",
        scope=EqualTo("tenant_id", tenant),
        run_id="writer",
        batch_id=f"{tenant}-{start}-{day_offset}",
    )


def _rows(catalog: Catalog, snapshot_id: int | None = None) -> pa.Table:
    table = catalog.load_table(EXPLANATIONS)
    rows = table.scan(snapshot_id=snapshot_id).to_arrow()
    return rows.sort_by([("explanation_id", "ascending")])


def _files(catalog: Catalog, tenant: str) -> int:
    table = catalog.load_table(EXPLANATIONS)
    return len(list(table.scan(row_filter=EqualTo("tenant_id", tenant)).plan_files()))


def test_small_files_become_one_and_no_row_changes_now_or_at_any_earlier_snapshot(
    catalog: Catalog,
) -> None:
    for i in range(6):  # six commits of one partition, like six streaming windows
        _append(catalog, "acme", i * 10, 10)
    _append(catalog, "globex", 0, 5)
    _append(catalog, "acme", 500, 4, day_offset=1)  # another day: its own partition, one file
    table = catalog.load_table(EXPLANATIONS)
    before = {s.snapshot_id: _rows(catalog, s.snapshot_id) for s in table.snapshots()}
    current = _rows(catalog)
    assert _files(catalog, "acme") == 7

    results = compact_table(catalog, EXPLANATIONS, SMALL)

    (result,) = results  # globex has one file and acme's second day one: both left alone
    assert (result.files_before, result.files_after, result.rows) == (6, 1, 60)
    assert "tenant_id=acme" in result.partition and result.snapshot_id is not None
    assert _files(catalog, "acme") == 2
    assert _rows(catalog).equals(current)  # row-level equality, every column
    table = catalog.load_table(EXPLANATIONS)
    replace = table.snapshot_by_id(result.snapshot_id)
    assert replace is not None and replace.summary is not None
    assert replace.summary.operation.value == "replace"
    for snapshot_id, rows in before.items():  # time travel to every earlier snapshot
        assert _rows(catalog, snapshot_id).equals(rows)
    assert compact_table(catalog, EXPLANATIONS, SMALL) == []  # nothing small is left


def test_appends_committed_during_a_compaction_are_neither_lost_nor_duplicated(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(4):
        _append(catalog, "acme", i * 10, 10)
    # Between reading the files and committing the replace, another writer appends to the
    # same partition: the replace's first attempt conflicts and is rebuilt on top of it.
    written = compact_module._write
    appended = threading.Event()

    def write_then_race(*args: object, **kwargs: object) -> object:
        files = written(*args, **kwargs)  # type: ignore[arg-type]
        if not appended.is_set():
            appended.set()
            _append(catalog, "acme", 1000, 7)
        return files

    monkeypatch.setattr(compact_module, "_write", write_then_race)
    (result,) = compact_table(catalog, EXPLANATIONS, SMALL)
    assert appended.is_set() and result.snapshot_id is not None
    ids = _rows(catalog)["request_id"].to_pylist()
    assert len(ids) == len(set(ids)) == 47
    assert {f"acme-{i:05d}" for i in range(1000, 1007)} <= set(ids)


def test_concurrent_writers_in_threads_during_compaction_keep_every_row_once(
    catalog: Catalog,
) -> None:
    for i in range(8):
        _append(catalog, "acme", i * 10, 10)
    barrier = threading.Barrier(3)
    errors: list[BaseException] = []

    def writer(base: int) -> None:
        try:
            barrier.wait(timeout=30)
            for j in range(5):
                _append(catalog, "acme", base + j * 3, 3)
        except BaseException as exc:  # noqa: BLE001 — reported by the test below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(b,)) for b in (2000, 3000)]
    for t in threads:
        t.start()
    barrier.wait(timeout=30)
    results = compact_table(catalog, EXPLANATIONS, SMALL)
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    ids = _rows(catalog)["request_id"].to_pylist()
    assert len(ids) == len(set(ids)) == 80 + 2 * 15
    assert results and results[0].rows >= 80


def test_a_second_compaction_of_the_same_files_adds_nothing(catalog: Catalog) -> None:
    for i in range(3):
        _append(catalog, "acme", i * 10, 10)
    table = catalog.load_table(EXPLANATIONS)
    stale = compact_module._small_files_by_partition(table, SMALL)
    (partition, tasks) = next(iter(stale.items()))
    assert compact_table(catalog, EXPLANATIONS, SMALL)[0].snapshot_id is not None
    # A compactor that planned before the first one committed: its files are gone.
    late = compact_module._compact_partition(
        catalog, EXPLANATIONS, partition, tasks, SMALL, "compact-late"
    )
    assert late.snapshot_id is None and "Missing required files" in late.note
    ids = _rows(catalog)["request_id"].to_pylist()
    assert len(ids) == len(set(ids)) == 30


def test_config_checks_itself() -> None:
    with pytest.raises(ValueError, match="small_file_mb"):
        CompactConfig(target_file_mb=1, small_file_mb=2)
    with pytest.raises(ValueError, match="min_files"):
        CompactConfig(min_files=1)


def test_the_compact_command_reports_each_partition_and_refuses_bad_options(
    tmp_path: Path,
    catalog: Catalog,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from tests.unit.jobs.test_cli import whylake

    for i in range(3):
        _append(catalog, "acme", i * 10, 10)
    current = _rows(catalog)
    code, out = whylake(monkeypatch, capsys, "compact", "--home", str(tmp_path), "--tenant", "acme")
    assert code == 0, out
    assert "3 -> 1" in out and "1 partitions compacted" in out
    assert _rows(catalog).equals(current)
    code, out = whylake(monkeypatch, capsys, "compact", "--home", str(tmp_path), "--table", "runs")
    assert code == 2 and "--table 'runs'" in out
