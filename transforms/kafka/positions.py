"""Where a partition resumes: the group's committed offset and the windows finished with it."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence

from whylake.transforms.kafka.config import KafkaReadConfig

log = logging.getLogger(__name__)

_METADATA_MAX_CHARS = 3500  # Kafka's default offset.metadata.max.bytes is 4096


def committed_positions(
    config: KafkaReadConfig, partitions: Sequence[int], timeout_s: float = 60.0
) -> dict[int, tuple[int, dict[int, int | None]]]:
    """Per partition: where to resume (committed offset, else the earliest) and the finished
    windows recorded with that commit (their end, epoch ms -> the highest offset each owns).

    Retries while the broker is unreachable or its group coordinator is still loading (a
    freshly started broker answers NOT_COORDINATOR for a few seconds); raises after timeout_s.
    """
    from confluent_kafka import KafkaException

    deadline = time.monotonic() + timeout_s
    wait = 0.2
    while True:
        try:
            return _committed_positions_once(config, partitions)
        except KafkaException as exc:
            if time.monotonic() + wait > deadline:
                raise
            log.info("committed offsets of %s not readable yet (%s); retrying", config.topic, exc)
            time.sleep(wait)
            wait = min(2.0, wait * 2)


def _committed_positions_once(
    config: KafkaReadConfig, partitions: Sequence[int]
) -> dict[int, tuple[int, dict[int, int | None]]]:
    from confluent_kafka import OFFSET_INVALID, TopicPartition

    consumer = config.consumer()
    try:
        wanted = [TopicPartition(config.topic, p) for p in partitions]
        found = {tp.partition: tp for tp in consumer.committed(wanted, timeout=10)}
        out = {}
        for p in partitions:
            tp = found[p]
            if tp.offset == OFFSET_INVALID or tp.offset < 0:
                low, _ = consumer.get_watermark_offsets(TopicPartition(config.topic, p), timeout=10)
                out[p] = (low, {})
            else:
                out[p] = (tp.offset, _finished_from_metadata(tp.metadata))
        return out
    finally:
        consumer.close()


def _finished_from_metadata(metadata: str | None) -> dict[int, int | None]:
    """Finished window end (epoch ms) -> the highest offset it owns (None: not recorded)."""
    if not metadata:
        return {}
    try:
        out: dict[int, int | None] = {}
        for entry in json.loads(metadata).get("finished", []):
            if isinstance(entry, list):
                end, upto = entry
                out[int(end)] = int(upto)
            else:  # written before the offsets were recorded: the whole window is finished
                out[int(entry)] = None
        return out
    except (ValueError, AttributeError, TypeError):
        log.warning("ignoring unreadable offset metadata %r", metadata)
        return {}
