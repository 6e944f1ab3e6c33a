"""The typed, frozen settings of the batch and the streaming job, sharing one StoreConfig.

They are built once, on the machine that launches the pipeline (`whylake.jobs.options` turns
command-line options and the environment into them), and travel with the pipeline: nothing on
a worker reads the environment or a configuration file of its own.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any

from whylake.lake.catalog import CatalogConfig, RetentionConfig
from whylake.lake.failpoints import Failpoints
from whylake.lake.opensearch import OpenSearchConfig
from whylake.lake.storage import StorageConfig
from whylake.schemas.errors import ConfigError, SecretNotConfiguredError
from whylake.schemas.explanation_policy import ExplanationPolicies
from whylake.schemas.limits import RecordLimits
from whylake.schemas.pii import DEFAULT_PII_FIELDS, PiiPolicy
from whylake.schemas.secrets import Secret
from whylake.transforms.explainers.config import ExplainConfig
from whylake.transforms.kafka import KafkaReadConfig
from whylake.transforms.sampling.policy import SamplingPolicies


def new_run_id(prefix: str = "run") -> str:
    """A fresh run id, e.g. `run-3f2a9c1b7d4e`."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@dataclass(frozen=True)
class StoreConfig:
    """What the stages both jobs share need: models, policies, the user-id key, tables, replica."""

    registry_root: str
    policies: SamplingPolicies
    hash_key: Secret  # keys the user-id hash; never stored, shown only as a fingerprint
    catalog: CatalogConfig
    explain: ExplainConfig = field(default_factory=ExplainConfig)
    device: str | None = None  # None: cuda when the worker has one, else cpu
    opensearch: OpenSearchConfig | None = None  # the hot replica, when configured
    run_id: str = field(default_factory=new_run_id)
    # Per tenant: explainer depth by trust tier and risk, review thresholds, templates
    # (None: the shipped schemas/policies/explanation.yaml).
    explanation_policies: ExplanationPolicies | None = None
    # Personal fields of a record: stored only as keyed hashes, dead letters included.
    pii_fields: tuple[str, ...] = DEFAULT_PII_FIELDS
    # The contract's limits (event-time window, magnitudes, sizes), checked before any use.
    limits: RecordLimits = field(default_factory=RecordLimits)
    # |re-scored - logged score| above this counts as an offline vs runtime mismatch.
    score_tolerance: float = 1e-3
    # Snapshot history to keep, at least; None: each table's own (184 days where it has none).
    retention: RetentionConfig | None = None
    failpoints: Failpoints = field(default_factory=Failpoints)  # testing only: WHYLAKE_FAILPOINTS

    def __post_init__(self) -> None:
        if not isinstance(self.hash_key, Secret):
            raise SecretNotConfiguredError(
                "no user-id hash key: set WHYLAKE_HASH_KEY (or --hash-key-file) to a secret of "
                "your own; user ids are stored only as HMAC-SHA256 under it"
            )
        if not self.registry_root:
            raise ConfigError("registry_root must name the model registry folder")
        if not self.run_id:
            raise ConfigError("run_id must not be empty")
        self.pii()  # checks the fields

    def pii(self) -> PiiPolicy:
        """Which fields are personal data, and the key their hashes are made under."""
        return PiiPolicy(self.hash_key, self.pii_fields)

    def describe(self) -> dict[str, Any]:
        """The settings a run manifest records (the key only as its fingerprint)."""
        return {
            "run_id": self.run_id,
            "registry_root": self.registry_root,
            "policy_version": self.policies.version,
            "hash_key": {"source": self.hash_key.source, "fingerprint": self.hash_key.fingerprint},
            "catalog": {"name": self.catalog.name, **self.catalog.describe()},
            "explain": asdict(self.explain),
            "device": self.device,
            "opensearch": self.opensearch.url if self.opensearch else None,
            "pii_fields": list(self.pii_fields),
            "limits": {
                k: str(v) if k == "reference_time" else v for k, v in asdict(self.limits).items()
            },
            "score_tolerance": self.score_tolerance,
            "retention_days": self.retention.days if self.retention else None,
            "failpoints": self.failpoints.describe() or None,
        }


@dataclass(frozen=True)
class BatchJobConfig:
    """One batch run: which files, which slice of them, on which runner."""

    inputs: tuple[str, ...]
    store: StoreConfig
    day: date | None = None  # only records whose event_ts falls on this UTC day
    tenant: str | None = None  # only this tenant's records
    runner: str = "FnApiRunner"
    runner_args: tuple[str, ...] = ()
    batch_rows: int = 50_000
    # A run in which more of the sampled records than this share fail to explain has failed
    # (exit code 1), even though every failure is in the dead letters.
    max_failed_share: float = 0.05
    # How to reach the inputs (s3://, gs://, local): endpoints and credentials.
    storage: StorageConfig = field(default_factory=StorageConfig)

    def __post_init__(self) -> None:
        if not self.inputs:
            raise ConfigError("give at least one --input path or glob")
        if self.batch_rows <= 0:
            raise ConfigError(f"batch_rows must be positive, got {self.batch_rows}")
        if not 0 <= self.max_failed_share <= 1:
            raise ConfigError(f"max_failed_share must be in [0, 1], got {self.max_failed_share}")

    @property
    def run_id(self) -> str:
        return self.store.run_id

    def describe(self) -> dict[str, Any]:
        """The settings recorded in the run manifest."""
        return {
            **self.store.describe(),
            "inputs": list(self.inputs),
            "storage": self.storage.describe(),
            "day": self.day.isoformat() if self.day else None,
            "tenant": self.tenant,
            "runner": self.runner,
            "runner_args": list(self.runner_args),
            "batch_rows": self.batch_rows,
            "max_failed_share": self.max_failed_share,
        }


@dataclass(frozen=True)
class StreamJobConfig:
    """The streaming job: a Kafka topic, event-time windows, a portable runner."""

    topic: str
    store: StoreConfig
    bootstrap_servers: str = "127.0.0.1:9092"
    group_id: str = "whylake-stream"
    # The latency trade-off. Fixed event-time windows fire when the watermark passes their
    # end, so a record waits for the rest of its window (window_s / 2 on average, window_s at
    # most) plus max_out_of_orderness_s before its sample is explained and committed. Shorter
    # windows: lower latency, but more and smaller Iceberg commits (one per window, tenant
    # and day: `whylake compact` merges the files later) and smaller sampling strata (the
    # budget applies per window). Longer windows: fewer, larger commits, higher latency.
    window_s: float = 5.0
    # Records of a window that already fired are added as a late pane while the watermark is
    # less than this past the window's end; later than that they are dead-lettered (stage
    # `late`). Offsets are committed only after this has passed, so it also bounds replay.
    allowed_lateness_s: float = 30.0
    max_out_of_orderness_s: float = 1.0
    # Beam's own allowed lateness is allowed_lateness_s + this: a record the reader judged in
    # time cannot be dropped by the runner while it travels from the reader to the window.
    late_margin_s: float = 5.0
    # How long one poll of a partition collects messages (up to 5,000): each poll is one
    # bundle, validated in one call of the expectation suite, which costs ~150 ms per call
    # whatever its size (bench/streaming.py's profile). Longer polls: far less CPU per record
    # at moderate rates, up to this much more latency.
    poll_s: float = 0.5
    batch_rows: int = 5000
    runner: str = "PrismRunner"
    prism_location: str | None = None  # a local Prism binary (Beam would download one)
    runner_args: tuple[str, ...] = ()
    # Extra librdkafka settings for production brokers, e.g. security.protocol=SASL_SSL;
    # credential-like values are Secrets.
    kafka_config: tuple[tuple[str, str | Secret], ...] = ()

    def __post_init__(self) -> None:
        if self.window_s <= 0:
            raise ConfigError(f"window_s must be positive, got {self.window_s}")
        if self.allowed_lateness_s < 0:
            raise ConfigError(f"allowed_lateness_s must not be negative: {self.allowed_lateness_s}")
        if self.poll_s <= 0:
            raise ConfigError(f"poll_s must be positive: {self.poll_s}")
        if self.late_margin_s < 0:
            raise ConfigError(f"late_margin_s must not be negative: {self.late_margin_s}")
        if self.runner == "PrismRunner" and not self.prism_location:
            raise ConfigError(
                "the Prism runner needs a local binary: give --prism-location (make up builds "
                "one into .infra/cache/prism/<version>/bin/prism)"
            )
        self.kafka()  # checks topic, servers and poll settings

    @property
    def run_id(self) -> str:
        return self.store.run_id

    def kafka(self) -> KafkaReadConfig:
        return KafkaReadConfig(
            topic=self.topic,
            bootstrap_servers=self.bootstrap_servers,
            group_id=self.group_id,
            max_out_of_orderness_s=self.max_out_of_orderness_s,
            window_s=self.window_s,
            allowed_lateness_s=self.allowed_lateness_s,
            poll_timeout_s=self.poll_s,
            consumer_config=self.kafka_config,
        )

    def describe(self) -> dict[str, Any]:
        """The settings a run reports (Kafka credentials masked)."""
        return {
            **self.store.describe(),
            "topic": self.topic,
            "bootstrap_servers": self.bootstrap_servers,
            "group_id": self.group_id,
            "window_s": self.window_s,
            "allowed_lateness_s": self.allowed_lateness_s,
            "max_out_of_orderness_s": self.max_out_of_orderness_s,
            "late_margin_s": self.late_margin_s,
            "poll_s": self.poll_s,
            "runner": self.runner,
            "runner_args": list(self.runner_args),
            "kafka_config": {
                k: repr(v) if isinstance(v, Secret) else v for k, v in self.kafka_config
            },
        }
