"""Deterministic, mergeable, unbiased per-tenant sampling: the pure mathematics (no Beam)."""

from __future__ import annotations

from whylake.transforms.sampling.hashing import uniform_from_hash, uniforms_from_hash
from whylake.transforms.sampling.policy import (
    AlwaysExplainRules,
    SamplingPolicies,
    TenantPolicy,
    load_policies,
    parse_policies,
)
from whylake.transforms.sampling.priority import (
    AlwaysExplained,
    Candidates,
    ListRows,
    Rows,
    Sample,
    SampledRow,
    StratumAccumulator,
    candidate_indices,
    draw_sample,
    merge_accumulators,
    new_accumulator,
    sampling_weights,
)

__all__ = [
    "AlwaysExplainRules",
    "AlwaysExplained",
    "Candidates",
    "ListRows",
    "Rows",
    "Sample",
    "SampledRow",
    "SamplingPolicies",
    "StratumAccumulator",
    "TenantPolicy",
    "candidate_indices",
    "draw_sample",
    "load_policies",
    "merge_accumulators",
    "new_accumulator",
    "parse_policies",
    "sampling_weights",
    "uniform_from_hash",
    "uniforms_from_hash",
]
