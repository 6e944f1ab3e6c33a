"""Benchmark harness: the explain stage's rate against its own kernels' rate, in the same run.

Runs the batch job on the demo models with a policy that explains a large share of the
records, and times, inside that very run, each call of the explain stage's parts on every
worker thread: the kernels (IG, stability across baselines, SHAP, counterfactuals: the
mathematics), the feature matrix built from rows, and the records assembled from the results.
The kernels' compute-bound rate is the rate the workers would reach doing nothing but kernels
(rows / (kernel seconds / workers)); the stage's rate is rows / its active window. Writes
bench/results/explain_stage.json with both, their ratio (goal: >= 50%) and the breakdown of
where the rest goes. Never asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import yaml
from apache_beam.runners.portability.fn_api_runner import worker_handlers

from bench.batch import DAY
from whylake.jobs.batch_job import run_batch
from whylake.jobs.demo_data import tenant_table
from whylake.jobs.demo_models import DEMO_TENANTS, register_demo_models
from whylake.lake.catalog import CatalogConfig
from whylake.pipelines.batch import local_runner_args
from whylake.pipelines.configs import BatchJobConfig, StoreConfig
from whylake.registry.store import ModelRegistry
from whylake.schemas.secrets import Secret
from whylake.transforms import model_bank
from whylake.transforms.explainers.config import ExplainConfig
from whylake.transforms.explanation_records import library_versions
from whylake.transforms.progress import listen
from whylake.transforms.sampling.policy import load_policies

RESULTS = Path(__file__).resolve().parent / "results" / "explain_stage.json"


class _Timers:
    """Wall time per part, summed over every call on every thread."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.threads: set[int] = set()
        self._lock = threading.Lock()

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - start
                with self._lock:
                    self.seconds[name] += elapsed
                    self.calls[name] += 1
                    self.threads.add(threading.get_ident())

        return timed


def _policy(path: Path, per_tenant_budget: int) -> Path:
    doc = {
        "version": "bench-explain-stage",
        "seed": 20261122,
        "defaults": {
            "sampler": "priority",
            "weight": "uniform",
            "budget_per_day": per_tenant_budget,
            "always_explain": {"flags": ["flagged", "disputed", "high_risk"]},
            "counterfactuals_for": ["flagged", "disputed"],
        },
    }
    path.write_text(yaml.safe_dump(doc))
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=60_000)
    parser.add_argument("--explain", type=int, default=30_000, help="rows to explain, about")
    parser.add_argument("--work", type=Path, default=Path(".whylake/bench-explain-stage"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    work = args.work.resolve()
    registry = ModelRegistry(work / "models")
    register_demo_models(registry)
    inputs = work / f"input-{args.records}"
    per_tenant = -(-args.records // len(DEMO_TENANTS))
    if not inputs.exists():
        inputs.mkdir(parents=True)
        for tenant in DEMO_TENANTS:
            pq.write_table(
                tenant_table(registry, tenant, DAY, per_tenant, seed=13),
                inputs / f"{tenant}.parquet",
            )
    policy = _policy(work / "policy.yaml", max(1, args.explain // len(DEMO_TENANTS)))
    home = work / "lake"
    shutil.rmtree(home, ignore_errors=True)

    timers = _Timers()
    originals = {
        "kernels": model_bank.ModelBank._compute,
        "feature_matrix": model_bank.feature_matrix,
        "assemble_records": model_bank.assemble_records,
        "bank_explain": model_bank.ModelBank.explain,
    }
    model_bank.ModelBank._compute = timers.wrap("kernels", originals["kernels"])  # type: ignore[method-assign]
    model_bank.feature_matrix = timers.wrap("feature_matrix", originals["feature_matrix"])
    model_bank.assemble_records = timers.wrap("assemble_records", originals["assemble_records"])
    model_bank.ModelBank.explain = timers.wrap("bank_explain", originals["bank_explain"])  # type: ignore[method-assign]
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
                    hash_key=Secret("whylake-bench-key", "bench"),
                    catalog=CatalogConfig.embedded(home),
                    explain=ExplainConfig(),
                ),
                day=DAY,
            )
        )
    finally:
        stop()
        model_bank.ModelBank._compute = originals["kernels"]  # type: ignore[method-assign]
        model_bank.feature_matrix = originals["feature_matrix"]
        model_bank.assemble_records = originals["assemble_records"]
        model_bank.ModelBank.explain = originals["bank_explain"]  # type: ignore[method-assign]
    end_to_end = time.perf_counter() - start
    explained = summary.record.records_explained
    window = windows.get("explained", [0.0, 0.0])
    active = max(window[1] - window[0], 1e-9)
    workers = max(len(timers.threads), 1)
    stage_rate = explained / active
    kernel_rate = explained / max(timers.seconds["kernels"] / workers, 1e-9)
    bank = timers.seconds["bank_explain"]
    result = {
        "benchmark": "explain_stage",
        "goal": "explain stage >= 50% of its kernels' compute-bound rate in the same run",
        "records": summary.record.records_read,
        "explained": explained,
        "status": summary.record.status,
        "end_to_end_s": round(end_to_end, 2),
        "explain_stage": {
            "active_s": round(active, 3),
            "rows_per_s": round(stage_rate, 1),
        },
        "kernels": {
            "seconds_all_workers": round(timers.seconds["kernels"], 3),
            "compute_bound_rows_per_s": round(kernel_rate, 1),
            "what": "IG (steps, rule of ExplainConfig), stability across baselines, SHAP, "
            "counterfactuals: ModelBank._compute",
        },
        "stage_to_kernel_ratio": round(stage_rate / kernel_rate, 3),
        "breakdown_seconds_all_workers": {
            "model_bank_explain": round(bank, 3),
            "kernels": round(timers.seconds["kernels"], 3),
            "feature_matrix": round(timers.seconds["feature_matrix"], 3),
            "assemble_records": round(timers.seconds["assemble_records"], 3),
            "rest_of_model_bank": round(
                bank
                - timers.seconds["kernels"]
                - timers.seconds["feature_matrix"]
                - timers.seconds["assemble_records"],
                3,
            ),
            # Time the workers spent in the stage's window outside ModelBank.explain: Beam's
            # batching, RunInference, routing, and everything else the threads did.
            "outside_model_bank": round(max(active * workers - bank, 0.0), 3),
        },
        # The whole process (model registration, the pipeline, the lake): the stage's memory
        # must stay bounded by a batch, not grow with the run (it once reached 6-20 GB here).
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "runner_args": local_runner_args("FnApiRunner", ()),
        "data_buffer_time_limit_ms": worker_handlers.DATA_BUFFER_TIME_LIMIT_MS,
        "calls": dict(timers.calls),
        "workers_seen": workers,
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        },
        "versions": library_versions(),
        "settings": {"explain": ExplainConfig().__dict__, "policy": policy.read_text()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        json.dumps(
            {
                k: result[k]
                for k in (
                    "explained",
                    "explain_stage",
                    "kernels",
                    "stage_to_kernel_ratio",
                    "peak_rss_mb",
                )
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
