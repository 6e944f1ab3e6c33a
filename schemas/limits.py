"""The inference record's limits: ids, event-time window, magnitudes, sizes, checked before use."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from whylake.schemas.errors import ConfigError, InvalidIdError
from whylake.schemas.ids import check_model_id, check_model_version, check_request_id, check_tenant

# The explainers evaluate every model in float32 (IG, SHAP and counterfactuals cast their
# inputs): 1e308 is a finite float64 but inf in float32, and an inf input makes every number
# of its row, and before this check every row of its batch, meaningless.
FLOAT32_MAX = float(np.finfo(np.float32).max)
_OPTIONAL_TEXT = ("predicted_class", "label", "user_id", "trust_tier", "source_id", "input_hash")
_IDS: tuple[tuple[str, Callable[[object], str]], ...] = (
    ("tenant_id", check_tenant),
    ("model_id", check_model_id),
    ("model_version", check_model_version),
    ("request_id", check_request_id),
)


@dataclass(frozen=True)
class RecordLimits:
    """What an inference record may hold, beyond its types; a record outside is dead-lettered.

    The event-time window keeps records that a partition, a sampler stratum or a commit cannot
    take out of the store (`9999-12-31T23:59:59Z` passed validation and crashed the job at
    commit): no older than `max_event_age_days` and no later than `max_event_lead_s` ahead of
    the reference time (the checking worker's clock unless `reference_time` pins it).
    """

    max_event_age_days: float = 3650.0
    max_event_lead_s: float = 86_400.0
    reference_time: datetime | None = None
    max_feature_magnitude: float = FLOAT32_MAX
    max_features: int = 10_000
    max_name_length: int = 256  # a feature name or a flag
    max_text_length: int = 1024  # an optional text field (user id, label, source, ...)
    max_input_text_length: int = 100_000  # a text model's input (`text`)
    max_flags: int = 64

    def __post_init__(self) -> None:
        if not self.max_event_age_days > 0 or not self.max_event_lead_s >= 0:
            raise ConfigError("max_event_age_days must be positive, max_event_lead_s >= 0")
        if self.reference_time is not None and self.reference_time.tzinfo is None:
            raise ConfigError("reference_time must carry a time zone")
        if not 0 < self.max_feature_magnitude <= FLOAT32_MAX:
            raise ConfigError(
                f"max_feature_magnitude must be in (0, {FLOAT32_MAX:.4g}] (float32), got "
                f"{self.max_feature_magnitude}"
            )
        for name in (
            "max_features",
            "max_name_length",
            "max_text_length",
            "max_input_text_length",
            "max_flags",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")

    def event_window(self, now: datetime | None = None) -> tuple[datetime, datetime]:
        """The accepted [earliest, latest] event time."""
        ref = self.reference_time or now or datetime.now(UTC)
        return (
            ref - timedelta(days=self.max_event_age_days),
            ref + timedelta(seconds=self.max_event_lead_s),
        )


def limit_violations(
    batch: pa.RecordBatch, limits: RecordLimits, now: datetime | None = None
) -> dict[int, list[str]]:
    """Row index -> what it breaks, for a batch in the inference schema (vectorised).

    Runs before anything else looks at a row: an id that is not one folder name never reaches
    the registry, a time outside the window never reaches a partition, a value float32 cannot
    hold never reaches an explainer.
    """
    problems: dict[int, list[str]] = defaultdict(list)
    for column, check in _IDS:
        values = batch.column(column)
        bad: dict[str, str] = {}
        for value in pc.unique(values).to_pylist():
            if value is None:
                continue  # required fields are checked, with their own reason, by the reader
            try:
                check(value)
            except InvalidIdError as exc:
                bad[value] = str(exc)
        if bad:
            hit = pc.is_in(values, value_set=pa.array(list(bad), values.type))
            texts = values.to_pylist()
            for i in pc.indices_nonzero(hit).to_pylist():
                problems[i].append(bad[texts[i]])
    _check_event_time(batch, limits, now, problems)
    _check_numbers(batch, problems)
    _check_features(batch, limits, problems)
    _check_texts(batch, limits, problems)
    return dict(problems)


def _flag(mask: np.ndarray, reason: Callable[[int], str], problems: dict[int, list[str]]) -> None:
    for i in np.flatnonzero(mask):
        problems[int(i)].append(reason(int(i)))


def _check_event_time(
    batch: pa.RecordBatch,
    limits: RecordLimits,
    now: datetime | None,
    problems: dict[int, list[str]],
) -> None:
    earliest, latest = limits.event_window(now)
    column = batch.column("event_ts")
    # Compared as integers: a Parquet time of year 20000 fits the column but not a datetime.
    unit = column.type.unit
    ticks = pc.cast(column, pa.int64()).to_numpy(zero_copy_only=False)
    valid = pc.is_valid(column).to_numpy(zero_copy_only=False)
    lo, hi = (_ticks(t, unit) for t in (earliest, latest))

    def shown(i: int) -> str:
        return str(pc.cast(column.slice(i, 1), pa.string())[0].as_py())

    _flag(
        valid & (ticks < lo),
        lambda i: (
            f"event_ts {shown(i)} is more than {limits.max_event_age_days:g} days before "
            f"{(limits.reference_time or now or 'now')}: outside the accepted event-time window"
        ),
        problems,
    )
    _flag(
        valid & (ticks > hi),
        lambda i: (
            f"event_ts {shown(i)} is more than {limits.max_event_lead_s:g} s in the "
            "future: outside the accepted event-time window (a producer clock or unit error?)"
        ),
        problems,
    )


def _check_numbers(batch: pa.RecordBatch, problems: dict[int, list[str]]) -> None:
    """The score and the optional probabilities: a NaN in Parquet is a value, not a null."""
    for name in ("score", "confidence", "risk_score"):
        column = batch.column(name)
        values = pc.fill_null(column, 0.0).to_numpy(zero_copy_only=False)
        for i in np.flatnonzero(~np.isfinite(values.astype(np.float64))):
            problems[int(i)].append(f"{name} must be a finite number")


def _ticks(moment: datetime, unit: str) -> int:
    per_second = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[unit]
    micros = (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    return int(micros * per_second // 1_000_000)


def _per_row(flags: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Per-row count of true flags in a list column given its offsets."""
    cumulative = np.concatenate([[0], np.cumsum(flags, dtype=np.int64)])
    return np.asarray(cumulative[offsets[1:]] - cumulative[offsets[:-1]])


def _check_features(
    batch: pa.RecordBatch, limits: RecordLimits, problems: dict[int, list[str]]
) -> None:
    features: pa.MapArray = batch.column("features")
    offsets = features.offsets.to_numpy()
    counts = offsets[1:] - offsets[:-1]
    values = features.items.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    with np.errstate(invalid="ignore"):
        not_finite = ~np.isfinite(values)
        too_big = np.abs(np.where(not_finite, 0.0, values)) > limits.max_feature_magnitude
    names = features.keys
    long_name = (pc.utf8_length(names).to_numpy(zero_copy_only=False) > limits.max_name_length) | (
        ~pc.is_valid(names).to_numpy(zero_copy_only=False)
    )
    _flag(
        counts > limits.max_features,
        lambda i: f"{counts[i]} features: more than max_features {limits.max_features}",
        problems,
    )
    _flag(
        _per_row(not_finite, offsets) > 0,
        lambda i: "features must be finite numbers (NaN or infinity found)",
        problems,
    )
    _flag(
        _per_row(too_big, offsets) > 0,
        lambda i: (
            f"a feature's magnitude exceeds {limits.max_feature_magnitude:.4g}, the "
            "largest the explainers' float32 can hold"
        ),
        problems,
    )
    _flag(
        _per_row(long_name, offsets) > 0,
        lambda i: f"a feature name is empty-keyed or longer than {limits.max_name_length}",
        problems,
    )
    empty = pc.is_valid(batch.column("features")).to_numpy(zero_copy_only=False) & (counts == 0)
    if "text" in batch.schema.names:  # a text model's record carries its input in `text`
        empty &= ~pc.is_valid(batch.column("text")).to_numpy(zero_copy_only=False)
    _flag(empty, lambda i: "features must hold at least one name -> number", problems)
    # A map may repeat a key (Parquet allows it, JSON objects do not): which value is meant?
    first, last = int(offsets[0]), int(offsets[-1])
    pairs = pa.table(
        {"row": np.repeat(np.arange(len(counts)), counts), "name": names.slice(first, last - first)}
    )
    repeated = pairs.group_by(["row", "name"]).aggregate([([], "count_all")])
    twice = pc.greater(repeated["count_all"], 1)
    dup_rows = np.zeros(len(counts), dtype=bool)
    dup_rows[pc.filter(repeated["row"], twice).to_numpy(zero_copy_only=False)] = True
    _flag(dup_rows, lambda i: "a feature name appears twice in the record", problems)


def _check_texts(
    batch: pa.RecordBatch, limits: RecordLimits, problems: dict[int, list[str]]
) -> None:
    bounds = [(name, "max_text_length", limits.max_text_length) for name in _OPTIONAL_TEXT]
    if "text" in batch.schema.names:
        bounds.append(("text", "max_input_text_length", limits.max_input_text_length))
    for name, setting, bound in bounds:
        lengths = pc.fill_null(pc.utf8_length(batch.column(name)), 0).to_numpy(zero_copy_only=False)
        for i in np.flatnonzero(lengths > bound):
            problems[int(i)].append(
                f"{name} has {lengths[i]} characters, more than {setting} {bound}"
            )
    flags: pa.ListArray = batch.column("flags")
    offsets = flags.offsets.to_numpy()
    counts = offsets[1:] - offsets[:-1]
    long_flag = pc.fill_null(pc.utf8_length(flags.values), 0).to_numpy(zero_copy_only=False) > (
        limits.max_name_length
    )
    _flag(
        counts > limits.max_flags,
        lambda i: f"{counts[i]} flags: more than max_flags {limits.max_flags}",
        problems,
    )
    _flag(
        _per_row(long_flag, offsets) > 0,
        lambda i: f"a flag is longer than {limits.max_name_length} characters",
        problems,
    )
