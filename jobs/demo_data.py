"""Generate a realistic day of inference logs for the demo tenants, scored by their real models."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from whylake.jobs.demo_kinds import KIND_DEMOS, kind_inputs, text_column
from whylake.jobs.demo_models import DEMO_TENANTS, DEMO_VERSION
from whylake.registry.store import ModelRegistry
from whylake.schemas.ids import input_digest
from whylake.schemas.inference import INFERENCE_ARROW_SCHEMA

TRUST_TIERS = np.array(["gold", "silver", "bronze"])


@dataclass(frozen=True)
class GeneratedDay:
    """What the generator wrote: the files and how many records of each kind."""

    paths: tuple[Path, ...]
    records: int
    malformed: int


def _event_times(rng: np.random.Generator, day: date, n: int) -> np.ndarray:
    """Seconds into the day with a diurnal peak in the afternoon, as traffic usually has."""
    hours = np.clip(rng.normal(14.0, 4.0, n), 0.0, 23.999)
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    micros = (hours * 3_600_000_000).astype(np.int64)
    return np.int64(start.timestamp() * 1_000_000) + micros


def tenant_table(registry: ModelRegistry, tenant: str, day: date, n: int, seed: int) -> pa.Table:
    """n valid inference records for one tenant, features jittered around real data rows."""
    rng = np.random.default_rng([seed, sum(tenant.encode())])
    texts = None
    if tenant in KIND_DEMOS:
        card, x, texts, scores = kind_inputs(registry, tenant, n, rng)
        model_id, version = card.model_id, card.model_version
        names = list(card.feature_names)
    else:
        load, _kind, model_id, _out, _desc = DEMO_TENANTS[tenant]
        data = load()
        model = registry.load(tenant, model_id, DEMO_VERSION)
        version = DEMO_VERSION
        base = data.x[rng.integers(0, len(data.x), n)]
        x = base + rng.normal(0.0, 0.05, base.shape) * data.x.std(axis=0)
        lower, upper = data.x.min(axis=0), data.x.max(axis=0)
        x = np.clip(x, lower, upper)
        for j, name in enumerate(data.feature_names):
            if name in data.integer:
                x[:, j] = np.rint(base[:, j])
        with torch.no_grad():
            scores = model.module(torch.tensor(x, dtype=torch.float32)).double().numpy()
        card = model.card
        names = list(data.feature_names)
    classify = card.task == "classification"
    if classify:
        confidence = np.maximum(scores, 1 - scores)
        predicted = np.where(scores >= 0.5, card.positive_class or "1", card.negative_class or "0")
    else:
        confidence = np.full(n, np.nan)
        predicted = np.full(n, None)
    # The business's own risk score (fraud, exposure): mostly low, a thin tail above 0.9.
    risk = rng.beta(2.0, 6.0, n)
    tail = rng.random(n) < 0.003
    risk[tail] = rng.uniform(0.9, 1.0, int(tail.sum()))
    flags: list[list[str] | None] = []
    r = rng.random((n, 3))
    for a, b, c in r:
        row = [
            f
            for f, hit in (
                ("flagged", a < 0.004),
                ("disputed", b < 0.002),
                ("high_risk", c < 0.002),
            )
            if hit
        ]
        flags.append(row or None)
    features = pa.MapArray.from_arrays(
        pa.array(np.arange(n + 1) * len(names), pa.int32()),
        pa.array(np.tile(np.asarray(names, dtype=object), n), pa.large_string()),
        pa.array(x.ravel(), pa.float64()),
    )
    ids = [f"{tenant}-{day:%Y%m%d}-{i:08d}" for i in range(n)]
    # The producer's hash of its input, in whylake's canonical form (schemas.ids.input_digest),
    # so whylake can check it; a few producers hash something else (a stale feature vector),
    # which whylake flags on the row (input_hash_mismatch) and routes to a person.
    input_hash = [input_digest(names, row) for row in x]
    stale = np.random.default_rng([seed, sum(tenant.encode()), 1]).random(n) < 0.002
    for i in np.flatnonzero(stale):
        input_hash[i] = hashlib.sha256(x[i].tobytes()).hexdigest()
    cols = {
        "tenant_id": pa.array([tenant] * n, pa.large_string()),
        "request_id": pa.array(ids, pa.large_string()),
        "event_ts": pa.array(_event_times(rng, day, n), pa.timestamp("us", tz="UTC")),
        "model_id": pa.array([model_id] * n, pa.large_string()),
        "model_version": pa.array([version] * n, pa.large_string()),
        "features": features,
        "score": pa.array(scores),
        "predicted_class": pa.array(list(predicted), pa.large_string()),
        "confidence": pa.array(confidence, from_pandas=True),
        "label": pa.array([None] * n, pa.large_string()),
        "user_id": pa.array([f"user-{k}" for k in rng.integers(0, 5000, n)], pa.large_string()),
        "trust_tier": pa.array(TRUST_TIERS[rng.integers(0, 3, n)], pa.large_string()),
        "flags": pa.array(flags, pa.large_list(pa.field("element", pa.large_string(), False))),
        "risk_score": pa.array(risk),
        "source_id": pa.array([f"demo-generator/{tenant}"] * n, pa.large_string()),
        "input_hash": pa.array(input_hash, pa.large_string()),
        "text": text_column(texts, n),
    }
    return pa.Table.from_pydict(cols, schema=INFERENCE_ARROW_SCHEMA)


@dataclass(frozen=True)
class FeatureShift:
    """A change in one tenant's traffic: a feature stuck near its training mean.

    The classic upstream failure (a join that starts filling a column with its default): the
    feature's distribution collapses, so the model's reliance on it collapses too, which is
    what attribution drift monitoring is there to catch.
    """

    feature: str
    spread: float = 0.05  # what is left of the feature's spread, as a share of its std


def shift_feature(registry: ModelRegistry, table: pa.Table, shift: FeatureShift) -> pa.Table:
    """The records with `shift.feature` replaced and the scores (and input hashes) redone."""
    tenant = table.column("tenant_id")[0].as_py()
    load, _kind, model_id, _out, _desc = DEMO_TENANTS[tenant]
    data = load()
    names = list(data.feature_names)
    j = names.index(shift.feature)
    model = registry.load(tenant, model_id, DEMO_VERSION)
    rng = np.random.default_rng([table.num_rows, j, sum(tenant.encode())])
    n = table.num_rows
    x = np.array(table.column("features").combine_chunks().items, dtype=float)
    x = x.reshape(n, len(names))
    mean, std = data.x[:, j].mean(), data.x[:, j].std()
    x[:, j] = np.clip(
        mean + rng.normal(0.0, shift.spread * std, n), data.x[:, j].min(), data.x[:, j].max()
    )
    with torch.no_grad():
        scores = model.module(torch.tensor(x, dtype=torch.float32)).double().numpy()
    features = pa.MapArray.from_arrays(
        pa.array(np.arange(0, (n + 1) * len(names), len(names)), pa.int32()),
        pa.array(np.tile(names, n), pa.large_string()),
        pa.array(x.ravel(), pa.float64()),
    )
    columns = {
        "features": features,
        "score": pa.array(scores),
        "input_hash": pa.array([input_digest(names, row) for row in x], pa.large_string()),
    }
    for name, column in columns.items():
        table = table.set_column(table.schema.get_field_index(name), name, column)
    return table.cast(INFERENCE_ARROW_SCHEMA)


def _jsonable(row: dict[str, object]) -> dict[str, object]:
    out = dict(row)
    out["event_ts"] = row["event_ts"].isoformat()  # type: ignore[union-attr]
    out["features"] = dict(row["features"])  # type: ignore[arg-type]
    if isinstance(out.get("confidence"), float) and math.isnan(out["confidence"]):  # type: ignore[arg-type]
        out["confidence"] = None
    return {k: v for k, v in out.items() if v is not None}


def malformed_lines(tenant: str, day: date, valid: dict[str, object]) -> list[str]:
    """Bad records of the kinds producers really emit, one of each, for the dead-letter path."""
    broken_json = json.dumps(valid)[:60]
    no_request = {k: v for k, v in valid.items() if k != "request_id"}
    nan_feature = json.loads(json.dumps(valid))
    first = next(iter(nan_feature["features"]))
    nan_feature["features"][first] = float("nan")
    nan_feature["request_id"] = f"{tenant}-{day:%Y%m%d}-nan-feature"
    bad_score = dict(valid, request_id=f"{tenant}-{day:%Y%m%d}-bad-score", score="high")
    unknown_model = dict(
        valid, request_id=f"{tenant}-{day:%Y%m%d}-unknown-model", model_version="999"
    )
    missing_feature = json.loads(json.dumps(valid))
    missing_feature["features"].pop(first)
    missing_feature["request_id"] = f"{tenant}-{day:%Y%m%d}-missing-feature"
    bad_conf = dict(valid, request_id=f"{tenant}-{day:%Y%m%d}-bad-confidence", confidence=1.7)
    return [
        broken_json,
        *(
            json.dumps(r)
            for r in (no_request, nan_feature, bad_score, unknown_model, missing_feature, bad_conf)
        ),
    ]


def generate_day(
    registry: ModelRegistry,
    out_dir: Path,
    day: date,
    per_tenant: int,
    *,
    seed: int = 7,
    parquet_tenants: tuple[str, ...] = ("globex",),
    with_malformed: bool = True,
    shifts: Mapping[str, FeatureShift] | None = None,
) -> GeneratedDay:
    """Write one file per tenant: JSONL (with malformed lines mixed in) or Parquet.

    `shifts` changes a tenant's traffic that day (tenant -> FeatureShift), for the monitor.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    paths, records, malformed = [], 0, 0
    registered = {t for t, _, _ in registry.versions()}
    # The torch tenants always; another kind's tenant once its model is registered.
    tenants = [*DEMO_TENANTS, *(t for t in KIND_DEMOS if t in registered)]
    for tenant in tenants:
        table = tenant_table(registry, tenant, day, per_tenant, seed)
        if shifts and tenant in shifts:
            table = shift_feature(registry, table, shifts[tenant])
        records += table.num_rows
        if tenant in parquet_tenants:
            path = out_dir / f"{tenant}-{day:%Y-%m-%d}.parquet"
            pq.write_table(table, path)
        else:
            path = out_dir / f"{tenant}-{day:%Y-%m-%d}.jsonl"
            rows = [_jsonable(r) for r in table.to_pylist()]
            lines = [json.dumps(r) for r in rows]
            if with_malformed and rows[0].get("features"):
                bad = malformed_lines(tenant, day, rows[0])
                # A producer retry logs the same request twice: it must be explained once.
                bad.append(lines[1])
                for k, line in enumerate(bad):
                    lines.insert((k + 1) * len(lines) // (len(bad) + 1), line)
                records += len(bad)
                malformed += len(bad) - 1
            path.write_text("\n".join(lines) + "\n")
        paths.append(path)
    return GeneratedDay(tuple(paths), records, malformed)


def yesterday() -> date:
    """The default day a scheduled batch job processes."""
    return (datetime.now(UTC) - timedelta(days=1)).date()
