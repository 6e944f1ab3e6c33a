"""Appends are idempotent and survive concurrent writers: every row committed exactly once."""

from __future__ import annotations

import random
from collections import Counter

import pyarrow as pa
import pytest
from pyiceberg.expressions import AlwaysTrue, EqualTo
from pyiceberg.schema import Schema

from tests.unit.lake.conftest import explanation_row
from whylake.lake import commit as commit_module
from whylake.lake.catalog import (
    _TABLES,
    EXPLANATIONS,
    NAMESPACE,
    CatalogConfig,
    ensure_tables,
    open_catalog,
)
from whylake.lake.commit import (
    BATCH_ID_PROPERTY,
    RUN_ID_PROPERTY,
    CommitConfig,
    append_once,
    to_table_schema,
)
from whylake.schemas.errors import CommitRetriesExhaustedError, TableSchemaMismatchError
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


def _append(catalog, rows, batch_id: str, **config):  # type: ignore[no-untyped-def]
    return append_once(
        catalog,
        EXPLANATIONS,
        _table(rows),
        key="explanation_id",
        scope=EqualTo("tenant_id", "acme"),
        run_id=batch_id,
        batch_id=batch_id,
        config=CommitConfig(min_wait_s=0.0, max_wait_s=0.0, **config),
    )


# "10" is what whylake set before issue 14 (and anyone with catalog access can set again): the
# guarantee must not hang on the table property, so pyiceberg's retry is off per commit.
@pytest.mark.parametrize("table_retries", ["0", "10"])
def test_a_writer_committing_the_same_key_during_the_check_does_not_make_it_twice(
    tmp_path, monkeypatch: pytest.MonkeyPatch, table_retries: str
) -> None:
    """The duplicate of issue 14, made deterministic: another writer commits between the
    key check and the append. The append must conflict and the retry must see the key."""
    table = ensure_tables(open_catalog(CatalogConfig.embedded(tmp_path)))[EXPLANATIONS]
    with table.transaction() as tx:
        tx.set_properties({"commit.retry.num-retries": table_retries})
    ours = [explanation_row("acme", f"r-{i}") for i in range(3)]
    other = open_catalog(CatalogConfig.embedded(tmp_path))  # a second writer, own connection
    real = commit_module.new_rows
    calls: list[int] = []

    def check_then_lose_the_race(table, rows, **kwargs):  # type: ignore[no-untyped-def]
        fresh = real(table, rows, **kwargs)
        if rows.num_rows == len(ours):  # our check, not the other writer's
            if not calls:  # the other writer commits r-1 right after our first key check
                _append(other, [ours[1]], "other")
            calls.append(fresh.num_rows)
        return fresh

    monkeypatch.setattr(commit_module, "new_rows", check_then_lose_the_race)
    result = _append(open_catalog(CatalogConfig.embedded(tmp_path)), ours, "ours")
    assert calls == [3, 2]  # the retry re-checked and found r-1 present
    assert (result.attempts, result.rows_committed, result.rows_already_present) == (2, 2, 1)
    ids = Counter(
        open_catalog(CatalogConfig.embedded(tmp_path))
        .load_table(EXPLANATIONS)
        .scan()
        .to_arrow()["request_id"]
        .to_pylist()
    )
    assert ids == Counter({"r-0": 1, "r-1": 1, "r-2": 1})
    # Nothing of the per-commit override was written to the table.
    props = open_catalog(CatalogConfig.embedded(tmp_path)).load_table(EXPLANATIONS).properties
    assert props["commit.retry.num-retries"] == table_retries


def test_a_writer_that_always_loses_gives_up_and_commits_nothing(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ensure_tables(open_catalog(CatalogConfig.embedded(tmp_path)))
    other = open_catalog(CatalogConfig.embedded(tmp_path))
    real = commit_module.new_rows
    rivals = iter(range(100))

    def always_beaten(table, rows, **kwargs):  # type: ignore[no-untyped-def]
        fresh = real(table, rows, **kwargs)
        if rows["request_id"][0].as_py() == "mine":  # a rival commits after each of our checks
            _append(other, [explanation_row("acme", f"rival-{next(rivals)}")], "rival")
        return fresh

    monkeypatch.setattr(commit_module, "new_rows", always_beaten)
    with pytest.raises(CommitRetriesExhaustedError, match="after 3 attempts.*rerunning"):
        _append(
            open_catalog(CatalogConfig.embedded(tmp_path)),
            [explanation_row("acme", "mine")],
            "ours",
            max_attempts=3,
        )
    ids = (
        open_catalog(CatalogConfig.embedded(tmp_path))
        .load_table(EXPLANATIONS)
        .scan()
        .to_arrow()["request_id"]
        .to_pylist()
    )
    assert sorted(ids) == ["rival-0", "rival-1", "rival-2"]


def test_waits_back_off_exponentially_with_full_jitter() -> None:
    config = CommitConfig(min_wait_s=0.05, max_wait_s=1.0)
    rng = random.Random(14)
    for attempt in range(1, 12):
        cap = min(1.0, 0.05 * 2 ** (attempt - 1))
        waits = [config.wait_s(attempt, rng) for _ in range(200)]
        assert all(0 <= w <= cap for w in waits)
        assert max(waits) > 0.8 * cap and min(waits) < 0.2 * cap  # spread over the whole range


def test_rows_land_by_name_in_a_table_whose_columns_were_evolved_in_another_order(
    tmp_path,
) -> None:
    # A table created before three columns existed, which later changes (merged in another
    # order than the contract lists them) each added: same columns, another order.
    catalog = open_catalog(CatalogConfig.embedded(tmp_path))
    catalog.create_namespace(NAMESPACE)
    schema, spec = _TABLES[EXPLANATIONS]
    late = ["confidence", "risk_score", "trust_tier"]
    older = Schema(*[f for f in schema.fields if f.name not in late], schema_id=0)
    table = catalog.create_table(EXPLANATIONS, schema=older, partition_spec=spec)
    for name in reversed(late):
        with table.update_schema() as update:
            field = schema.find_field(name)
            update.add_column(name, field.field_type, doc=field.doc)
    tables = ensure_tables(catalog)  # nothing behind: it only fixes the properties
    names = [f.name for f in tables[EXPLANATIONS].schema().fields]
    assert set(names) == set(EXPLANATION_ARROW_SCHEMA.names)
    assert names != EXPLANATION_ARROW_SCHEMA.names  # the precondition: Arrow's cast is by position
    assert names[-3:] == list(reversed(late))

    written = [
        explanation_row("acme", f"r{i}", trust_tier=tier, confidence=0.5 + i / 10, risk_score=i)
        for i, tier in enumerate(["gold", "silver", "bronze"])
    ]
    result = append_once(
        catalog,
        EXPLANATIONS,
        _table(written),
        key="explanation_id",
        scope=EqualTo("tenant_id", "acme"),
        run_id="r",
        batch_id="b",
    )
    assert result.rows_committed == 3
    read = {
        r["request_id"]: r for r in catalog.load_table(EXPLANATIONS).scan().to_arrow().to_pylist()
    }
    for row in written:
        got = read[row["request_id"]]
        assert {k: got[k] for k in late} == {k: row[k] for k in late}
        assert got["attributions"] == row["attributions"] and got["tenant_id"] == "acme"


def test_a_writer_older_than_a_column_writes_nulls_and_an_unknown_column_is_refused() -> None:
    target = pa.schema([pa.field("id", pa.string(), nullable=False), pa.field("b", pa.int64())])
    older = pa.table({"id": ["x", "y"]})
    assert to_table_schema(older, target, "t").to_pylist() == [
        {"id": "x", "b": None},
        {"id": "y", "b": None},
    ]
    with pytest.raises(TableSchemaMismatchError, match="columns the table lacks: c"):
        to_table_schema(pa.table({"id": ["x"], "c": [1]}), target, "t")
    with pytest.raises(TableSchemaMismatchError, match="lack required columns: id"):
        to_table_schema(pa.table({"b": [1]}), target, "t")
