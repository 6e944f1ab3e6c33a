"""Run the streaming pipeline until stopped, printing progress; SIGINT/SIGTERM stop it cleanly."""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, replace
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
                console.print(_progress_line(counts, time.monotonic() - t0), highlight=False)
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
        summary = StreamSummary(config.run_id, dict(counts), state, elapsed)
        _record(catalog, started_row, summary)
    console.print(_progress_line(counts, elapsed) + f" — {state.lower()}", highlight=False)
    return summary


def _terminal(state: Any) -> bool:
    return any(s in str(state) for s in ("DONE", "FAILED", "CANCELLED", "STOPPED"))


def _progress_line(counts: Counter[str], elapsed: float) -> str:
    parts = [f"{label} {counts.get(stage, 0):,}" for stage, label in SHOWN]
    rate = counts.get("kafka_read", 0) / elapsed if elapsed > 0 else 0.0
    return f"[{elapsed:6.0f} s] " + ", ".join(parts) + f" ({rate:,.0f} records/s)"


def _record(catalog: Any, started: RunRecord, summary: StreamSummary) -> None:
    """The final manifest row (counts as seen by this process's workers)."""
    counts = summary.counts
    try:
        record_run(
            catalog,
            replace(
                started,
                status=summary.status,
                finished_at=datetime.now(UTC),
                elapsed_s=summary.elapsed_s,
                records_read=counts.get("kafka_read", 0),
                records_sampled=counts.get("records_sampled", 0),
                records_explained=counts.get("explained", 0),
                records_committed=counts.get("committed", 0),
                snapshot_ids=snapshots_of_run(catalog, started.run_id),
            ),
        )
    except Exception as exc:  # noqa: BLE001 — the data is committed; only the manifest row is lost
        log.warning("could not record stream run %s in whylake.runs: %s", started.run_id, exc)
