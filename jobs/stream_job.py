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
                next_report = time.monotonic() + progress_every_s  # no catch-up bursts
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
    final = manifest_counts(summary.counters, summary.counts)
    console.print(
        "run manifest: " + ", ".join(f"{k} {v}" for k, v in final.items() if k != "warnings"),
        highlight=False,
    )
    log.debug("pipeline counters: %s", summary.counters)
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
            # Prism reports some counters as attempted only (committed 0 or None).
            value = max(int(counter.committed or 0), int(counter.attempted or 0))
            counters[name] = counters.get(name, 0) + value
    return counters


def manifest_counts(counters: dict[str, int], progress: dict[str, int]) -> dict[str, Any]:
    """The run manifest's counts: per figure, the larger of the Beam counter and the progress
    hooks' count. Prism reports the counters of a running streaming job only in part (stages
    past a GroupByKey are often missing), while its LOOPBACK workers run in this process, so
    the hooks see everything; on a distributed runner the counters are complete instead.

    read = unreadable + late + invalid + valid (+ re-read records of finished windows);
    every refused record is a dead letter: stage read, late or validate (invalid), explain
    or check (failed).
    """

    def n(*names: str, progress_name: str | None = None) -> int:
        """Per name, the Beam counter or the hooks' count (of `progress_name` if given),
        whichever is larger; summed over the names."""
        if progress_name is not None:
            return max(sum(counters.get(k, 0) for k in names), progress.get(progress_name, 0))
        return sum(max(counters.get(k, 0), progress.get(k, 0)) for k in names)

    late = n("dead_letters.late")
    replayed = n("records_replayed_skipped")
    failed = n("dead_letters.explain", "dead_letters.check")
    warnings = []
    if late:
        warnings.append(
            f"{late} records later than the allowed lateness were dead-lettered (stage late)"
        )
    if replayed:
        warnings.append(f"{replayed} re-read records of windows finished before were skipped")
    behind = n("kafka_records_behind_watermark", progress_name="records_behind_watermark")
    if behind:
        warnings.append(
            f"{behind} records came in behind the watermark (within the allowed lateness) and "
            "were processed in the window open then; their event_ts is unchanged"
        )
    if failed:
        warnings.append(f"{failed} sampled records could not be explained (dead letters)")
    # Counts balance, as the batch job checks: every record read is refused (a dead letter
    # of stage read, late or validate), skipped as a re-read of a finished window, or valid.
    read = n("records_read", progress_name="kafka_read")
    accounted = (
        n("dead_letters.read", "dead_letters.late", "dead_letters.validate")
        + n("records_valid", progress_name="validated")
        + replayed
    )
    if read > accounted:
        warnings.append(
            f"{read - accounted} records read are not accounted for (neither valid nor a "
            "dead letter) as last counted; if the job was stopped mid-window they were in "
            "flight, otherwise the runner dropped them: replay the offsets"
        )
    lag = n("replica_lag")
    return {
        "records_read": read,
        "records_invalid": n("dead_letters.read", "dead_letters.late", "dead_letters.validate"),
        "records_sampled": n("records_sampled"),
        "records_explained": n("records_explained", progress_name="explained"),
        "records_failed": failed,
        "records_committed": n(
            "whylake.explanations.committed", progress_name="explanations.committed"
        ),
        "records_already_present": n(
            "whylake.explanations.already_present", progress_name="explanations.already_present"
        ),
        "replica_lag": lag if lag or "replica_indexed" in counters else None,
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
