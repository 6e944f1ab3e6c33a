"""Where the Kafka reader reads from: topic, brokers, group and poll settings; one message."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from whylake.schemas.errors import ConfigError, InvalidRecordError
from whylake.schemas.secrets import Secret


@dataclass(frozen=True)
class KafkaReadConfig:
    """Which topic, how to reach it, and how the reader polls and estimates its watermark."""

    topic: str
    bootstrap_servers: str = "127.0.0.1:9092"
    group_id: str = "whylake-stream"
    max_records_per_poll: int = 5000
    poll_timeout_s: float = 0.2
    max_out_of_orderness_s: float = 1.0  # the watermark trails the newest timestamp by this
    # Each poll is cut into one batch per event-time window of this size (the pipeline's
    # window), so a batch is a single Beam element that lands in a single window.
    window_s: float = 5.0
    # A record whose window ended more than this before the reader's watermark is late: it
    # is emitted at the watermark, flagged, and dead-lettered downstream instead of being
    # dropped by the runner (None: never flag, let the runner decide).
    allowed_lateness_s: float | None = None
    # Extra librdkafka settings (TLS, SASL); credential-like values are Secrets.
    consumer_config: tuple[tuple[str, str | Secret], ...] = ()

    def __post_init__(self) -> None:
        if not self.topic:
            raise ConfigError("topic must not be empty")
        if not self.bootstrap_servers:
            raise ConfigError("bootstrap_servers must not be empty, e.g. 127.0.0.1:9092")
        if self.max_records_per_poll <= 0 or self.poll_timeout_s <= 0:
            raise ConfigError("max_records_per_poll and poll_timeout_s must be positive")
        if self.max_out_of_orderness_s < 0:
            raise ConfigError("max_out_of_orderness_s must not be negative")
        if self.window_s <= 0:
            raise ConfigError(f"window_s must be positive, got {self.window_s}")
        if self.allowed_lateness_s is not None and self.allowed_lateness_s < 0:
            raise ConfigError("allowed_lateness_s must not be negative")

    def librdkafka_settings(self) -> dict[str, str]:
        """The extra settings as librdkafka takes them (secrets revealed, for the client only)."""
        return {k: v.reveal() if isinstance(v, Secret) else v for k, v in self.consumer_config}

    def consumer(self, **overrides: Any) -> Any:
        """A consumer of this group that never subscribes (partitions are assigned by Beam)."""
        from confluent_kafka import Consumer

        settings: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "group.id": self.group_id,
            "enable.auto.commit": False,  # offsets are committed after Iceberg, never before
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
            "socket.connection.setup.timeout.ms": 5000,
            **self.librdkafka_settings(),
            **overrides,
        }
        return Consumer(settings)

    def partitions(self, timeout_s: float = 60.0) -> list[int]:
        """The topic's partitions, asking the broker; retries while it is unreachable (a
        broker restarting while the job starts) and raises after timeout_s."""
        import time

        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        admin = AdminClient(
            {"bootstrap.servers": self.bootstrap_servers, **self.librdkafka_settings()}
        )
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                meta = admin.list_topics(topic=self.topic, timeout=min(10.0, timeout_s))
                break
            except KafkaException:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(1.0)
        topic = meta.topics.get(self.topic)
        if topic is None or topic.error is not None or not topic.partitions:
            raise InvalidRecordError(
                f"Kafka topic {self.topic!r} on {self.bootstrap_servers} does not exist "
                f"({topic.error if topic else 'unknown topic'}); create it first"
            )
        return sorted(topic.partitions)


class KafkaBatch(NamedTuple):
    """The messages of one poll of one partition that fall into one event-time window.

    Message i covers offsets [claimed_from[i], offsets[i]]; together a partition's batches
    tile its offsets without gaps. `late` batches hold records past the allowed lateness,
    re-timestamped at the reader's watermark so that no runner drops them unseen.
    """

    topic: str
    partition: int
    offsets: tuple[int, ...]
    claimed_from: tuple[int, ...]
    timestamps_ms: tuple[int, ...]
    values: tuple[bytes | None, ...]
    late: bool = False

    def records(self) -> list[KafkaRecord]:
        """The batch as single records (for tests and tools)."""
        return [
            KafkaRecord(self.topic, self.partition, o, c, t, None, v)
            for o, c, t, v in zip(
                self.offsets, self.claimed_from, self.timestamps_ms, self.values, strict=True
            )
        ]


class KafkaRecord(NamedTuple):
    """One Kafka message; it covers offsets [claimed_from, offset] of its partition."""

    topic: str
    partition: int
    offset: int
    claimed_from: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
