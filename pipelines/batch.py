"""The batch explanation job: files of inference records -> explanation records in Iceberg."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions

from whylake.pipelines.configs import BatchJobConfig
from whylake.pipelines.explain_and_store import ExplainAndStore
from whylake.transforms.progress import report
from whylake.transforms.read import ReadConfig, ReadInferenceRecords


def build(p: beam.Pipeline, config: BatchJobConfig) -> dict[str, beam.PCollection]:
    """Wire read -> validate -> sample -> explain -> check -> append, with dead letters."""
    read = p | "Read" >> ReadInferenceRecords(
        ReadConfig(
            config.inputs,
            run_id=config.run_id,
            batch_rows=config.batch_rows,
            storage=config.storage,
            pii=config.store.pii(),
        )
    )
    scoped = read.records | "KeepScope" >> beam.ParDo(
        _KeepScopeFn(config.day, config.tenant)
    ).with_output_types(pa.RecordBatch)
    return {"records": scoped, "dead_letters": read.dead_letters} | "ExplainAndStore" >> (
        ExplainAndStore(config.store)
    )


class _KeepScopeFn(beam.DoFn):  # type: ignore[misc]
    """Drop records outside --date / --tenant; they are counted, never silently lost."""

    def __init__(self, day: date | None, tenant: str | None) -> None:
        self.day, self.tenant = day, tenant
        self.out_of_scope = Metrics.counter("whylake", "records_out_of_scope")

    def process(self, batch: pa.RecordBatch) -> Any:
        report("read", batch.num_rows)
        keep = None
        if self.tenant is not None:
            keep = pc.equal(batch["tenant_id"], self.tenant)
        if self.day is not None:
            start = datetime(self.day.year, self.day.month, self.day.day, tzinfo=UTC)
            days = pc.floor_temporal(batch["event_ts"], unit="day")
            same = pc.equal(days, pa.scalar(start, batch.schema.field("event_ts").type))
            keep = same if keep is None else pc.and_(keep, same)
        if keep is None:
            yield batch
            return
        kept = batch.filter(keep)
        self.out_of_scope.inc(batch.num_rows - kept.num_rows)
        if kept.num_rows:
            yield kept


def pipeline_options(config: BatchJobConfig) -> PipelineOptions:
    """Runner options: the local FnApiRunner by default, which never tries a network download.

    Beam 2.77's DirectRunner first tries to download Prism from GitHub; naming the runner
    explicitly avoids that attempt (shared/NOTES.md). See :func:`local_pipeline_options`.
    """
    return local_pipeline_options(config.runner, config.runner_args)


def local_pipeline_options(runner: str, runner_args: tuple[str, ...]) -> PipelineOptions:
    """The run's options; on the local FnApiRunner, workers whose data arrives whole.

    The local runner gets one worker unless --direct_num_workers says otherwise (then pass
    --direct_running_mode=multi_threading too). Parallel workers talk to the runner over
    Beam's gRPC data plane, whose output streams Beam 2.77 also flushes from a timer thread
    every second (``DATA_BUFFER_TIME_LIMIT_MS``, for streaming latency) - in the middle of
    an element whenever encoding it spans the tick. The runner decodes each message on its
    own at a GroupByKey, so such an element is lost or read from its middle: two workers
    lost 6-16 dead letters at a GroupByKey in 3 of 6 fuzz-suite runs (and in 4 of 13 runs of
    read -> validate -> GroupByKey alone), and on 60,000 records (30,465 explained) the batch
    job read a bogus window count at AppendToIceberg's GroupByPartition and allocated 6-20 GB
    within seconds. With the timer off, streams flush only between elements (at 10 MB and at
    the end of a bundle), all a batch run needs: that run then commits every row at a 2.9 GB
    peak on two workers (tests/integration/test_local_runner.py shows the split). One worker
    stays the default: on 2 shared cores two were not reliably faster (explain-stage input:
    61.8 s on two, 52.2 s on one, at load 3.3 and 2.5). The run manifest still fails a run
    whose commits do not add up (jobs/batch_job.py), whatever the runner.
    """
    if runner == "FnApiRunner":
        _without_data_plane_flush_timer()
    return PipelineOptions(local_runner_args(runner, runner_args), save_main_session=False)


def _without_data_plane_flush_timer() -> None:
    """Turn off the local runner's timed flush of data-plane streams (see above).

    Read by Beam when a run starts its workers (EmbeddedGrpcWorkerHandler and the runner's
    BeamFnDataServicer); 0 makes both sides size-based. A Beam without the constant fails
    here, loudly, rather than running with a timer that splits elements.
    """
    from apache_beam.runners.portability.fn_api_runner import worker_handlers

    if not hasattr(worker_handlers, "DATA_BUFFER_TIME_LIMIT_MS"):
        raise RuntimeError(
            "apache_beam.runners.portability.fn_api_runner.worker_handlers has no "
            "DATA_BUFFER_TIME_LIMIT_MS: check that this Beam's local runner cannot split an "
            "element between data-plane messages before running on it"
        )
    worker_handlers.DATA_BUFFER_TIME_LIMIT_MS = 0


def local_runner_args(runner: str, runner_args: tuple[str, ...]) -> list[str]:
    """The Beam arguments of a run: the local FnApiRunner gets one worker unless told."""
    args = [f"--runner={runner}", *runner_args]
    if runner == "FnApiRunner" and not any(
        a.startswith("--direct_num_workers") for a in runner_args
    ):
        args.append("--direct_num_workers=1")
    return args


@dataclass(frozen=True)
class RunOutcome:
    """What a finished run reports: the Beam counters and how long it took."""

    run_id: str
    counters: dict[str, int]
    elapsed_s: float
    started_at: datetime
    finished_at: datetime


def run(config: BatchJobConfig) -> RunOutcome:
    """Run the pipeline to completion and collect its counters."""
    started, t0 = datetime.now(UTC), time.perf_counter()
    p = beam.Pipeline(options=pipeline_options(config))
    build(p, config)
    result = p.run()
    result.wait_until_finish()
    counters: dict[str, int] = {}
    for counter in result.metrics().query()["counters"]:
        if counter.key.metric.namespace == "whylake":
            name = counter.key.metric.name
            counters[name] = counters.get(name, 0) + int(counter.committed or counter.attempted)
    return RunOutcome(config.run_id, counters, time.perf_counter() - t0, started, datetime.now(UTC))
