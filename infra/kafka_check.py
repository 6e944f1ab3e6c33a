"""Kafka health check for infra/services.sh: the broker answers, a topic can be created and listed.

Exit 0 when healthy, 1 otherwise (the reason on stderr). Needs confluent-kafka.
"""

from __future__ import annotations

import argparse
import sys

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args()
    admin = AdminClient({"bootstrap.servers": args.bootstrap, "socket.timeout.ms": 3000})
    try:
        topics = admin.list_topics(timeout=args.timeout).topics
        if args.topic not in topics:
            future = admin.create_topics(
                [NewTopic(args.topic, num_partitions=1, replication_factor=1)],
                operation_timeout=args.timeout,
                request_timeout=args.timeout,
            )[args.topic]
            try:
                future.result(timeout=args.timeout)
            except KafkaException as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise
            topics = admin.list_topics(timeout=args.timeout).topics
        if args.topic not in topics:
            print(f"topic {args.topic} not listed after creation", file=sys.stderr)
            return 1
        meta = topics[args.topic]
        if meta.error is not None or not meta.partitions:
            print(f"topic {args.topic} not ready: {meta.error}", file=sys.stderr)
            return 1
        return 0
    except Exception as exc:  # noqa: BLE001 - any failure means "not healthy yet"
        print(f"kafka at {args.bootstrap} not healthy: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
