"""Benchmark: 1 million inference records through the batch job, 2% explained.

Writes bench/results/batch.json: end-to-end time and each stage's records/s, measured over the
stage's active window in the real run (first to last record it reported). Never asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import tempfile
import time
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from whylake.jobs.batch_job import run_batch
from whylake.jobs.demo_data import tenant_table
from whylake.jobs.demo_models import DEMO_TENANTS, register_demo_models
from whylake.lake.catalog import CatalogConfig
from whylake.pipelines.configs import BatchJobConfig, StoreConfig
from whylake.registry.store import ModelRegistry
from whylake.schemas.inference import INFERENCE_ARROW_SCHEMA
from whylake.schemas.secrets import Secret
from whylake.transforms.explainers.config import ExplainConfig
from whylake.transforms.explanation_records import library_versions
from whylake.transforms.progress import listen
from whylake.transforms.sampling.policy import load_policies

DAY = date(2026, 11, 21)
RESULTS = Path(__file__).resolve().parent / "results" / "batch.json"


def _policy(path: Path, records: int, rate: float, always: int) -> Path:
    """Flags-only always-explain rules and a budget that makes the whole sample `rate`."""
    per_tenant = max(1, int((rate * records - always) / len(DEMO_TENANTS)))
    doc = {
        "version": "bench",
        "seed": 20261122,
        "defaults": {
            "sampler": "priority",
            "weight": "uniform",
            "budget_per_day": per_tenant,
            "always_explain": {"flags": ["flagged", "disputed", "high_risk"]},
            "counterfactuals_for": ["flagged", "disputed"],
        },
    }
    path.write_text(yaml.safe_dump(doc))
    return path


# tenant_table builds Python lists per row: at 3.3M rows a tenant it took several GB, so large
# inputs are written in chunks (the first chunk is exactly the 1M run's table, seed 11).
_CHUNK = 500_000


def _write_tenant(registry: ModelRegistry, tenant: str, rows: int, path: Path) -> None:
    with pq.ParquetWriter(path, INFERENCE_ARROW_SCHEMA) as writer:
        for c, first in enumerate(range(0, rows, _CHUNK)):
            n = min(_CHUNK, rows - first)
            table = tenant_table(registry, tenant, DAY, n, seed=11 + c)
            if first:
                # Request ids continue from the previous chunk's instead of starting again.
                seq = pc.cast(pa.array(range(first, first + n)), pa.large_string())
                ids = pc.binary_join_element_wise(
                    pa.scalar(f"{tenant}-{DAY:%Y%m%d}-", pa.large_string()),
                    pc.utf8_lpad(seq, 8, "0"),
                    pa.scalar("", pa.large_string()),
                )
                table = table.set_column(
                    table.schema.get_field_index("request_id"), "request_id", ids
                )
            writer.write_table(table.cast(INFERENCE_ARROW_SCHEMA), row_group_size=50_000)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--rate", type=float, default=0.02)
    parser.add_argument("--device", default=None)
    parser.add_argument("--work", type=Path, default=Path(".whylake/bench-batch"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--runner-arg",
        action="append",
        default=[],
        help="extra Beam option, e.g. --runner-arg=--direct_num_workers=2",
    )
    args = parser.parse_args(argv)

    work = args.work.resolve()
    registry = ModelRegistry(work / "models")
    register_demo_models(registry)
    inputs = work / f"input-{args.records}"
    per_tenant = -(-args.records // len(DEMO_TENANTS))
    t0 = time.perf_counter()
    if not inputs.exists():
        tmp = Path(tempfile.mkdtemp(dir=work))
        for tenant in DEMO_TENANTS:
            _write_tenant(registry, tenant, per_tenant, tmp / f"{tenant}.parquet")
        tmp.rename(inputs)
    generate_s = time.perf_counter() - t0
    always = sum(
        int(sum(1 for f in pq.read_table(p, columns=["flags"])["flags"].to_pylist() if f))
        for p in inputs.glob("*.parquet")
    )
    policy = _policy(work / "policy.yaml", per_tenant * len(DEMO_TENANTS), args.rate, always)

    home = work / "lake"
    shutil.rmtree(home, ignore_errors=True)  # a fresh table: measure appends, not replays
    windows: dict[str, list[float]] = {}
    counts: dict[str, int] = {}

    def on_count(stage: str, n: int) -> None:
        now = time.perf_counter()
        window = windows.setdefault(stage, [now, now])
        window[1] = now
        counts[stage] = counts.get(stage, 0) + n

    stop = listen(on_count)
    load_before = os.getloadavg()
    start = time.perf_counter()
    try:
        summary = run_batch(
            BatchJobConfig(
                inputs=(str(inputs / "*.parquet"),),
                store=StoreConfig(
                    registry_root=str(work / "models"),
                    policies=load_policies(policy),
                    hash_key=Secret("whylake-bench-key", "bench"),  # generated user ids
                    catalog=CatalogConfig.embedded(home),
                    explain=ExplainConfig(),
                    device=args.device,
                ),
                day=DAY,
            )
        )
    finally:
        stop()
    end_to_end = time.perf_counter() - start
    record = summary.record
    stages = {
        stage: {
            "records": counts[stage],
            "active_s": round(windows[stage][1] - windows[stage][0], 3),
            "records_per_s": round(
                counts[stage] / max(windows[stage][1] - windows[stage][0], 1e-9), 1
            ),
        }
        for stage in ("read", "validated", "records_sampled", "explained", "committed")
        if stage in counts
    }
    result = {
        "benchmark": "batch",
        "records": record.records_read,
        "sample_rate_target": args.rate,
        "sampled": record.records_sampled,
        "explained": record.records_explained,
        "committed": record.records_committed,
        "status": record.status,
        "end_to_end_s": round(end_to_end, 2),
        "end_to_end_records_per_s": round(record.records_read / end_to_end, 1),
        # The whole process (the local runner's workers are threads of it), inputs included.
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "goal": (
            "1M records <= 15 s; 10M records <= 200 s with peak RSS <= 6 GB, on 2 cores "
            "(reported, not asserted)"
        ),
        "stages": stages,
        "input_generation_s": round(generate_s, 2),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            # Other work on the machine skews every figure: recorded, not corrected.
            "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        },
        "versions": library_versions(),
        "settings": {
            "runner": "FnApiRunner",
            "device": args.device or "auto",
            "explain": ExplainConfig().__dict__,
            "policy": policy.read_text(),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        json.dumps(
            {k: result[k] for k in ("records", "explained", "end_to_end_s", "stages")}, indent=2
        )
    )


if __name__ == "__main__":
    main()
