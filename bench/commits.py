"""Benchmark exactly-once commits: writers of overlapping keys, and cost as snapshots pile up.

Two parts, on the embedded catalog (SQLite + local warehouse), with lake.commit.append_once:

- contention: W threads commit C batches each of overlapping keys (as
  tests/unit/lake/test_concurrent_writers.py does) into one table: wall time, commits/s,
  attempts per commit (mean, p99, worst), and the duplicates found (must be 0);
- history: one writer, the p50 latency of a small append once the table holds N snapshots,
  and again after whylake maintenance expires them (commit log first). pyiceberg copies the
  whole table metadata, snapshots included, several times per commit, so how long snapshots
  are kept (the retention horizon) costs commit time; this measures how much.

Writes bench/results/commits.json with the settings and the machine's load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
from pyiceberg.expressions import EqualTo

from whylake.lake.catalog import (
    EXPLANATIONS,
    CatalogConfig,
    RetentionConfig,
    ensure_tables,
    open_catalog,
)
from whylake.lake.commit import CommitConfig, append_once
from whylake.lake.maintenance import expire_snapshots, set_retention
from whylake.schemas.explanation import EXPLANATION_ARROW_SCHEMA, EXPLANATION_SCHEMA_VERSION

RESULTS = Path(__file__).resolve().parent / "results" / "commits.json"
EVENT = datetime(2026, 11, 21, 9, tzinfo=UTC)


def _row(tenant: str, key: str) -> dict[str, Any]:
    return {
        "explanation_id": f"{tenant}:{key}",
        "tenant_id": tenant,
        "request_id": key,
        "event_ts": EVENT,
        "explained_at": EVENT + timedelta(hours=1),
        "run_id": "bench",
        "model_id": "m",
        "model_version": "1",
        "model_sha256": "0" * 64,
        "output_name": "p",
        "prediction": 0.5,
        "logged_score": 0.5,
        "input_hash": "1" * 64,
        "policy_version": "bench",
        "schema_version": EXPLANATION_SCHEMA_VERSION,
        "summary": "bench.",
        "explainer_method": "integrated_gradients",
        "explainer_config": "{}",
        "explainer_config_hash": "2" * 64,
        "explainer_versions": "{}",
        "baseline_kind": "zeros",
        "seed": 0,
        "base_value": 0.0,
        "device": "cpu",
        "attributions": [{"feature": "x", "value": 0.5, "input_value": 1.0, "baseline_value": 0.0}],
        "completeness_error": 0.0,
        "stability": 1.0,
        "score_drift": 0.0,
        "sampling_policy": "bench",
        "sampling_reason": "priority",
        "inclusion_probability": 1.0,
        "ht_weight": 1.0,
        "stratum_size": 1,
    }


def _commit(catalog: Any, tenant: str, keys: list[str], batch: str) -> Any:
    return append_once(
        catalog,
        EXPLANATIONS,
        pa.Table.from_pylist([_row(tenant, k) for k in keys], schema=EXPLANATION_ARROW_SCHEMA),
        key="explanation_id",
        scope=EqualTo("tenant_id", tenant),
        run_id="bench",
        batch_id=batch,
        config=CommitConfig(max_attempts=200, max_total_s=3600),
    )


def contention(writers: int, commits: int, pool: int, seed: int) -> dict[str, Any]:
    """W threads committing overlapping batches of keys from one pool per tenant."""
    home = Path(tempfile.mkdtemp(prefix="bench-commits-"))
    ensure_tables(open_catalog(CatalogConfig.embedded(home)))
    start = threading.Barrier(writers)
    attempts: list[int] = []
    errors: list[str] = []

    def write(w: int) -> None:
        catalog = open_catalog(CatalogConfig.embedded(home))
        rng = random.Random(seed * 1000 + w)
        start.wait()
        for i in range(commits):
            tenant = f"t{(w + i) % 4}"
            first, size = rng.randrange(pool), rng.randint(1, 6)
            keys = [f"k{(first + j) % pool}" for j in range(size)]
            try:
                attempts.append(_commit(catalog, tenant, keys, f"w{w}-{i}").attempts)
            except Exception as exc:  # noqa: BLE001 - counted and reported
                errors.append(f"{type(exc).__name__}: {exc}")

    t0 = time.perf_counter()
    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ids = (
        open_catalog(CatalogConfig.embedded(home))
        .load_table(EXPLANATIONS)
        .scan(selected_fields=("explanation_id",))
        .to_arrow()["explanation_id"]
    )
    counts = Counter(ids.to_pylist())
    ordered = sorted(attempts)
    return {
        "writers": writers,
        "commits": writers * commits,
        "wall_s": round(wall, 2),
        "commits_per_s": round(len(attempts) / wall, 2),
        "attempts_per_commit_mean": round(statistics.fmean(ordered), 2) if ordered else None,
        "attempts_per_commit_p99": ordered[int(0.99 * (len(ordered) - 1))] if ordered else None,
        "attempts_worst": ordered[-1] if ordered else None,
        "rows": sum(counts.values()),
        "distinct_keys": len(counts),
        "duplicated_keys": sum(1 for n in counts.values() if n > 1),
        "errors": errors[:5],
    }


def history(steps: list[int], probes: int) -> dict[str, Any]:
    """p50 latency of a 5-row commit with N snapshots in the table, then after expiry."""
    home = Path(tempfile.mkdtemp(prefix="bench-history-"))
    catalog = open_catalog(CatalogConfig.embedded(home))
    ensure_tables(catalog)
    done, out = 0, []

    def probe(label: str) -> float:
        times = []
        for p in range(probes):
            t0 = time.perf_counter()
            _commit(catalog, "probe", [f"{label}-{p}-{j}" for j in range(5)], f"{label}-{p}")
            times.append(time.perf_counter() - t0)
        return round(statistics.median(times) * 1000, 1)

    for target in steps:
        while done < target:
            _commit(catalog, f"t{done % 4}", [f"fill-{done}-{j}" for j in range(5)], f"f{done}")
            done += 1
        snapshots = len(catalog.load_table(EXPLANATIONS).snapshots())
        out.append({"snapshots": snapshots, "commit_p50_ms": probe(f"p{target}")})
        done += probes
    set_retention(catalog, RetentionConfig(days=1, min_snapshots=1), shorten=True)
    expired = expire_snapshots(catalog, now=datetime.now(UTC) + timedelta(days=2))
    left = len(catalog.load_table(EXPLANATIONS).snapshots())
    return {
        "probes_per_step": probes,
        "by_snapshots": out,
        "after_expiry": {
            "snapshots": left,
            "expired": sum(len(e.expired) for e in expired),
            "commit_p50_ms": probe("after"),
        },
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writers", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--commits", type=int, default=30, help="per writer")
    parser.add_argument("--pool", type=int, default=40, help="keys per tenant")
    parser.add_argument("--snapshots", type=int, nargs="+", default=[0, 100, 300, 600])
    parser.add_argument("--probes", type=int, default=9)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    load_start = os.getloadavg()[0]
    result = {
        "benchmark": "commits",
        "contention": [contention(w, args.commits, args.pool, args.seed) for w in args.writers],
        "history": history(sorted(args.snapshots), args.probes),
        "notes": "threads in one process (the GIL is shared: processes contend the same way "
        "on the catalog); 1-6 keys per commit, 4 tenants; a commit is load table + key scan + "
        "append + catalog update",
        "settings": {
            "writers": args.writers,
            "commits_per_writer": args.commits,
            "keys_per_tenant": args.pool,
            "catalog": "embedded SQLite + local warehouse",
            "seed": args.seed,
        },
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "load_average_1m_at_start": round(load_start, 2),
            "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
