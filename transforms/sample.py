"""Sample inference records per tenant and UTC day by policy, with HT weights for estimators.

`SampleByPolicy` gives the sampled rows; `SampleAndCountByPolicy` gives them together with one
count row per (tenant, day) stratum, so a job can report "read / sampled". Both work per window:
the only aggregation is a CombinePerKey, so a streaming job can window the batches first.
"""

from __future__ import annotations

import datetime
import functools
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import apache_beam as beam
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.pvalue import PCollection, TaggedOutput

from whylake.schemas.errors import ConfigError
from whylake.transforms.sampling.hashing import uniforms_from_hash
from whylake.transforms.sampling.policy import SamplingPolicies, load_policies
from whylake.transforms.sampling.priority import (
    AlwaysExplained,
    Candidates,
    StratumAccumulator,
    candidate_indices,
    draw_sample,
    merge_accumulators,
    new_accumulator,
    sampling_weights,
)

StratumKey = tuple[str, str]  # (tenant_id, UTC day as YYYY-MM-DD)

# What SampleByPolicy adds to each record (names as in the explanation schema, ids 80-84).
SAMPLING_COLUMNS = (
    "sampling_policy",
    "sampling_reason",
    "inclusion_probability",
    "ht_weight",
    "stratum_size",
)
# One row per (tenant, UTC day) stratum and window, from SampleAndCountByPolicy.
COUNT_COLUMNS = ("tenant_id", "day", "records", "always_explain", "sampled", "sampling_policy")

_NEEDED_COLUMNS = ("tenant_id", "request_id", "event_ts", "confidence", "risk_score", "flags")
_COUNTS = "counts"
_EPOCH_ORDINAL = datetime.date(1970, 1, 1).toordinal()
_TICKS_PER_DAY = {"s": 86_400, "ms": 86_400_000, "us": 86_400_000_000, "ns": 86_400_000_000_000}


@dataclass(frozen=True)
class SampleConfig:
    """What `SampleByPolicy` needs: every tenant's sampling policy."""

    policies: SamplingPolicies

    def __post_init__(self) -> None:
        if not isinstance(self.policies, SamplingPolicies):
            raise ConfigError(
                f"policies must be a SamplingPolicies (see load_policies), got {self.policies!r}"
            )

    @classmethod
    def from_policy_file(cls, path: str | os.PathLike[str]) -> SampleConfig:
        """A config from a policy YAML file such as schemas/policies/default.yaml."""
        return cls(load_policies(path))


class SampleOutputs(NamedTuple):
    """The sampled rows and one count row per (tenant, day) stratum and window."""

    samples: PCollection[dict[str, Any]]
    counts: PCollection[dict[str, Any]]


class SampleAndCountByPolicy(beam.PTransform[PCollection[pa.RecordBatch], SampleOutputs]):
    """Sample RecordBatches of valid inference records and count each stratum's records.

    A sample row is the record as `RecordBatch.to_pylist()` gives it plus `sampling_policy`,
    `sampling_reason`, `inclusion_probability`, `ht_weight` and `stratum_size`. A count row
    has `tenant_id`, `day`, `records`, `always_explain`, `sampled` and `sampling_policy`.
    """

    def __init__(self, config: SampleConfig) -> None:
        super().__init__()
        self._config = config

    def expand(self, batches: PCollection[pa.RecordBatch]) -> SampleOutputs:
        policies = self._config.policies
        # Per batch, only each stratum's top-(k+1) and always-explain rows leave the DoFn, as
        # Arrow slices: no per-record Beam elements, no Python rows before the sample is known.
        outputs = (
            batches
            | "PreselectPerBatch" >> beam.ParDo(_PreselectFn(policies))
            | "CombineStrata" >> beam.CombinePerKey(_StratumCombineFn())
            | "DrawSamples"
            >> beam.ParDo(_DrawSampleFn(policies)).with_outputs(_COUNTS, main="samples")
        )
        return SampleOutputs(samples=outputs.samples, counts=outputs[_COUNTS])

    def display_data(self) -> dict[str, Any]:
        return {"policy_version": self._config.policies.version}


class SampleByPolicy(beam.PTransform[PCollection[pa.RecordBatch], PCollection[dict[str, Any]]]):
    """Sample RecordBatches of valid inference records by each tenant's policy, per UTC day.

    Deterministic (hash of request id and seed), mergeable (a combiner, so any batching or
    windowing gives the same sample per stratum) and unbiased (rows carry HT weights).
    """

    def __init__(self, config: SampleConfig) -> None:
        super().__init__()
        self._config = config

    def expand(self, batches: PCollection[pa.RecordBatch]) -> PCollection[dict[str, Any]]:
        return (batches | "SampleAndCount" >> SampleAndCountByPolicy(self._config)).samples


def _utc_days(event_ts: pa.Array) -> npt.NDArray[np.int64]:
    """Days since 1970-01-01 (UTC) of each timestamp; Arrow stores UTC ticks whatever the tz."""
    if not pa.types.is_timestamp(event_ts.type):
        raise ConfigError(f"event_ts must be an Arrow timestamp column, got {event_ts.type}")
    ticks = event_ts.cast(pa.int64()).to_numpy(zero_copy_only=False)
    # Floor division keeps days before 1970 on the right side of midnight.
    return np.asarray(ticks // _TICKS_PER_DAY[event_ts.type.unit], dtype=np.int64)


def _floats(column: pa.Array) -> npt.NDArray[np.float64]:
    """A float64 array with NaN where the value is missing."""
    return np.asarray(
        pc.fill_null(column.cast(pa.float64()), np.nan).to_numpy(zero_copy_only=False),
        dtype=np.float64,
    )


class ArrowRows:
    """`Rows` backed by an Arrow table: cheap to slice, concatenate and pickle (IPC)."""

    def __init__(self, table: pa.Table) -> None:
        self.table = table

    def __len__(self) -> int:
        return self.table.num_rows

    def take(self, indices: npt.NDArray[np.intp]) -> ArrowRows:
        return ArrowRows(self.table.take(pa.array(indices, pa.int64())))

    def concat(self, others: Sequence[ArrowRows]) -> ArrowRows:
        if not others:
            return self
        tables = [self.table, *(o.table for o in others)]
        try:
            # "default" merges metadata and nullability and null-fills a missing column, but
            # never casts: casting would be order-dependent, and pyarrow 25 aborts the process
            # when casting a taken map<string, _> to map<large_string, _>.
            return ArrowRows(pa.concat_tables(tables, promote_options="default"))
        except (pa.ArrowTypeError, pa.ArrowInvalid) as err:
            raise ConfigError(
                f"SampleByPolicy got batches whose Arrow types differ within one stratum ({err}); "
                "cast every batch to schemas.inference.INFERENCE_ARROW_SCHEMA before sampling"
            ) from err

    def to_pylist(self) -> list[dict[str, Any]]:
        return self.table.to_pylist()

    def __reduce__(self) -> tuple[Any, ...]:
        # One contiguous chunk: a table of many tiny chunks pickles a schema per chunk.
        return (ArrowRows, (self.table.combine_chunks(),))


def _take(batch: pa.RecordBatch, indices: npt.NDArray[np.intp]) -> ArrowRows:
    return ArrowRows(pa.Table.from_batches([batch.take(pa.array(indices, pa.int64()))]))


class _FlagIndex:
    """Which records carry a given flag, computed once per flag per batch."""

    def __init__(self, flags: pa.Array, num_rows: int) -> None:
        self._values = pc.list_flatten(flags)
        self._parents = pc.list_parent_indices(flags).to_numpy()
        self._num_rows = num_rows
        self._masks: dict[str, npt.NDArray[np.bool_]] = {}

    def mask(self, flag: str, rows: npt.NDArray[np.intp]) -> npt.NDArray[np.bool_]:
        """Whether each of `rows` carries `flag`."""
        if flag not in self._masks:
            hits = pc.fill_null(pc.equal(self._values, flag), False).to_numpy(zero_copy_only=False)
            mask = np.zeros(self._num_rows, dtype=bool)
            mask[self._parents[hits]] = True
            self._masks[flag] = mask
        return self._masks[flag][rows]


class _PreselectFn(beam.DoFn):
    """Per batch: hash, weigh, apply always-explain rules and keep each stratum's candidates."""

    def __init__(self, policies: SamplingPolicies) -> None:
        self._policies = policies

    def process(
        self, batch: pa.RecordBatch | pa.Table
    ) -> Iterator[tuple[StratumKey, StratumAccumulator]]:
        if isinstance(batch, pa.Table):
            for chunk in batch.to_batches():
                yield from self.process(chunk)
            return
        n = batch.num_rows
        if n == 0:
            return
        missing = [c for c in _NEEDED_COLUMNS if c not in batch.schema.names]
        if missing:
            raise ConfigError(
                f"SampleByPolicy needs inference records with columns {list(_NEEDED_COLUMNS)}; "
                f"this batch lacks {missing} (has {batch.schema.names})"
            )
        for column in ("tenant_id", "request_id", "event_ts"):
            if batch.column(column).null_count:
                raise ConfigError(
                    f"SampleByPolicy needs valid inference records: {column} has "
                    f"{batch.column(column).null_count} nulls; validate the records first"
                )
        tenants = pc.dictionary_encode(batch.column("tenant_id"))
        tenant_codes = tenants.indices.to_numpy(zero_copy_only=False)
        days = _utc_days(batch.column("event_ts"))
        request_ids = np.asarray(batch.column("request_id").to_pylist(), dtype=object)
        # Determinism: u depends on (seed, request id) only, never on batching or arrival order.
        u = uniforms_from_hash(request_ids, self._policies.seed)
        confidence = _floats(batch.column("confidence"))
        risk = _floats(batch.column("risk_score"))
        flags = _FlagIndex(batch.column("flags"), n)

        reasons = np.empty(n, dtype=object)
        weights = np.empty(n, dtype=np.float64)
        tenant_rows = {}
        for code, tenant in enumerate(tenants.dictionary.to_pylist()):
            rows = np.flatnonzero(tenant_codes == code)
            policy = self._policies.policy_for(tenant)
            reasons[rows] = policy.always_explain.reasons(
                functools.partial(flags.mask, rows=rows), confidence[rows], risk[rows]
            )
            weights[rows] = sampling_weights(
                policy.effective_weight, confidence[rows], risk[rows], policy.weight_floor
            )
            tenant_rows[tenant] = rows
        priorities = weights / u
        always = reasons != ""

        strata: list[tuple[StratumKey, int, int, npt.NDArray[np.intp], npt.NDArray[np.intp]]] = []
        for tenant, rows in tenant_rows.items():
            budget = self._policies.policy_for(tenant).budget_per_day
            for day in np.unique(days[rows]):
                in_day = rows[days[rows] == day]
                always_rows = in_day[always[in_day]]
                sampled_rows = in_day[~always[in_day]]
                chosen = sampled_rows[
                    candidate_indices(
                        priorities[sampled_rows], request_ids[sampled_rows], budget + 1
                    )
                ]
                key = (tenant, datetime.date.fromordinal(_EPOCH_ORDINAL + int(day)).isoformat())
                strata.append((key, budget, len(sampled_rows), always_rows, chosen))

        # Records stay in Arrow until the sample is drawn: Python rows cost ~10 us each to
        # build and far more to pickle through a shuffle, Arrow slices almost nothing.
        for key, budget, population, always_rows, chosen in strata:
            candidates = Candidates(
                request_ids[chosen], priorities[chosen], weights[chosen], _take(batch, chosen)
            )
            always_explained = AlwaysExplained(
                request_ids[always_rows], reasons[always_rows], _take(batch, always_rows)
            )
            yield key, new_accumulator(budget, population, candidates, always_explained)


class _StratumCombineFn(beam.CombineFn):
    """Merges a stratum's partial accumulators; mergeable, so it works per window and key."""

    def create_accumulator(self) -> StratumAccumulator:
        return StratumAccumulator()

    def add_input(
        self, accumulator: StratumAccumulator, partial: StratumAccumulator
    ) -> StratumAccumulator:
        return merge_accumulators((accumulator, partial))

    def add_inputs(self, accumulator: StratumAccumulator, partials: Any) -> StratumAccumulator:
        return merge_accumulators((accumulator, *partials))

    def merge_accumulators(self, accumulators: Any) -> StratumAccumulator:
        return merge_accumulators(accumulators)

    def extract_output(self, accumulator: StratumAccumulator) -> StratumAccumulator:
        return accumulator


class _DrawSampleFn(beam.DoFn):
    """Turns a finished stratum into sampled rows (main output) and one count row."""

    def __init__(self, policies: SamplingPolicies) -> None:
        self._policies = policies

    def process(
        self, element: tuple[StratumKey, StratumAccumulator]
    ) -> Iterator[dict[str, Any] | TaggedOutput[str, dict[str, Any]]]:
        (tenant, day), accumulator = element
        policy = self._policies.policy_for(tenant)
        sample = draw_sample(accumulator, policy.sampler)
        records = sample.records()
        always = sum(s.reason.startswith("always:") for s in records)
        for s in records:
            yield {
                **s.row,
                "sampling_policy": policy.label,
                "sampling_reason": s.reason,
                "inclusion_probability": s.inclusion_probability,
                "ht_weight": s.ht_weight,
                "stratum_size": s.stratum_size,
            }
        yield TaggedOutput(
            _COUNTS,
            {
                "tenant_id": tenant,
                "day": day,
                # Always-explain records are counted once per request id (replays dropped).
                "records": accumulator.population + always,
                "always_explain": always,
                "sampled": len(records),
                "sampling_policy": policy.label,
            },
        )
