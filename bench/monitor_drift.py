"""Attribution drift: false-alarm rate and power of the sampling-aware test, and its cost.

Writes bench/results/monitor_drift.json. Synthetic days of a linear model (tests/unit/monitor
/conftest.py's population: six features, priority-sampled with informative weights) against a
census reference of 500 rows: no-drift days at several sample sizes (the alert rate of the
sampling-aware test, of the same thresholds without the test, and of the test with the
sample's variance ignored), and days with one feature stuck at its mean (power).

    python -m bench.monitor_drift [--seeds 500]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from tests.unit.monitor.conftest import population, reference

from whylake.monitor.drift import DriftConfig, Explained, compare

RESULTS = Path(__file__).resolve().parent / "results" / "monitor_drift.json"


def _no_drift(k: int, seeds: int, config: DriftConfig, ref: Explained) -> dict[str, float]:
    aware = naive = census = 0
    t0 = time.perf_counter()
    for seed in range(seeds):
        rng = np.random.default_rng(1_000_000 + seed)
        day = population(rng, 3000).sample(rng, k)
        result = compare(day, ref, config, key=str(seed))
        aware += result.alert
        naive += result.ndcg < config.ndcg_threshold or any(
            f.attribution_js > config.attribution_threshold for f in result.features
        )
        flat = Explained(day.features, day.attributions, day.inputs, np.ones(day.rows))
        census += compare(flat.with_population(day.rows), ref, config, key=str(seed)).alert
    elapsed = time.perf_counter() - t0
    return {
        "explained_rows": k,
        "days": seeds,
        "false_alarm_rate": aware / seeds,
        "thresholds_only_rate": naive / seeds,
        "variance_ignored_rate": census / seeds,
        "ms_per_test": 1000 * elapsed / (2 * seeds),
    }


def _power(stuck: int, k: int, seeds: int, config: DriftConfig, ref: Explained) -> dict[str, float]:
    found = named = 0
    for seed in range(seeds):
        rng = np.random.default_rng(2_000_000 + seed)
        result = compare(population(rng, 3000, stuck=stuck).sample(rng, k), ref, config)
        found += result.alert
        named += result.top_moved_features[:1] == (f"f{stuck}",)
    return {"stuck_feature": f"f{stuck}", "explained_rows": k, "days": seeds,
            "detection_rate": found / seeds, "named_first_rate": named / seeds}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=500)
    args = parser.parse_args()
    config = DriftConfig()
    ref = reference(np.random.default_rng(0))
    load_before = os.getloadavg()
    results = {
        "settings": {
            **config.__dict__,
            "seeds": args.seeds,
            "population": 3000,
            "reference_rows": ref.rows,
        },  # fmt: skip
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_before": load_before,
        },  # fmt: skip
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "no_drift": [_no_drift(k, args.seeds, config, ref) for k in (10, 30, 100)],
        "power": [
            _power(0, 30, args.seeds // 5, config, ref),
            _power(5, 100, args.seeds // 5, config, ref),
        ],  # fmt: skip
    }
    results["machine"]["load_average_after"] = os.getloadavg()
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
