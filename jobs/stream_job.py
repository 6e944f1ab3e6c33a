"""Run the streaming pipeline until stopped, printing progress; SIGINT/SIGTERM stop it cleanly."""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from types import FrameType
from typing import Any

from rich.console import Console

from whylake.lake.catalog import ensure_tables, open_catalog
from whylake.lake.runs import (
    FAILED,
    STOPPED,
    RunRecord,
    record_run,
    snapshots_of_run,
    start_run,
)
from whylake.pipelines.configs import StreamJobConfig
from whylake.pipelines.streaming import run
from whylake.transforms.progress import listen

log = logging.getLogger(__name__)
SHOWN = (
    ("kafka_read", "read"),
    ("records_sampled", "sampled"),
    ("committed", "committed"),
    ("dead_letters", "dead letters"),
    ("offsets_committed", "offset commits"),
)


@dataclass(frozen=True)
class StreamSummary:
    """What a stopped job reports: counts seen in this process, how it ended, how long it ran."""

    run_id: str
    counts: dict[str, int]
    state: str  # the runner's final state, e.g. CANCELLED or FAILED
    elapsed_s: float
    # The pipeline's `whylake` Beam counters, last read before it stopped (any runner).
    counters: dict[str, int] = field(default_factory=dict)

    @property
    def status(self) -> str:
        """`failed` when the pipeline failed, else `stopped` (streaming jobs never succeed)."""
        return FAILED if "FAILED" in self.state else STOPPED


def run_stream(
    config: StreamJobConfig,
    console: Console | None = None,
    *,
    max_runtime_s: float | None = None,
    progress_every_s: float = 5.0,
) -> StreamSummary:
    """Run until SIGINT/SIGTERM (or max_runtime_s), then cancel the pipeline and record the run.

    Stopping is always safe, however abrupt: offsets are committed only after the Iceberg
    commits they cover, and appends are idempotent, so a restart re-reads and adds nothing twice.
    """
    console = console or Console(stderr=True)
    catalog = open_catalog(config.store.catalog)
    ensure_tables(catalog)
    started_row = start_run(
        catalog,
        run_id=config.run_id,
        job="stream",
        runner=config.runner,
        inputs=[f"kafka://{config.bootstrap_servers}/{config.topic}"],
        tenants=sorted(config.store.policies.tenants),
        config=json.dumps(config.describe(), sort_keys=True),
        started_at=datetime.now(UTC),
    )
    counts: Counter[str] = Counter()
    lock = threading.Lock()

    def on_count(stage: str, n: int) -> None:
        with lock:
            counts[stage] += n

    stop = threading.Event()
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        console.print(f"{signal.Signals(signum).name}: stopping", highlight=False)
        stop.set()

    for s in previous:
        signal.signal(s, on_signal)
    unlisten = listen(on_count)
    t0 = time.monotonic()
    state = "UNKNOWN"
    counters: dict[str, int] = {}
    try:
        result = run(config)
        console.print(
            f"streaming {config.topic} on {config.runner} (run {config.run_id}, "
            f"{config.window_s:g} s windows); Ctrl-C stops",
            highlight=False,
        )
        next_report = t0 + progress_every_s
        while not stop.wait(0.5):
            # Poll the state: wait_until_finish(duration) opens a new message stream each call,
            # which the portable runner's gRPC channel does not survive.
            state = str(result.state)
            if _terminal(state):
                break
            if max_runtime_s is not None and time.monotonic() - t0 >= max_runtime_s:
                break
            if time.monotonic() >= next_report:
                next_report += progress_every_s
                counters = _counters(result) or counters
                console.print(_progress_line(counts, time.monotonic() - t0), highlight=False)
        counters = _counters(result) or counters
        if not _terminal(state):
            result.cancel()
            state = "CANCELLED"
    except BaseException:
        state = "FAILED"
        raise
    finally:
        unlisten()
        for s, handler in previous.items():
            signal.signal(s, handler)
        elapsed = time.monotonic() - t0
        summary = StreamSummary(config.run_id, dict(counts), state, elapsed, counters)
        _record(catalog, started_row, summary)
    console.print(_progress_line(counts, elapsed) + f" — {state.lower()}", highlight=False)
    return summary


def _terminal(state: Any) -> bool:
    return any(s in str(state) for s in ("DONE", "FAILED", "CANCELLED", "STOPPED"))


def _progress_line(counts: Counter[str], elapsed: float) -> str:
    parts = [f"{label} {counts.get(stage, 0):,}" for stage, label in SHOWN]
    rate = counts.get("kafka_read", 0) / elapsed if elapsed > 0 else 0.0
    return f"[{elapsed:6.0f} s] " + ", ".join(parts) + f" ({rate:,.0f} records/s)"


def _counters(result: Any) -> dict[str, int]:
    """The pipeline's `whylake` counters so far ({} when the runner cannot say yet)."""
    try:
        found = result.metrics().query()["counters"]
    except Exception as exc:  # noqa: BLE001 — counts are best effort while the job runs
        log.debug("could not read the pipeline's counters: %s", exc)
        return {}
    counters: dict[str, int] = {}
    for counter in found:
        if counter.key.metric.namespace == "whylake":
            name = counter.key.metric.name
            value = counter.committed if counter.committed is not None else counter.attempted
            counters[name] = counters.get(name, 0) + int(value or 0)
    return counters


def manifest_counts(counters: dict[str, int], progress: dict[str, int]) -> dict[str, Any]:
    """The run manifest's counts from the Beam counters (progress hooks when there are none).

    read = unreadable + late + invalid + valid (+ replayed windows skipped); every refused
    record is a dead letter: unreadable (stage read), late (stage late), invalid (validate).
    """
    c = counters
    late = c.get("records_late", progress.get("records_late", 0))
    replayed = c.get("records_replayed_skipped", 0)
    warnings = []
    if late:
        warnings.append(
            f"{late} records later than the allowed lateness were dead-lettered (stage late)"
        )
    if replayed:
        warnings.append(f"{replayed} re-read records of windows finished before were skipped")
    failed = c.get("records_failed_explain", 0) + c.get("records_failed_check", 0)
    if failed:
        warnings.append(f"{failed} sampled records could not be explained (dead letters)")
    return {
        "records_read": c.get("records_read", progress.get("kafka_read", 0)),
        "records_invalid": c.get("records_unreadable", 0) + c.get("records_invalid", 0) + late,
        "records_sampled": c.get("records_sampled", progress.get("records_sampled", 0)),
        "records_explained": c.get("records_explained", progress.get("explained", 0)),
        "records_failed": failed,
        "records_committed": c.get("whylake.explanations.committed", 0),
        "records_already_present": c.get("whylake.explanations.already_present", 0),
        "replica_lag": c.get("replica_lag")
        if "replica_indexed" in c or "replica_lag" in c
        else None,
        "warnings": warnings,
    }


def _record(catalog: Any, started: RunRecord, summary: StreamSummary) -> None:
    """The final manifest row, with the pipeline's counters as last read before it stopped."""
    counts = summary.counts
    try:
        record_run(
            catalog,
            replace(
                started,
                status=summary.status,
                finished_at=datetime.now(UTC),
                elapsed_s=summary.elapsed_s,
                **manifest_counts(summary.counters, counts),
                snapshot_ids=snapshots_of_run(catalog, started.run_id),
            ),
        )
    except Exception as exc:  # noqa: BLE001 — the data is committed; only the manifest row is lost
        log.warning("could not record stream run %s in whylake.runs: %s", started.run_id, exc)
