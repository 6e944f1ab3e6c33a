"""Writers of the same keys at once, in threads and in processes: every key lands exactly once.

Each writer commits 50 batches drawn (seeded) from small per-tenant key pools, so the writers'
batches overlap in keys and differ in boundaries, as two overlapping runs of one input, a
zombie worker and a restarted stream do. The check is set equality on explanation ids plus
"no id twice", and that the rows the writers report as newly committed add up to the keys
that exist: nobody's rows are lost and nobody commits a row another writer already has.
"""

from __future__ import annotations

import multiprocessing
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from pyiceberg.expressions import EqualTo

from tests.unit.lake.conftest import EVENT_DAY, explanation_row, explanation_table
from whylake.lake.catalog import EXPLANATIONS, CatalogConfig, ensure_tables, open_catalog
from whylake.lake.commit import CommitConfig, append_once

WRITERS = 8
COMMITS = 50
TENANTS = 4
POOL = 40  # keys per tenant: 160 keys for 400 commits of 1-6 keys, so every key is contended
SEED = 14


@dataclass(frozen=True)
class WriterReport:
    """What one writer saw: rows it committed, rows it found present, its worst attempt count."""

    writer: int
    committed: int
    present: int
    attempts: int
    max_attempts: int
    error: str | None


def plan(writer: int) -> list[tuple[str, list[str]]]:
    """The seeded batches of one writer: (tenant, request ids), overlapping other writers'."""
    rng = random.Random(SEED * 1000 + writer)
    batches = []
    for i in range(COMMITS):
        tenant = f"t{(writer + i) % TENANTS}"
        start, size = rng.randrange(POOL), rng.randint(1, 6)
        batches.append((tenant, [f"{tenant}-k{(start + j) % POOL:02d}" for j in range(size)]))
    return batches


def row(tenant: str, key: str) -> dict[str, object]:
    """The row of a pool key, at an event time of its own (13 minutes apart along the pool),
    so batches of neighbouring keys span overlapping ranges of event time."""
    return explanation_row(tenant, key, event_ts=EVENT_DAY + timedelta(minutes=13 * int(key[-2:])))


def expected_ids() -> set[str]:
    return {
        row(tenant, key)["explanation_id"]
        for w in range(WRITERS)
        for tenant, keys in plan(w)
        for key in keys
    }


def write(
    home: str, writer: int, start: threading.Barrier, time_field: str | None = "event_ts"
) -> WriterReport:
    """Commit this writer's batches once all writers are ready (its own catalog connection).

    With `time_field` (the jobs' setting) the key check is bounded to the batch's event times;
    without it, it reads the tenant's partitions whole (the other tables' setting)."""
    catalog = open_catalog(CatalogConfig.embedded(home))
    committed = present = attempts = worst = 0
    start.wait()
    try:
        for i, (tenant, keys) in enumerate(plan(writer)):
            result = append_once(
                catalog,
                EXPLANATIONS,
                explanation_table(row(tenant, k) for k in keys),
                key="explanation_id",
                scope=EqualTo("tenant_id", tenant),
                run_id=f"writer-{writer}",
                batch_id=f"writer-{writer}-{i}",
                time_field=time_field,
                config=CommitConfig(max_attempts=60),
            )
            committed += result.rows_committed
            present += result.rows_already_present
            attempts += result.attempts
            worst = max(worst, result.attempts)
    except Exception as exc:  # noqa: BLE001 - reported to the test, which fails on it
        error = f"{type(exc).__name__}: {exc}"
        return WriterReport(writer, committed, present, attempts, worst, error)
    return WriterReport(writer, committed, present, attempts, worst, None)


def _write_in_process(home: str, writer: int, start: threading.Barrier, out: object) -> None:
    # The production setting, in processes: the bounded key check.
    out.put(write(home, writer, start))  # type: ignore[attr-defined]


def _check(home: Path, reports: list[WriterReport]) -> None:
    print(  # the figures of the run, shown with -s / -rP
        f"{WRITERS} writers x {COMMITS} commits: {sum(r.attempts for r in reports)} attempts, "
        f"worst {max(r.max_attempts for r in reports)} for one commit"
    )
    errors = [r.error for r in reports if r.error]
    assert not errors, errors
    ids = (
        open_catalog(CatalogConfig.embedded(home))
        .load_table(EXPLANATIONS)
        .scan(selected_fields=("explanation_id",))
        .to_arrow()["explanation_id"]
        .to_pylist()
    )
    counts = Counter(ids)
    duplicated = {i: n for i, n in counts.items() if n > 1}
    expected = expected_ids()
    assert not duplicated, (
        f"{len(ids)} rows, {len(counts)} distinct: {len(duplicated)} ids committed more than once"
    )
    assert set(counts) == expected
    # Each key was newly committed by exactly one writer; every other writer found it present.
    assert sum(r.committed for r in reports) == len(expected)
    attempted = sum(len(keys) for w in range(WRITERS) for _, keys in plan(w))
    assert sum(r.committed + r.present for r in reports) == attempted


def test_the_plan_overlaps_keys_across_writers() -> None:
    owners: dict[str, set[int]] = {}
    for w in range(WRITERS):
        for _, keys in plan(w):
            for key in keys:
                owners.setdefault(key, set()).add(w)
    assert len(owners) == TENANTS * POOL
    # Most keys are wanted by several writers: the test is about contention on the same keys.
    assert sum(len(ws) > 1 for ws in owners.values()) > 0.9 * len(owners)


@pytest.mark.parametrize("time_field", ["event_ts", None])
def test_writer_threads_of_the_same_keys_commit_each_key_exactly_once(
    tmp_path: Path, time_field: str | None
) -> None:
    ensure_tables(open_catalog(CatalogConfig.embedded(tmp_path)))
    start = threading.Barrier(WRITERS)
    reports: list[WriterReport] = []
    threads = [
        threading.Thread(
            target=lambda w=w: reports.append(write(str(tmp_path), w, start, time_field))
        )
        for w in range(WRITERS)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(reports) == WRITERS
    _check(tmp_path, reports)


def test_writer_processes_of_the_same_keys_commit_each_key_exactly_once(tmp_path: Path) -> None:
    ensure_tables(open_catalog(CatalogConfig.embedded(tmp_path)))
    ctx = multiprocessing.get_context("spawn")  # no fork of a threaded pytest process
    start, out = ctx.Barrier(WRITERS), ctx.Queue()
    procs = [
        ctx.Process(target=_write_in_process, args=(str(tmp_path), w, start, out))
        for w in range(WRITERS)
    ]
    for p in procs:
        p.start()
    reports, deadline = [], time.monotonic() + 800
    while len(reports) < WRITERS and time.monotonic() < deadline:
        reports.append(out.get(timeout=max(1.0, deadline - time.monotonic())))
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0] * WRITERS
    _check(tmp_path, reports)
