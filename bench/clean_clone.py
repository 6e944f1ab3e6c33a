"""Time the README's two commands on a clean clone, as CI and a new user run them.

    python -m bench.clean_clone [--source .] [--work /tmp/whylake-clean] [--skip-test]

Clones the committed HEAD, then times `make setup`, `make up`, `make test` and `make demo`
there, and records what was downloaded (the venv and the service cache) and how many tests
ran -> bench/results/clean_clone.json. Caches outside the clone (pip's, Maven's ~/.m2, Go's)
are whatever this machine has: the file says which were warm.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "clean_clone.json"


def _size_mb(path: Path) -> float | None:
    if not path.exists():
        return None
    done = subprocess.run(["du", "-sm", str(path)], capture_output=True, text=True, check=False)
    return float(done.stdout.split()[0]) if done.returncode == 0 else None


def _step(target: str, clone: Path, log_dir: Path) -> dict[str, Any]:
    log = log_dir / f"make-{target}.log"
    t0 = time.monotonic()
    with log.open("w") as out:
        done = subprocess.run(["make", target], cwd=clone, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.monotonic() - t0
    return {
        "target": target,
        "exit_code": done.returncode,
        "seconds": round(seconds, 1),
        "log": str(log),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", default=str(ROOT))
    parser.add_argument("--work", default="/tmp/whylake-clean")
    parser.add_argument("--skip-test", action="store_true")
    args = parser.parse_args(argv)
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    clone = work / "whylake"
    subprocess.run(["git", "clone", "-q", args.source, str(clone)], check=True)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True, check=True
    ).stdout.strip()
    warm = {
        "pip_cache": (Path.home() / ".cache/pip").exists(),
        "maven_repository": (Path.home() / ".m2/repository").exists(),
        "go_module_cache": (Path.home() / "go/pkg/mod").exists(),
    }
    load_before = os.getloadavg()
    steps = [_step(t, clone, work) for t in ("setup", "up")]
    if not args.skip_test:
        steps.append(_step("test", clone, work))
    steps.append(_step("demo", clone, work))
    subprocess.run(["make", "down"], cwd=clone, capture_output=True, check=False)
    tests: dict[str, int] = {}
    test_log = work / "make-test.log"
    if test_log.exists():
        tail = test_log.read_text(errors="replace")[-5000:]
        for count, kind in re.findall(r"(\d+) (passed|failed|skipped|error)", tail):
            tests[kind] = int(count)
    result = {
        "benchmark": "clean_clone",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": head,
        "steps": {s["target"]: s for s in steps},
        "total_seconds": round(sum(s["seconds"] for s in steps), 1),
        "tests": tests,
        "venv_mb": _size_mb(clone / ".venv"),
        "service_cache_mb": _size_mb(clone / ".infra" / "cache"),
        "caches_outside_the_clone_were_warm": warm,
        "machine": {
            "cores": os.cpu_count(),
            "load_average_before_after": [load_before, os.getloadavg()],
        },
    }
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
