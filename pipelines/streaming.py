"""The streaming explanation job: a Kafka topic of inference records -> Iceberg, then OpenSearch.

Same stages as the batch job (validate, sample, explain, check, append), per event-time window:

    Kafka --ReadFromKafkaTopic--> window (fixed, allowed lateness, one pane per firing)
      --ParseKafkaRecords--> validate --> sample (same combiner, strata per window pane)
      --> explain --> check --> AppendToIceberg (per pane, tenant and day) --> OpenSearch
                                           \\-> CommitKafkaOffsets (after the Iceberg commits)

Panes are DISCARDING: a late firing holds only the late records, so each (window, pane) is a
stratum of its own and the inclusion probabilities stay exact for it; summing Horvitz-Thompson
estimates over strata stays unbiased. Exactly once in the tables: see transforms/read_kafka.py.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.transforms import trigger, window
from apache_beam.utils.timestamp import Duration

from lake.catalog import CatalogConfig
from pipelines.explain_and_store import ExplainAndStore, StoreConfig
from transforms.explainers.records import ExplainConfig
from transforms.read_kafka import (
    CommitKafkaOffsets,
    CommitOffsetsConfig,
    KafkaReadConfig,
    ParseConfig,
    ParseKafkaRecords,
    ReadFromKafkaTopic,
)
from transforms.sampling.policy import SamplingPolicies
from transforms.write_opensearch import OpenSearchConfig

# Built by `infra/services.sh fetch prism` from the Go module proxy (the release zip that Beam
# would download from GitHub is not reachable here).
DEFAULT_PRISM = str(Path(__file__).resolve().parents[1] / ".infra/cache/prism/v2.77.0/bin/prism")


@dataclass(frozen=True)
class StreamJobConfig:
    """Everything one streaming job needs, typed once from the command line or a caller."""

    topic: str
    registry_root: str
    policies: SamplingPolicies
    bootstrap_servers: str = "127.0.0.1:9092"
    group_id: str = "whylake-stream"
    catalog: CatalogConfig = field(default_factory=CatalogConfig)
    explain: ExplainConfig = field(default_factory=ExplainConfig)
    opensearch: OpenSearchConfig | None = None
    device: str | None = None
    window_s: float = 5.0
    allowed_lateness_s: float = 30.0
    max_out_of_orderness_s: float = 1.0
    batch_rows: int = 5000
    runner: str = "PrismRunner"
    prism_location: str | None = None  # a local Prism binary (Beam would download one)
    runner_args: tuple[str, ...] = ()
    # Extra librdkafka settings for production brokers, e.g. security.protocol=SASL_SSL.
    kafka_config: tuple[tuple[str, str], ...] = ()
    run_id: str = field(default_factory=lambda: f"stream-{uuid.uuid4().hex[:12]}")

    def __post_init__(self) -> None:
        if self.window_s <= 0:
            raise ValueError(f"window_s must be positive, got {self.window_s}")
        if self.allowed_lateness_s < 0:
            raise ValueError(f"allowed_lateness_s must not be negative: {self.allowed_lateness_s}")
        self.kafka()  # checks topic, servers and poll settings

    def kafka(self) -> KafkaReadConfig:
        return KafkaReadConfig(
            topic=self.topic,
            bootstrap_servers=self.bootstrap_servers,
            group_id=self.group_id,
            max_out_of_orderness_s=self.max_out_of_orderness_s,
            consumer_config=self.kafka_config,
        )

    def describe(self) -> dict[str, Any]:
        """The settings a run reports."""
        return {
            "topic": self.topic,
            "bootstrap_servers": self.bootstrap_servers,
            "group_id": self.group_id,
            "registry_root": self.registry_root,
            "policy_version": self.policies.version,
            "explain": asdict(self.explain),
            "window_s": self.window_s,
            "allowed_lateness_s": self.allowed_lateness_s,
            "runner": self.runner,
            "opensearch": self.opensearch.url if self.opensearch else None,
        }


def build(p: beam.Pipeline, config: StreamJobConfig) -> dict[str, beam.PCollection]:
    """Wire read -> window -> parse -> validate -> sample -> explain -> check -> append."""
    kafka = config.kafka()
    records = p | "ReadKafka" >> ReadFromKafkaTopic(kafka)
    windowed = records | "Window" >> beam.WindowInto(
        window.FixedWindows(config.window_s),
        trigger=trigger.AfterWatermark(late=trigger.AfterCount(1)),
        accumulation_mode=trigger.AccumulationMode.DISCARDING,
        allowed_lateness=Duration.of(config.allowed_lateness_s),
    )
    parsed = windowed | "Parse" >> ParseKafkaRecords(
        ParseConfig(config.run_id, kafka, batch_rows=config.batch_rows)
    )
    stored = {"records": parsed.records, "dead_letters": parsed.dead_letters} | (
        "ExplainAndStore" >> ExplainAndStore(StoreConfig.of(config))
    )
    offsets = parsed.offsets | "CommitOffsets" >> CommitKafkaOffsets(
        CommitOffsetsConfig(kafka, allowed_lateness_s=config.allowed_lateness_s),
        after=(stored["commits"], stored["dead_letter_commits"]),
    )
    return {**stored, "offsets": offsets}


def pipeline_options(config: StreamJobConfig) -> PipelineOptions:
    """Streaming options for the chosen runner; Prism from a local binary when given."""
    args = [f"--runner={config.runner}", "--streaming", *config.runner_args]
    if config.runner == "PrismRunner":
        args.append(f"--prism_location={config.prism_location or DEFAULT_PRISM}")
        args.append("--environment_type=LOOPBACK")
    return PipelineOptions(args, save_main_session=False)


def run(config: StreamJobConfig) -> Any:
    """Start the pipeline; returns Beam's PipelineResult (the caller waits or cancels)."""
    p = beam.Pipeline(options=pipeline_options(config))
    build(p, config)
    return p.run()
