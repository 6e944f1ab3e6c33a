"""The stages both jobs share: validate -> sample -> explain -> check -> Iceberg -> replica."""

from __future__ import annotations

from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.pvalue import PCollection

from whylake.lake.catalog import DEAD_LETTERS, EXPLANATIONS, METRICS
from whylake.pipelines.configs import StoreConfig
from whylake.schemas.dead_letter import DEAD_LETTER_ARROW_SCHEMA
from whylake.schemas.explanation import EXPLANATION_ARROW_SCHEMA
from whylake.schemas.metrics import METRICS_ARROW_SCHEMA
from whylake.transforms.check import CheckConfig, CheckExplanations
from whylake.transforms.explain import ExplainSampledRecords, ExplainStageConfig
from whylake.transforms.measure import MeasureConfig, MeasureExplanations
from whylake.transforms.progress import report
from whylake.transforms.sample import SampleAndCountByPolicy, SampleConfig
from whylake.transforms.validate import ValidateConfig, ValidateRecords
from whylake.transforms.write_iceberg import COMMITTED, AppendConfig, AppendToIceberg
from whylake.transforms.write_opensearch import WriteToOpenSearch


class ExplainAndStore(beam.PTransform[dict[str, PCollection[Any]], dict[str, PCollection[Any]]]):
    """{"records": Arrow batches, "dead_letters": upstream dead letters} -> commits.

    Returns {"commits", "dead_letter_commits", "metric_commits", "counts"} (+ "replicated" with
    a replica): the explanation, dead-letter and metrics CommitResults, the sampler's
    per-stratum counts and the replica's IndexOutcomes. Works per window, so the streaming job
    gets one sample, one set of commits and one metrics row per slice per window firing.
    """

    def __init__(self, config: StoreConfig) -> None:
        super().__init__()
        self.config = config

    def expand(self, inputs: dict[str, PCollection[Any]]) -> dict[str, PCollection[Any]]:
        config = self.config
        pii = config.pii()
        validated = inputs["records"] | "Validate" >> ValidateRecords(
            ValidateConfig(config.registry_root, config.run_id, pii=pii, limits=config.limits)
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
                hash_key=config.hash_key,
                explain=config.explain,
                device=config.device,
                explanation_policies=config.explanation_policies,
                pii_fields=config.pii_fields,
            )
        )
        checked = explained.explained | "Check" >> CheckExplanations(
            CheckConfig(
                config.run_id,
                config.explain.max_relative_completeness_error,
                pii=pii,
                max_ig_convergence=config.explain.ig_tolerance,
            )
        )
        appended = checked.checked | "AppendExplanations" >> AppendToIceberg(
            AppendConfig(
                table=EXPLANATIONS,
                key="explanation_id",
                schema=EXPLANATION_ARROW_SCHEMA,
                run_id=config.run_id,
                day_field="event_ts",
                time_field="event_ts",  # explanation ids hash it (schemas/ids.py)
                catalog=config.catalog,
                emit_rows=config.opensearch is not None,
                emit_committed=True,
                failpoints=config.failpoints,
            )
        )
        replicated = None
        if config.opensearch is not None:
            # Fed by rows whose Iceberg commit is durable: the replica never runs ahead.
            replicated = appended.rows | "ReplicateToOpenSearch" >> WriteToOpenSearch(
                config.opensearch, config.failpoints
            )
        dead = (
            (
                inputs["dead_letters"],
                validated.dead_letters,
                explained.dead_letters,
                checked.dead_letters,
            )
            | "MergeDeadLetters" >> beam.Flatten()
            | "CountDead" >> beam.Map(count_dead_letter)
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
                    failpoints=config.failpoints,
                ),
                to_dict=lambda d: d._asdict(),
            )
        ).commits
        measured = {
            "valid": validated.valid,
            "strata": sampled.counts,
            "sampled": sampled.samples,
            "committed": appended[COMMITTED],
            "failed": (explained.dead_letters, checked.dead_letters)
            | "MergeFailures" >> beam.Flatten(),
        } | "Measure" >> MeasureExplanations(
            MeasureConfig(config.run_id, score_tolerance=config.score_tolerance)
        )
        metric_commits = (
            measured
            | "AppendMetrics"
            >> AppendToIceberg(
                AppendConfig(
                    table=METRICS,
                    key="metric_id",
                    schema=METRICS_ARROW_SCHEMA,
                    run_id=config.run_id,
                    catalog=config.catalog,
                )
            )
        ).commits
        _ = appended.commits | "ReportCommitted" >> beam.Map(report_commit)
        outputs = {
            "commits": appended.commits,
            "dead_letter_commits": dead_commits,
            "metric_commits": metric_commits,
            "counts": sampled.counts,
        }
        if replicated is not None:
            outputs["replicated"] = replicated  # IndexOutcomes, one per bulk write
        return outputs

    def display_data(self) -> dict[str, Any]:
        return {
            "run_id": self.config.run_id,
            "policy_version": self.config.policies.version,
            "hash_key_fingerprint": self.config.hash_key.fingerprint,
            "replica": self.config.opensearch.url if self.config.opensearch else "",
        }


def count(element: Any, stage: str) -> Any:
    """Count an element into the `whylake` Beam counter `stage` and the progress listeners."""
    Metrics.counter("whylake", stage).inc()
    report(stage, 1)
    return element


def count_dead_letter(letter: Any) -> Any:
    """Count a dead letter, in all and per stage (`dead_letters.<stage>`: read, late, ...)."""
    count(letter, "dead_letters")
    return count(letter, f"dead_letters.{letter.stage}")


def report_commit(result: Any) -> Any:
    """Tell the progress listeners what one explanation commit added and found present."""
    report("committed", result.rows_committed + result.rows_already_present)
    report("explanations.committed", result.rows_committed)
    report("explanations.already_present", result.rows_already_present)
    return result
