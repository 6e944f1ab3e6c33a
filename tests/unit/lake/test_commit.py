"""Appends are idempotent and survive concurrent writers: every row committed exactly once."""

from __future__ import annotations

import threading
from collections import Counter

import pyarrow as pa
import pytest
from pyiceberg.expressions import AlwaysTrue, EqualTo

from tests.unit.lake.conftest import explanation_row
from whylake.lake.catalog import EXPLANATIONS, CatalogConfig, ensure_tables, open_catalog
from whylake.lake.commit import BATCH_ID_PROPERTY, RUN_ID_PROPERTY, CommitConfig, append_once
from whylake.schemas.explanation import EXPLANATION_ARROW_SCHEMA


def _table(rows) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=EXPLANATION_ARROW_SCHEMA)


def test_a_replayed_batch_adds_nothing(tmp_path) -> None:
    catalog = open_catalog(CatalogConfig.embedded(tmp_path))
    ensure_tables(catalog)
    rows = _table([explanation_row("acme", f"r{i}") for i in range(5)])
    first = append_once(
        catalog,
        EXPLANATIONS,
        rows,
        key="explanation_id",
        scope=EqualTo("tenant_id", "acme"),
        run_id="run-a",
        batch_id="b1",
    )
    again = append_once(
        catalog,
        EXPLANATIONS,
        rows,
        key="explanation_id",
        scope=EqualTo("tenant_id", "acme"),
        run_id="run-b",
        batch_id="b1",
    )
    assert (first.rows_committed, first.rows_already_present) == (5, 0)
    assert (again.rows_committed, again.rows_already_present, again.snapshot_id) == (0, 5, None)
    table = catalog.load_table(EXPLANATIONS)
    assert table.scan().to_arrow().num_rows == 5
    summary = table.current_snapshot().summary.additional_properties
    assert summary[RUN_ID_PROPERTY] == "run-a" and summary[BATCH_ID_PROPERTY] == "b1"


def test_a_batch_with_a_repeated_key_commits_it_once(tmp_path) -> None:
    catalog = open_catalog(CatalogConfig.embedded(tmp_path))
    ensure_tables(catalog)
    row = explanation_row("acme", "dup")
    result = append_once(
        catalog,
        EXPLANATIONS,
        _table([row, row]),
        key="explanation_id",
        scope=AlwaysTrue(),
        run_id="r",
        batch_id="b",
    )
    assert result.rows_committed == 1
    assert catalog.load_table(EXPLANATIONS).scan().to_arrow().num_rows == 1


@pytest.mark.parametrize("writers, appends", [(4, 30)])
def test_concurrent_writers_commit_every_row_exactly_once(tmp_path, writers, appends) -> None:
    ensure_tables(open_catalog(CatalogConfig.embedded(tmp_path)))
    errors: list[BaseException] = []

    def write(w: int) -> None:
        catalog = open_catalog(CatalogConfig.embedded(tmp_path))  # its own connection, as a worker
        try:
            for a in range(appends):
                # Every second append replays the previous one (a retried bundle).
                i = a - (a % 2)
                rows = _table([explanation_row(f"t{w}", f"w{w}-a{i}-{k}") for k in range(2)])
                append_once(
                    catalog,
                    EXPLANATIONS,
                    rows,
                    key="explanation_id",
                    scope=EqualTo("tenant_id", f"t{w}"),
                    run_id=f"w{w}",
                    batch_id=f"w{w}-{i}",
                    config=CommitConfig(max_attempts=50),
                )
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    ids = (
        open_catalog(CatalogConfig.embedded(tmp_path))
        .load_table(EXPLANATIONS)
        .scan(selected_fields=("request_id",))
        .to_arrow()["request_id"]
        .to_pylist()
    )
    counts = Counter(ids)
    expected = {
        f"w{w}-a{i}-{k}" for w in range(writers) for i in range(0, appends, 2) for k in range(2)
    }
    assert set(counts) == expected
    assert max(counts.values()) == 1
