"""Benchmark: the audit store at scale — commits, tenant SQL and reconstruction over 10M rows.

Writes bench/results/storage.json:
- commit latency of 1,000 rows (lake.commit.append_once with the jobs' settings) into a tenant-day
  partition holding 0, 1M and 10M rows, for three batch shapes: a *pane* (new rows within one
  minute of event time, somewhere inside the day: a streaming window, or an hourly file's
  slice), a *day* (new rows spread over the whole day: the protocol's worst case, which must
  read the day's keys) and a *replay* (a batch committed before, again: known from metadata);
- a tenant SQL aggregate (lake.audit.run_tenant_sql) and a time-travel reconstruction
  (lake.reconstruct.reconstruct) over a 10M-row explanations table of 3 tenants x 30 days;
- the peak RSS of each, measured in a fresh process per measurement (VmHWM).

The tables are generated once (vectorised Arrow, the real explanation schema, 8 features per
row) and cached under --work (git-ignored); later runs reuse them. A partition is written in
chunks of 1M rows in event-time order (each chunk a slice of the day, rows sorted), the layout
the jobs' commits (sorted by event time) and a day's successive commits produce. Never asserts
a time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from whylake.lake.catalog import EXPLANATIONS, CatalogConfig, ensure_tables, open_catalog
from whylake.schemas.explanation import EXPLANATION_ARROW_SCHEMA, EXPLANATION_SCHEMA_VERSION

RESULTS = Path(__file__).resolve().parent / "results" / "storage.json"
COMMIT_ROWS = 1_000
FEATURES = tuple(f"feature_{i:02d}" for i in range(8))
AUDIT_TENANTS = ("acme", "globex", "initech")
AUDIT_DAYS = 30
DAY0 = datetime(2026, 10, 1, tzinfo=UTC)
COMMIT_DAY = datetime(2026, 11, 21, tzinfo=UTC)
CHUNK = 1_000_000
GOALS = {
    "commit": "1,000 rows into a 10M-row partition at most 2x the time into an empty one",
    "sql": "tenant aggregate over 10M rows: p50 <= 2 s, peak RSS <= 2 GB",
    "reconstruct": "one request as of a past time <= 1 s",
}
AGGREGATES = {
    # The auditor's first question: how many explanations, by reason, and the HT estimate of
    # the population's mean prediction (Horvitz-Thompson weights, Duffield-Lund-Thorup 2007).
    "by_reason": """
        SELECT sampling_reason, count(*) AS explained,
               sum(ht_weight) AS population, sum(ht_weight * prediction) / sum(ht_weight) AS mean
        FROM explanations GROUP BY 1 ORDER BY 1
    """,
    # The heavier one: global attribution by feature, over every row's attribution list.
    "attribution_by_feature": """
        SELECT a.feature, sum(e.ht_weight * abs(a.value)) / sum(e.ht_weight) AS mean_abs
        FROM explanations e, unnest(e.attributions) AS u(a) GROUP BY 1 ORDER BY 2 DESC
    """,
}


# ---------------------------------------------------------------- generation (vectorised)


def _hex_ids(rng: np.random.Generator, n: int) -> pa.Array:
    """n distinct-looking 64-character hex ids, built without a Python loop."""
    data = rng.bytes(32 * n).hex().encode()
    offsets = pa.array(np.arange(0, 64 * n + 1, 64, dtype=np.int64))
    return pa.LargeStringArray.from_buffers(n, offsets.buffers()[1], pa.py_buffer(data))


_TEXT = pa.large_string()


def _repeat(value: Any, n: int, type_: pa.DataType = _TEXT) -> pa.Array:
    return pa.repeat(pa.scalar(value, type_), n)


def _pick(rng: np.random.Generator, choices: list[str], n: int, p: list[float]) -> pa.Array:
    index = pa.array(rng.choice(len(choices), size=n, p=p))
    return pc.take(pa.array(choices, pa.large_string()), index)


DAY_US = 86_400_000_000


def explanation_rows(
    rng: np.random.Generator,
    tenant: str,
    day: datetime,
    first_seq: int,
    n: int,
    run_id: str,
    span_us: tuple[int, int] = (0, DAY_US),
) -> pa.Table:
    """n explanation rows of one tenant-day in the real schema, with realistic shapes, their
    event times sorted within `span_us` (microseconds after the day's start)."""
    seq = pa.array(np.arange(first_seq, first_seq + n, dtype=np.int64))
    prefix = f"{tenant}-{day:%Y%m%d}-"
    request_id = pc.binary_join_element_wise(
        _repeat(prefix, n),
        pc.utf8_lpad(pc.cast(seq, pa.large_string()), 8, "0"),
        pa.scalar("", pa.large_string()),
    )
    offsets_s = np.sort(rng.integers(span_us[0], span_us[1], size=n))
    event_us = int(day.timestamp() * 1_000_000) + offsets_s
    event_ts = pa.array(event_us, pa.timestamp("us", tz="UTC"))
    explained_ts = pa.array(event_us + 3_600_000_000, pa.timestamp("us", tz="UTC"))
    k = len(FEATURES)
    values = rng.normal(0.0, 0.1, size=n * k)
    inputs = np.round(rng.normal(0.0, 1.0, size=n * k), 2)  # logged inputs: few decimals
    attribution = pa.StructArray.from_arrays(
        [
            pc.take(pa.array(FEATURES, pa.large_string()), pa.array(np.tile(np.arange(k), n))),
            pa.array(values),
            pa.array(inputs),
            pa.array(np.zeros(n * k)),
        ],
        fields=list(EXPLANATION_ARROW_SCHEMA.field("attributions").type.value_type),
    )
    attributions = pa.LargeListArray.from_arrays(
        pa.array(np.arange(0, n * k + 1, k, dtype=np.int64)),
        attribution,
        type=EXPLANATION_ARROW_SCHEMA.field("attributions").type,
    )
    base = 0.3
    prediction = base + values.reshape(n, k).sum(axis=1)
    inclusion = rng.uniform(0.01, 1.0, size=n)
    reason = _pick(
        rng,
        ["priority", "always:flagged", "always:disputed", "always:low_confidence"],
        n,
        [0.9, 0.05, 0.02, 0.03],
    )
    columns: dict[str, pa.Array] = {
        "explanation_id": _hex_ids(rng, n),
        "tenant_id": _repeat(tenant, n),
        "request_id": request_id,
        "event_ts": event_ts,
        "explained_at": explained_ts,
        "run_id": _repeat(run_id, n),
        "model_id": _repeat("credit-risk", n),
        "model_version": _repeat("1", n),
        "model_sha256": _repeat("ab" * 32, n),
        "output_name": _repeat("probability of default", n),
        "prediction": pa.array(prediction),
        "logged_score": pa.array(prediction),
        "predicted_class": _pick(rng, ["approve", "decline"], n, [0.7, 0.3]),
        "user_id_hash": _hex_ids(rng, n),
        "input_hash": _hex_ids(rng, n),
        "source": _repeat(f"s3://logs/{tenant}/{day:%Y-%m-%d}.jsonl", n),
        "policy_version": _repeat("bench", n),
        "schema_version": _repeat(EXPLANATION_SCHEMA_VERSION, n, pa.int32()),
        "summary": _pick(
            rng,
            [f"The score was driven mostly by {f}." for f in FEATURES[:4]],
            n,
            [0.4, 0.3, 0.2, 0.1],
        ),
        "flags": pa.nulls(n, EXPLANATION_ARROW_SCHEMA.field("flags").type),
        "explainer_method": _repeat("integrated_gradients", n),
        "explainer_config": _repeat('{"method": "integrated_gradients", "steps": 50}', n),
        "explainer_config_hash": _repeat("cd" * 32, n),
        "explainer_versions": _repeat('{"torch": "2.13.0"}', n),
        "baseline_kind": _repeat("card", n),
        "seed": _repeat(7, n, pa.int64()),
        "base_value": _repeat(base, n, pa.float64()),
        "device": _repeat("cpu", n),
        "attributions": attributions,
        "shap_values": pa.nulls(n, EXPLANATION_ARROW_SCHEMA.field("shap_values").type),
        "completeness_error": pa.array(np.abs(rng.normal(0, 1e-6, size=n))),
        "shap_additivity_error": pa.nulls(n, pa.float64()),
        "stability": pa.array(rng.uniform(0.8, 1.0, size=n)),
        "score_drift": _repeat(0.0, n, pa.float64()),
        "counterfactual_status": _repeat("not_requested", n),
        "counterfactuals": pa.nulls(n, EXPLANATION_ARROW_SCHEMA.field("counterfactuals").type),
        "sampling_policy": _repeat("priority-v1", n),
        "sampling_reason": reason,
        "inclusion_probability": pa.array(inclusion),
        "ht_weight": pa.array(1.0 / inclusion),
        "stratum_size": _repeat(100_000, n, pa.int64()),
    }
    columns |= {
        "model_kind": _repeat("torch", n),
        "explainer_kind": _repeat("integrated_gradients", n),
        "model_source": _repeat("registry", n),
        "policy_hash": _repeat("ef" * 32, n),
        "ig_steps": _repeat(50, n, pa.int32()),
        "ig_convergence": pa.array(np.abs(rng.normal(0.0, 1e-3, size=n))),
        "explain_seconds": pa.array(rng.uniform(0.0005, 0.002, size=n)),
    }
    # Every other optional column (text models, reviews, producer hashes...) is empty here.
    return pa.Table.from_arrays(
        [columns.get(f.name, pa.nulls(n, f.type)) for f in EXPLANATION_ARROW_SCHEMA],
        schema=EXPLANATION_ARROW_SCHEMA,
    )


@dataclass(frozen=True)
class Lakes:
    """The two cached lakes and what was generated into them."""

    commit_home: Path  # tenant "rows-<N>": one day partition holding N rows
    audit_home: Path  # 3 tenants x 30 days, one snapshot per day
    meta: dict[str, Any]


def _append_chunks(
    table: Any, rng: np.random.Generator, tenant: str, day: datetime, rows: int
) -> None:
    done = 0
    while done < rows:
        n = min(CHUNK, rows - done)
        # This chunk's share of the day, in order: chunk k holds the k-th slice of event time.
        span = (DAY_US * done // rows, DAY_US * (done + n) // rows)
        chunk = explanation_rows(rng, tenant, day, done, n, "bench-generate", span)
        # The table's field ids are its own (create_table assigns fresh ones): cast by name.
        table.append(chunk.cast(table.schema().as_arrow()))
        done += n


def generate(work: Path, audit_rows: int, partitions: list[int]) -> Lakes:
    """Build the lakes once; a marker holding the settings makes a later run reuse them."""
    marker = work / "generated.json"
    settings = {
        "audit_rows": audit_rows,
        "partitions": partitions,
        "features": len(FEATURES),
        "layout": "event-time-ordered chunks",
    }
    if marker.exists():
        meta = json.loads(marker.read_text())
        if meta["settings"] == settings:
            return Lakes(work / "commit-lake", work / "audit-lake", meta)
    import shutil

    for folder in ("commit-lake", "audit-lake"):
        shutil.rmtree(work / folder, ignore_errors=True)
    rng = np.random.default_rng(20261121)
    t0 = time.perf_counter()
    commit = open_catalog(CatalogConfig.embedded(work / "commit-lake"))
    table = ensure_tables(commit)[EXPLANATIONS]
    for size in partitions:
        if size:
            _append_chunks(table, rng, f"rows-{size}", COMMIT_DAY, size)
    commit_s = time.perf_counter() - t0
    audit = open_catalog(CatalogConfig.embedded(work / "audit-lake"))
    table = ensure_tables(audit)[EXPLANATIONS]
    per_partition = audit_rows // (len(AUDIT_TENANTS) * AUDIT_DAYS)
    snapshots = []
    for d in range(AUDIT_DAYS):
        day = DAY0 + timedelta(days=d)
        # One commit per day, as a daily batch job makes: a snapshot per day to travel to.
        rows = pa.concat_tables(
            [
                explanation_rows(rng, t, day, 0, per_partition, f"bench-day-{d:02d}")
                for t in AUDIT_TENANTS
            ]
        )
        table.append(rows.cast(table.schema().as_arrow()))
        snapshot = table.current_snapshot()
        snapshots.append(
            {
                "day": day.date().isoformat(),
                "snapshot_id": snapshot.snapshot_id,
                "timestamp_ms": snapshot.timestamp_ms,
            }
        )
        while int(time.time() * 1000) <= snapshot.timestamp_ms + 1:
            time.sleep(0.001)  # distinct commit times, so "as of" is unambiguous
    meta = {
        "settings": settings,
        "per_partition_rows": per_partition,
        "audit_table_rows": per_partition * len(AUDIT_TENANTS) * AUDIT_DAYS,
        "snapshots": snapshots,
        "generate_commit_lake_s": round(commit_s, 1),
        "generate_audit_lake_s": round(time.perf_counter() - t0 - commit_s, 1),
        "disk_bytes": sum(p.stat().st_size for p in work.rglob("*") if p.is_file()),
    }
    marker.write_text(json.dumps(meta, indent=2))
    return Lakes(work / "commit-lake", work / "audit-lake", meta)


# ---------------------------------------------------------------- measurements (child processes)


def _peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def _summary(times: list[float]) -> dict[str, Any]:
    ordered = sorted(times)
    return {
        "p50_s": round(statistics.median(ordered), 4),
        "min_s": round(ordered[0], 4),
        "max_s": round(ordered[-1], 4),
        "runs_s": [round(t, 4) for t in times],
    }


SHAPES = ("pane", "day", "replay")
PANE_US = 60_000_000  # a pane's event times lie within one minute


def measure_commit(home: Path, partition_rows: int, repeats: int, shape: str) -> dict[str, Any]:
    from pyiceberg.expressions import And, EqualTo, GreaterThanOrEqual, LessThan

    from whylake.lake.commit import append_once

    catalog = open_catalog(CatalogConfig.embedded(home))
    times = []
    used = len(catalog.load_table(EXPLANATIONS).snapshots())
    # Seeded by what the table already holds: a later run commits new keys, not replays.
    rng = np.random.default_rng([partition_rows, used, SHAPES.index(shape)])
    attempts = []
    for i in range(repeats + 1):  # the first is a warm-up (imports, first file system calls)
        if partition_rows:
            tenant, day = f"rows-{partition_rows}", COMMIT_DAY
        else:
            # A partition nobody wrote: a fresh day each time, so it really holds 0 rows.
            tenant, day = "rows-0", COMMIT_DAY + timedelta(days=1 + used + 3 * i)
        if shape == "day":
            span = (0, DAY_US)
        else:  # a minute somewhere inside the day, among the rows already there
            start = int(rng.integers(0, DAY_US - PANE_US))
            span = (start, start + PANE_US)
        first = 10**8 + used * 10_000 + i * COMMIT_ROWS
        rows = explanation_rows(rng, tenant, day, first, COMMIT_ROWS, "bench-commit", span)
        # The scope the jobs' writer gives (transforms/write_iceberg.py): tenant and day.
        scope = And(
            EqualTo("tenant_id", tenant),
            And(
                GreaterThanOrEqual("event_ts", day.isoformat()),
                LessThan("event_ts", (day + timedelta(days=1)).isoformat()),
            ),
        )

        def commit(batch: str, rows: pa.Table = rows, scope: Any = scope) -> Any:
            return append_once(
                catalog,
                EXPLANATIONS,
                rows,
                key="explanation_id",
                scope=scope,
                run_id="bench-commit",
                batch_id=batch,
                time_field="event_ts",  # the explanations writer's setting
            )

        if shape == "replay":
            commit(f"bench-commit-{used}-{i}")  # the first time, untimed
        start_s = time.perf_counter()
        result = commit(f"bench-commit-{used}-{i}")
        elapsed = time.perf_counter() - start_s
        expected = 0 if shape == "replay" else COMMIT_ROWS
        assert result.rows_committed == expected, result
        if i:
            times.append(elapsed)
            attempts.append(result.attempts)
    return {
        "partition_rows": partition_rows,
        "shape": shape,
        "batch_rows": COMMIT_ROWS,
        "rows_committed_each": expected,
        "event_time_span_s": (span[1] - span[0]) / 1e6,
        "attempts": attempts,
        **_summary(times),
    }


def measure_sql(home: Path, name: str, repeats: int) -> dict[str, Any]:
    from whylake.lake.audit import SqlLimits, run_tenant_sql

    catalog = open_catalog(CatalogConfig.embedded(home))
    limits = SqlLimits()
    times, rows = [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        result = run_tenant_sql(catalog, "globex", AGGREGATES[name], limits=limits)
        times.append(time.perf_counter() - start)
        rows = result.num_rows
    return {
        "query": " ".join(AGGREGATES[name].split()),
        "tenant": "globex",
        "result_rows": rows,
        "limits": {"memory_limit": limits.memory_limit, "threads": limits.threads},
        **_summary(times),
    }


def measure_reconstruct(home: Path, meta: dict[str, Any], repeats: int) -> dict[str, Any]:
    from whylake.lake.reconstruct import reconstruct

    catalog = open_catalog(CatalogConfig.embedded(home))
    # As of the end of day 20's commit: days 21-29 are in the table now but not then.
    then = meta["snapshots"][20]
    as_of = datetime.fromtimestamp((then["timestamp_ms"] + 1) / 1000, UTC)
    rng = np.random.default_rng(5)
    times = []
    for i in range(repeats + 1):
        d = int(rng.integers(0, 21))
        seq = int(rng.integers(0, meta["per_partition_rows"]))
        request = f"acme-{(DAY0 + timedelta(days=d)):%Y%m%d}-{seq:08d}"
        start = time.perf_counter()
        found = reconstruct(catalog, "acme", request, as_of=as_of)
        elapsed = time.perf_counter() - start
        assert found.snapshot_id == then["snapshot_id"] and found.request_id == request
        if i:
            times.append(elapsed)
    return {"tenant": "acme", "as_of_snapshot_day": then["day"], **_summary(times)}


def _child(spec: dict[str, Any]) -> None:
    kind = spec["kind"]
    home = Path(spec["home"])
    if kind == "commit":
        out = measure_commit(home, spec["partition_rows"], spec["repeats"], spec["shape"])
    elif kind == "sql":
        out = measure_sql(home, spec["name"], spec["repeats"])
    else:
        out = measure_reconstruct(home, spec["meta"], spec["repeats"])
    out["peak_rss_mib"] = _peak_rss_mib()
    print("RESULT " + json.dumps(out))


def _run_child(spec: dict[str, Any]) -> dict[str, Any]:
    load = os.getloadavg()[0]
    done = subprocess.run(
        [sys.executable, "-m", "bench.storage", "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"measurement {spec['kind']} failed:\n{done.stderr[-3000:]}")
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    out: dict[str, Any] = json.loads(line.removeprefix("RESULT "))
    out["load_average_before_after"] = [round(load, 2), round(os.getloadavg()[0], 2)]
    print(json.dumps({k: v for k, v in out.items() if k != "runs_s"}), flush=True)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000_000, help="audit table rows")
    parser.add_argument(
        "--partitions",
        default="0,1000000,10000000",
        help="rows already in the partition each commit goes to",
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--work", type=Path, default=Path(".whylake/bench-storage"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(json.loads(args.child))
        return
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    partitions = [int(p) for p in args.partitions.split(",")]
    t0 = time.perf_counter()
    lakes = generate(work, args.rows, partitions)
    print(
        f"lakes ready in {time.perf_counter() - t0:.1f} s: {lakes.meta['audit_table_rows']:,} "
        f"audit rows, {lakes.meta['disk_bytes'] / 2**30:.2f} GiB",
        flush=True,
    )
    load_before = os.getloadavg()
    commits = {
        shape: [
            _run_child(
                {
                    "kind": "commit",
                    "home": str(lakes.commit_home),
                    "partition_rows": size,
                    "repeats": args.repeats,
                    "shape": shape,
                }
            )
            for size in partitions
        ]
        for shape in SHAPES
    }
    sql = {
        name: _run_child(
            {"kind": "sql", "home": str(lakes.audit_home), "name": name, "repeats": args.repeats}
        )
        for name in AGGREGATES
    }
    rebuild = _run_child(
        {
            "kind": "reconstruct",
            "home": str(lakes.audit_home),
            "meta": lakes.meta,
            "repeats": args.repeats,
        }
    )

    def ratio(shape: str) -> float:
        empty = next(c for c in commits[shape] if c["partition_rows"] == 0)["p50_s"]
        largest = max(commits[shape], key=lambda c: c["partition_rows"])
        return round(largest["p50_s"] / empty, 2)

    result = {
        "benchmark": "storage",
        "goals": GOALS,
        "commit": commits["pane"],
        "commit_ratio_largest_to_empty": ratio("pane"),
        "commit_day_spanning": commits["day"],
        "commit_day_spanning_ratio_largest_to_empty": ratio("day"),
        "commit_replay": commits["replay"],
        "sql_aggregate": sql,
        "reconstruct": rebuild,
        "tables": {
            "audit_rows": lakes.meta["audit_table_rows"],
            "audit_layout": f"{len(AUDIT_TENANTS)} tenants x {AUDIT_DAYS} days, a snapshot a day",
            "commit_partitions": partitions,
            "features_per_row": len(FEATURES),
            "disk_gib": round(lakes.meta["disk_bytes"] / 2**30, 2),
            "generation_s": {
                "commit_lake": lakes.meta["generate_commit_lake_s"],
                "audit_lake": lakes.meta["generate_audit_lake_s"],
            },
            "catalog": "embedded (SQLite catalog, local warehouse)",
        },
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            # Other work on the machine skews every figure: recorded, not corrected.
            "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        },
        "settings": {"repeats": args.repeats, "commit_rows": COMMIT_ROWS},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
