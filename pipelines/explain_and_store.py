"""The stages both jobs share: validate -> sample -> explain -> check -> Iceberg -> replica."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics

from lake.catalog import DEAD_LETTERS, EXPLANATIONS, CatalogConfig
from schemas.dead_letter import DEAD_LETTER_ARROW_SCHEMA
from schemas.explanation import EXPLANATION_ARROW_SCHEMA
from transforms.check import CheckConfig, CheckExplanations
from transforms.explain import ExplainSampledRecords, ExplainStageConfig
from transforms.explainers.records import ExplainConfig
from transforms.progress import report
from transforms.sample import SampleAndCountByPolicy, SampleConfig
from transforms.sampling.policy import SamplingPolicies
from transforms.validate import ValidateConfig, ValidateRecords
from transforms.write_iceberg import AppendConfig, AppendToIceberg
from transforms.write_opensearch import OpenSearchConfig, WriteToOpenSearch


@dataclass(frozen=True)
class StoreConfig:
    """What the shared stages need from either job's config."""

    run_id: str
    registry_root: str
    policies: SamplingPolicies
    catalog: CatalogConfig = field(default_factory=CatalogConfig)
    explain: ExplainConfig = field(default_factory=ExplainConfig)
    device: str | None = None
    opensearch: OpenSearchConfig | None = None

    @classmethod
    def of(cls, job: Any) -> StoreConfig:
        """The shared settings of a batch or streaming job config (same field names)."""
        return cls(**{name: getattr(job, name) for name in cls.__dataclass_fields__})


class ExplainAndStore(beam.PTransform):  # type: ignore[type-arg]
    """{"records": Arrow batches, "dead_letters": upstream dead letters} -> commits.

    Returns {"commits", "dead_letter_commits", "counts"}: the explanation and dead-letter
    CommitResults and the sampler's per-stratum counts. Works per window, so the streaming job
    gets one sample and one set of commits per window firing.
    """

    def __init__(self, config: StoreConfig) -> None:
        super().__init__()
        self.config = config

    def expand(self, inputs: dict[str, beam.PCollection]) -> dict[str, beam.PCollection]:
        config = self.config
        validated = inputs["records"] | "Validate" >> ValidateRecords(
            ValidateConfig(config.registry_root, config.run_id)
        )
        sampled = validated.valid | "Sample" >> SampleAndCountByPolicy(
            SampleConfig(config.policies)
        )
        counted = sampled.samples | "CountSampled" >> beam.Map(count, "records_sampled")
        explained = counted | "Explain" >> ExplainSampledRecords(
            ExplainStageConfig(
                registry_root=config.registry_root,
                run_id=config.run_id,
                policies=config.policies,
                explain=config.explain,
                device=config.device,
            )
        )
        checked = explained["explained"] | "Check" >> CheckExplanations(
            CheckConfig(config.run_id, config.explain.max_relative_completeness_error)
        )
        appended = checked.checked | "AppendExplanations" >> AppendToIceberg(
            AppendConfig(
                table=EXPLANATIONS,
                key="explanation_id",
                schema=EXPLANATION_ARROW_SCHEMA,
                run_id=config.run_id,
                day_field="event_ts",
                catalog=config.catalog,
                emit_rows=config.opensearch is not None,
            )
        )
        if config.opensearch is not None:
            # Fed by rows whose Iceberg commit is durable: the replica never runs ahead.
            _ = appended.rows | "ReplicateToOpenSearch" >> WriteToOpenSearch(config.opensearch)
        dead = (
            (
                inputs["dead_letters"],
                validated.dead_letters,
                explained["dead_letters"],
                checked.dead_letters,
            )
            | "MergeDeadLetters" >> beam.Flatten()
            | "CountDead" >> beam.Map(count, "dead_letters")
        )
        dead_commits = (
            dead
            | "AppendDeadLetters"
            >> AppendToIceberg(
                AppendConfig(
                    table=DEAD_LETTERS,
                    key="dead_letter_id",
                    schema=DEAD_LETTER_ARROW_SCHEMA,
                    run_id=config.run_id,
                    catalog=config.catalog,
                ),
                to_dict=lambda d: d._asdict(),
            )
        ).commits
        _ = appended.commits | "ReportCommitted" >> beam.Map(
            lambda c: report("committed", c.rows_committed + c.rows_already_present)
        )
        return {
            "commits": appended.commits,
            "dead_letter_commits": dead_commits,
            "counts": sampled.counts,
        }


def count(element: Any, stage: str) -> Any:
    """Count an element into the `whylake` Beam counter `stage` and the progress listeners."""
    Metrics.counter("whylake", stage).inc()
    report(stage, 1)
    return element
