"""Validate inference batches against the Great Expectations suite and the model cards."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam import pvalue
from apache_beam.metrics import Metrics
from apache_beam.pvalue import PCollection

from whylake.registry.store import ModelRegistry
from whylake.schemas.dead_letter import dead_letter
from whylake.schemas.errors import ConfigError, ModelNotFoundError
from whylake.schemas.limits import RecordLimits, limit_violations
from whylake.schemas.model_card import ModelCard
from whylake.schemas.pii import PiiPolicy
from whylake.transforms.dead_letters import DEAD_LETTERS, arrow_row
from whylake.transforms.isolate import isolate_failures
from whylake.transforms.progress import report

_SCALAR_COLUMNS = (
    "tenant_id",
    "request_id",
    "event_ts",
    "model_id",
    "model_version",
    "score",
    "confidence",
    "risk_score",
    "trust_tier",
)


@dataclass(frozen=True)
class ValidateConfig:
    """Where the model cards live, the contract's limits, and what the dead letters hide."""

    registry_root: str
    run_id: str
    pii: PiiPolicy = field(kw_only=True)
    limits: RecordLimits = field(default_factory=RecordLimits, kw_only=True)

    def __post_init__(self) -> None:
        if not self.run_id:
            raise ConfigError("run_id must not be empty")
        if not isinstance(self.pii, PiiPolicy):
            raise ConfigError("ValidateConfig needs pii: a PiiPolicy with the user-id hash key")


class ValidateRecords(beam.PTransform[PCollection[pa.RecordBatch], pvalue.DoOutputsTuple]):
    """Keep rows that pass the suite and match a registered model; dead-letter the rest.

    Main output: PCollection[pa.RecordBatch]; tagged `dead_letters`: PCollection[DeadLetter].
    """

    def __init__(self, config: ValidateConfig) -> None:
        super().__init__()
        self.config = config

    def expand(self, batches: PCollection[pa.RecordBatch]) -> pvalue.DoOutputsTuple:
        return batches | "CheckBatch" >> beam.ParDo(_ValidateFn(self.config)).with_input_types(
            pa.RecordBatch
        ).with_output_types(pa.RecordBatch).with_outputs(DEAD_LETTERS, main="valid")

    def display_data(self) -> dict[str, Any]:
        return {"registry_root": self.config.registry_root, "suite": "whylake inference suite"}


class _ValidateFn(beam.DoFn):  # type: ignore[misc]
    def __init__(self, config: ValidateConfig) -> None:
        self.config = config
        self.invalid = Metrics.counter("whylake", "records_invalid")
        self.valid = Metrics.counter("whylake", "records_valid")

    def setup(self) -> None:
        from whylake.schemas.expectations import InferenceSuite

        self.suite = InferenceSuite()
        self.registry = ModelRegistry(Path(self.config.registry_root))
        self.cards: dict[tuple[str, str, str], ModelCard | str] = {}

    def process(self, batch: pa.RecordBatch) -> Iterator[Any]:
        # One check per batch; a batch the checks themselves choke on (nothing known does) is
        # narrowed down so that only the rows that cause it are dead-lettered.
        checked = isolate_failures(
            range(batch.num_rows), lambda rows: [self._reasons(batch, rows)], namespace="whylake"
        )
        reasons: dict[int, list[str]] = defaultdict(list)
        for part in checked.results:
            for index, why in part.items():
                reasons[index].extend(why)
        for index, exc in checked.failures:
            reasons[index].append(f"the checks raised {type(exc).__name__}: {exc}")
        if not reasons:
            self.valid.inc(batch.num_rows)
            report("validated", batch.num_rows)
            yield batch
            return
        bad = sorted(reasons)
        for index in bad:
            row = arrow_row(batch, index)
            yield pvalue.TaggedOutput(
                DEAD_LETTERS,
                dead_letter(
                    run_id=self.config.run_id,
                    stage="validate",
                    error="; ".join(reasons[index]),
                    error_type="ExpectationFailed",
                    record=row,
                    source=row.get("source_id"),
                    tenant_id=row.get("tenant_id"),
                    request_id=row.get("request_id"),
                    pii=self.config.pii,
                ),
            )
        self.invalid.inc(len(bad))
        keep = np.ones(batch.num_rows, dtype=bool)
        keep[bad] = False
        self.valid.inc(int(keep.sum()))
        report("validated", int(keep.sum()))
        if keep.any():
            yield batch.filter(pa.array(keep))

    def _reasons(self, batch: pa.RecordBatch, rows: Sequence[int]) -> dict[int, list[str]]:
        """Row index (in `batch`) -> every reason it fails, for the contiguous `rows`."""
        start = rows[0] if len(rows) else 0
        part = batch if len(rows) == batch.num_rows else batch.slice(start, len(rows))
        reasons: dict[int, list[str]] = defaultdict(list)
        # The contract's limits first: a row whose ids break the grammar never reaches the
        # registry, and one outside the event-time window never reaches a partition.
        broken = limit_violations(part, self.config.limits, datetime.now(UTC))
        for index, why in broken.items():
            reasons[start + index].extend(why)
        frame = part.select(list(_SCALAR_COLUMNS)).to_pandas()
        for failure in self.suite.validate(frame):
            reasons[start + failure.index].append(f"{failure.expectation}({failure.column})")
        skip = np.zeros(part.num_rows, dtype=bool)
        skip[list(broken)] = True
        for index, reason in self._check_features(part, skip).items():
            reasons[start + index].append(reason)
        return dict(reasons)

    def _card(self, key: tuple[str, str, str]) -> ModelCard | str:
        """The card, or why there is none for this tenant (a reason for each of its rows)."""
        if key not in self.cards:
            tenant, model_id, version = key
            try:
                self.cards[key] = self.registry.card(*key)
            except ModelNotFoundError:
                self.cards[key] = (
                    f"model {model_id} version {version} is not registered for tenant {tenant}"
                )
            except Exception as exc:  # noqa: BLE001 - a broken card fails its rows, not the job
                self.cards[key] = f"model {model_id}/{version} unusable: {exc}"
        return self.cards[key]

    def _check_features(self, batch: pa.RecordBatch, skip: np.ndarray) -> dict[int, str]:
        """Rows whose model is unknown, or whose features miss one the model needs.

        Rows in `skip` already broke the contract's limits: their ids are not looked up.
        """
        problems: dict[int, str] = {}
        keys = pc.binary_join_element_wise(
            batch["tenant_id"],
            batch["model_id"],
            batch["model_version"],
            pa.scalar("\x1f", batch.schema.field("tenant_id").type),
        )
        features: pa.MapArray = batch["features"]
        # .offsets index into the unsliced .keys/.items, so the three stay consistent.
        offsets = features.offsets.to_numpy()
        names = features.keys
        not_finite = ~np.isfinite(features.items.to_numpy(zero_copy_only=False))
        for key in pc.unique(pc.filter(keys, pa.array(~skip))).to_pylist():
            if key is None:
                continue
            in_group = pc.equal(keys, key).to_numpy(zero_copy_only=False) & ~skip
            tenant, model_id, version = key.split("\x1f")
            card = self._card((tenant, model_id, version))
            if isinstance(card, str):
                for i in np.flatnonzero(in_group):
                    problems[int(i)] = card
                continue
            if card.is_text:
                texts = batch["text"] if "text" in batch.schema.names else None
                for i in np.flatnonzero(in_group):
                    value = None if texts is None else texts[int(i)].as_py()
                    if not value:
                        problems[int(i)] = f"{model_id}/{version} is a text model: text missing"
                continue
            wanted = pa.array(card.feature_names, names.type)
            known = pc.is_in(names, value_set=wanted).to_numpy(zero_copy_only=False)
            n_known = _per_row_sum(known, offsets)
            n_bad = _per_row_sum(not_finite & known, offsets)
            for i in np.flatnonzero(in_group & (n_known < len(card.feature_names))):
                start, stop = offsets[i], offsets[i + 1]
                have = set(names.slice(start, stop - start).to_pylist())
                missing = [f for f in card.feature_names if f not in have]
                problems[int(i)] = f"features missing for {model_id}/{version}: {missing}"
            for i in np.flatnonzero(in_group & (n_bad > 0)):
                problems.setdefault(int(i), "features must be finite numbers")
        return problems


def _per_row_sum(flags: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Per-row count of true flags in a list column given its offsets."""
    cumulative = np.concatenate([[0], np.cumsum(flags, dtype=np.int64)])
    return cumulative[offsets[1:]] - cumulative[offsets[:-1]]
