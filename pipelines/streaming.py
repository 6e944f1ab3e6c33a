"""The streaming explanation job: a Kafka topic of inference records -> Iceberg, then OpenSearch.

Same stages as the batch job (validate, sample, explain, check, append), per event-time window:

    Kafka --ReadFromKafkaTopic--> window (fixed, allowed lateness, one pane per firing)
      (one element per poll and window: a KafkaBatch; records past the lateness come late-flagged)
      --ParseKafkaRecords--> validate --> sample (same combiner, strata per window pane)
      --> explain --> check --> AppendToIceberg (per pane, tenant and day) --> OpenSearch
                                           \\-> CommitKafkaOffsets (after the Iceberg commits)

The reader emits nothing behind its watermark: a record that arrives behind it (within the
allowed lateness) is stamped at the watermark and joins the window open there, its event_ts
unchanged, so it holds the watermark of every step after it, the offset barrier's included. A
pane that fires late anyway (another runner) is DISCARDING: it holds only the late records, so
each (window, pane) is a stratum of its own and the inclusion probabilities stay exact for it;
summing Horvitz-Thompson estimates over strata stays unbiased. Exactly once in the tables: see
whylake.transforms.kafka.
"""

from __future__ import annotations

from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.transforms import trigger, window
from apache_beam.utils.timestamp import Duration

from whylake.pipelines.configs import StreamJobConfig
from whylake.pipelines.explain_and_store import ExplainAndStore
from whylake.transforms.kafka import (
    CommitKafkaOffsets,
    CommitOffsetsConfig,
    ParseConfig,
    ParseKafkaRecords,
    ReadFromKafkaTopic,
)


def build(p: beam.Pipeline, config: StreamJobConfig) -> dict[str, beam.PCollection]:
    """Wire read -> window -> parse -> validate -> sample -> explain -> check -> append."""
    kafka = config.kafka()
    records = p | "ReadKafka" >> ReadFromKafkaTopic(kafka)
    windowed = records | "Window" >> beam.WindowInto(
        window.FixedWindows(config.window_s),
        trigger=trigger.AfterWatermark(late=trigger.AfterCount(1)),
        accumulation_mode=trigger.AccumulationMode.DISCARDING,
        # The reader dead-letters records past allowed_lateness_s itself; the margin keeps the
        # runner from dropping one the reader let through (see StreamJobConfig.late_margin_s).
        allowed_lateness=Duration.of(config.allowed_lateness_s + config.late_margin_s),
    )
    parsed = windowed | "Parse" >> ParseKafkaRecords(
        ParseConfig(config.run_id, kafka, batch_rows=config.batch_rows, pii=config.store.pii())
    )
    stored = {"records": parsed.records, "dead_letters": parsed.dead_letters} | (
        "ExplainAndStore" >> ExplainAndStore(config.store)
    )
    offsets = parsed.offsets | "CommitOffsets" >> CommitKafkaOffsets(
        CommitOffsetsConfig(
            kafka, allowed_lateness_s=config.allowed_lateness_s + config.late_margin_s
        ),
        # Offsets move only past windows whose Iceberg commits (explanations, dead letters,
        # metrics) and replica writes are done: a window re-read after a crash is re-indexed
        # and re-measured too (the replica's exactly-once; metric rows are keyed).
        after=tuple(
            stored[k]
            for k in ("commits", "dead_letter_commits", "metric_commits", "replicated")
            if k in stored
        ),
    )
    return {**stored, "offsets": offsets}


def pipeline_options(config: StreamJobConfig) -> PipelineOptions:
    """Streaming options for the chosen runner; Prism from a local binary when given."""
    args = [f"--runner={config.runner}", "--streaming", *config.runner_args]
    if config.runner == "PrismRunner":
        args.append(f"--prism_location={config.prism_location}")
        args.append("--environment_type=LOOPBACK")
    return PipelineOptions(args, save_main_session=False)


def run(config: StreamJobConfig) -> Any:
    """Start the pipeline; returns Beam's PipelineResult (the caller waits or cancels)."""
    p = beam.Pipeline(options=pipeline_options(config))
    build(p, config)
    return p.run()
