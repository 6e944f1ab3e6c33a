"""Explain sampled records with Beam's RunInference and a whylake ModelHandler."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler, RunInference
from apache_beam.pvalue import PCollection

from whylake.schemas.dead_letter import DeadLetter
from whylake.schemas.errors import ConfigError
from whylake.schemas.explanation_policy import ExplanationPolicies
from whylake.schemas.pii import DEFAULT_PII_FIELDS, PiiPolicy
from whylake.schemas.secrets import Secret
from whylake.transforms.dead_letters import DEAD_LETTERS, row_dead_letter
from whylake.transforms.explainers.config import ExplainConfig
from whylake.transforms.model_bank import ModelBank
from whylake.transforms.progress import report
from whylake.transforms.sampling.policy import SamplingPolicies

Row = dict[str, Any]


@dataclass(frozen=True)
class ExplainStageConfig:
    """Where models come from, how rows are batched and which device explains them."""

    registry_root: str
    run_id: str
    policies: SamplingPolicies
    hash_key: Secret  # keys the user-id hash in each record (and in each dead letter)
    explain: ExplainConfig = field(default_factory=ExplainConfig)
    device: str | None = None  # None: cuda when the worker has one, else cpu
    min_batch_size: int = 256
    max_batch_size: int = 4096
    # Parallelism comes from Beam's workers, each explaining its own batches. Intra-op threads
    # on top of them oversubscribe the cores: on 2 shared cores, 2 torch threads made the
    # explain stage 16x slower than 1 (OpenMP spin-waits). None leaves torch's default.
    torch_threads: int | None = 1
    # What runs per row (trust tier, risk), review thresholds, templates; None: the shipped one.
    explanation_policies: ExplanationPolicies | None = None
    pii_fields: tuple[str, ...] = DEFAULT_PII_FIELDS  # hashed in the dead letters

    def __post_init__(self) -> None:
        PiiPolicy(self.hash_key, self.pii_fields)  # checks the key and the fields
        if not 0 < self.min_batch_size <= self.max_batch_size:
            raise ConfigError("need 0 < min_batch_size <= max_batch_size")
        if self.torch_threads is not None and self.torch_threads < 1:
            raise ConfigError(f"torch_threads must be at least 1, got {self.torch_threads}")

    @property
    def pii(self) -> PiiPolicy:
        return PiiPolicy(self.hash_key, self.pii_fields)


class ExplainOutputs(NamedTuple):
    """The explained records and the sampled records that could not be explained."""

    explained: PCollection[Row]
    dead_letters: PCollection[DeadLetter]


class _ExplainerModelHandler(ModelHandler[Row, Row, ModelBank]):
    """RunInference loads one ModelBank per worker and hands it batches of sampled rows.

    RunInference gives us what a hand-written DoFn would have to redo: one model per worker
    process (shared across threads), batching with BatchElements, resource hints for GPU
    workers and a dead-letter output for batches that raise.
    """

    def __init__(self, config: ExplainStageConfig) -> None:
        super().__init__()
        self.config = config

    def load_model(self) -> ModelBank:
        if self.config.torch_threads is not None:
            import torch

            torch.set_num_threads(self.config.torch_threads)
        return ModelBank(
            self.config.registry_root,
            self.config.explain,
            self.config.policies,
            self.config.hash_key,
            device=self.config.device,
            explanation=self.config.explanation_policies,
        )

    def run_inference(
        self, batch: Sequence[Row], model: ModelBank, inference_args: dict[str, Any] | None = None
    ) -> Iterable[Row]:
        return model.explain(batch, self.config.run_id)

    def batch_elements_kwargs(self) -> dict[str, Any]:
        return {
            "min_batch_size": self.config.min_batch_size,
            "max_batch_size": self.config.max_batch_size,
        }

    def get_metrics_namespace(self) -> str:
        return "whylake_explain"


class ExplainSampledRecords(beam.PTransform[PCollection[Row], ExplainOutputs]):
    """Sampled rows -> explanation records; rows that fail -> dead letters, alone or by batch."""

    def __init__(self, config: ExplainStageConfig) -> None:
        super().__init__()
        self.config = config

    def expand(self, rows: PCollection[Row]) -> ExplainOutputs:
        explained, failed = (
            rows
            | "RunExplainers"
            >> RunInference(_ExplainerModelHandler(self.config)).with_exception_handling()
        )
        pii = self.config.pii
        batch_failures = failed.failed_inferences | "BatchFailuresToDeadLetters" >> beam.FlatMap(
            _batch_dead_letters, run_id=self.config.run_id, pii=pii
        ).with_output_types(DeadLetter)
        routed = explained | "RouteRowFailures" >> beam.ParDo(
            _RouteFailuresFn(self.config.run_id, pii)
        ).with_outputs(DEAD_LETTERS, main="explained")
        dead = (routed[DEAD_LETTERS], batch_failures) | "MergeDeadLetters" >> beam.Flatten()
        return ExplainOutputs(routed.explained, dead)

    def display_data(self) -> dict[str, Any]:
        explain = self.config.explain
        return {
            "registry_root": self.config.registry_root,
            "device": self.config.device or "auto",
            "ig_steps": explain.ig_steps,
            "ig_tolerance": explain.ig_tolerance,
            "ig_max_steps": explain.ig_max_steps,
            "shap": explain.shap,
            "counterfactuals": explain.counterfactuals,
            "explain_config_hash": explain.digest()[:16],
            "max_batch_size": self.config.max_batch_size,
        }


class _RouteFailuresFn(beam.DoFn):  # type: ignore[misc]
    def __init__(self, run_id: str, pii: PiiPolicy) -> None:
        self.run_id, self.pii = run_id, pii
        self.explained = Metrics.counter("whylake", "records_explained")
        self.failed = Metrics.counter("whylake", "records_failed_explain")

    def process(self, record: Row) -> Iterator[Any]:
        if "_error" in record:
            self.failed.inc()
            yield pvalue.TaggedOutput(
                DEAD_LETTERS,
                row_dead_letter(record["_row"], record["_error"], self.run_id, "explain", self.pii),
            )
        else:
            self.explained.inc()
            report("explained", 1)
            yield record


def _batch_dead_letters(
    failure: tuple[Sequence[Row], BaseException], run_id: str, pii: PiiPolicy
) -> Iterator[DeadLetter]:
    batch, error = failure
    Metrics.counter("whylake", "records_failed_explain").inc(len(batch))
    for row in batch:
        yield row_dead_letter(row, error, run_id, "explain", pii)
