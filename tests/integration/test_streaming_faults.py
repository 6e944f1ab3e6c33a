"""The streaming job under repeated faults, as Kafka's own exactly-once system tests run it.

Events are produced at a steady rate to a private broker while the job is SIGKILLed and
restarted three times and the broker is hard-killed (SIGKILL) and restarted twice; the policy
explains every event, and malformed messages are planted among them. Afterwards every valid
event's explanation is in Iceberg exactly once and in OpenSearch exactly once (set equality
of ids, not counts), and the dead letters are exactly the planted messages.

CI runs 20,000 events; `WHYLAKE_FAULT_EVENTS=100000` runs the full count (the figures are
printed: run with -s).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_streaming import (
    OPENSEARCH,
    REPO,
    StreamJob,
    _create_topic,
    _dead_letters,
    _events,
    _explanations,
    _free_ports,
    _offsets_at_end,
    _policy,
    _runs,
    job_factory,
    registry_root,
)

__all__ = ["job_factory", "registry_root"]

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EVENTS = int(os.environ.get("WHYLAKE_FAULT_EVENTS", "20000"))
RATE = float(os.environ.get("WHYLAKE_FAULT_RATE", "400"))  # events/s, the producer's pace
PLANTED = 25  # malformed messages among the events
# (fraction of the events produced, fault): three job kills, two broker kills, interleaved.
SCHEDULE = (
    (0.12, "kill job"),
    (0.25, "kill broker"),
    (0.40, "kill job"),
    (0.55, "kill broker"),
    (0.70, "kill job"),
)


class _PrivateBroker:
    """A Kafka broker of this test's own (infra/services.sh with a private run folder)."""

    def __init__(self, run: Path) -> None:
        port, controller = _free_ports(2)
        self.run = run
        self.bootstrap = f"127.0.0.1:{port}"
        self.env = {
            **os.environ,
            "WHYLAKE_INFRA_RUN": str(run),
            "WHYLAKE_KAFKA_PORT": str(port),
            "WHYLAKE_KAFKA_CONTROLLER_PORT": str(controller),
        }

    def services(self, action: str) -> None:
        done = subprocess.run(
            ["bash", "infra/services.sh", action, "kafka"],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, f"services.sh {action} kafka:\n{done.stdout}{done.stderr}"

    def hard_kill(self) -> None:
        """SIGKILL the broker process: no clean shutdown, as a crashed host would."""
        pid = int((self.run / "kafka" / "pid").read_text().strip())
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)
        pytest.fail(f"broker {pid} did not die after SIGKILL")


class _Producer(threading.Thread):
    """Produces the events at RATE/s (event_ts = now), planting malformed messages."""

    def __init__(self, bootstrap: str, topic: str, events: list[dict[str, Any]]) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.events = bootstrap, topic, events
        self.produced = 0
        self.planted: set[str] = set()  # the planted messages' sources, kafka://topic/p@offset
        self.error: BaseException | None = None
        every = max(1, len(events) // PLANTED)
        self.plant_at = {i * every + every // 2 for i in range(PLANTED)}

    def run(self) -> None:
        from confluent_kafka import Producer

        try:
            producer = Producer(
                {
                    "bootstrap.servers": self.bootstrap,
                    "enable.idempotence": True,  # retries across broker kills keep order
                    "linger.ms": 5,
                    "message.timeout.ms": 900_000,  # outlive a broker restart
                    "queue.buffering.max.messages": 1_000_000,
                }
            )
            t0 = time.monotonic()
            for i, event in enumerate(self.events):
                now = datetime.now(UTC)
                event["event_ts"] = now.isoformat()
                ms = int(now.timestamp() * 1000)
                value = json.dumps(event).encode()
                producer.produce(self.topic, value, key=event["request_id"], timestamp=ms)
                if i in self.plant_at:
                    bad = f'{{"tenant_id": "acme", "request_id": "{self.topic}-bad-{i}", oops'
                    producer.produce(
                        self.topic, bad.encode(), timestamp=ms, on_delivery=self._delivered
                    )
                self.produced = i + 1
                ahead = (i + 1) / RATE - (time.monotonic() - t0)
                producer.poll(0)
                if ahead > 0:
                    time.sleep(ahead)
            left = producer.flush(900)
            assert left == 0, f"{left} messages were never delivered"
        except BaseException as exc:  # noqa: BLE001 — re-raised by the test
            self.error = exc

    def _delivered(self, err: Any, msg: Any) -> None:
        if err is None:
            self.planted.add(f"kafka://{msg.topic()}/{msg.partition()}@{msg.offset()}")


def _replica_counts(prefix: str) -> Counter[str]:
    """explanation_id -> documents in OpenSearch for this test's requests (scrolls)."""
    from opensearchpy import OpenSearch, helpers

    client = OpenSearch(hosts=[OPENSEARCH], timeout=60)
    try:
        client.indices.refresh(index="whylake-explanations-*")
        hits = helpers.scan(
            client,
            index="whylake-explanations-*",
            query={"query": {"prefix": {"request_id": prefix}}, "_source": False},
            size=5000,
        )
        return Counter(h["_id"] for h in hits)
    finally:
        client.close()


def _count(home: Path) -> int:
    return len(_explanations(home))


def _wait(what: str, predicate: Callable[[], bool], timeout_s: float, job: StreamJob) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        if job.proc is not None and job.proc.poll() is not None:
            pytest.fail(
                f"the stream job exited ({job.proc.returncode}) before {what}:\n{job.log()}"
            )
        time.sleep(1.0)
    pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}:\n{job.log()}")


@pytest.mark.timeout(max(1800, int(EVENTS / 20)))
def test_every_event_explained_exactly_once_through_job_kills_and_broker_crashes(
    job_factory: Callable[..., StreamJob], registry_root: Path, tmp_path: Path
) -> None:
    broker = _PrivateBroker(tmp_path / "infra")
    broker.services("up")
    t0 = time.monotonic()
    figures: dict[str, Any] = {"events": EVENTS, "planted_malformed": PLANTED}
    try:
        topic = _create_topic(broker.bootstrap)
        job = job_factory(topic, _policy(tmp_path, budget=10_000_000), broker.bootstrap)
        per_tenant = -(-EVENTS // 2)
        events = _events(registry_root, topic, per_tenant=per_tenant)[:EVENTS]
        producer = _Producer(broker.bootstrap, topic, events)
        job.start()
        producer.start()
        kills = broker_kills = 0
        for fraction, fault in SCHEDULE:
            _wait(
                f"{fraction:.0%} of the events produced",
                lambda f=fraction: producer.produced >= f * EVENTS or producer.error is not None,
                EVENTS / RATE * 3 + 600,
                job,
            )
            if fault == "kill job":
                # Only a job that has committed since it started dies mid-work, not mid-start.
                before = _count(job.home)
                _wait("a commit by this start", lambda b=before: _count(job.home) > b, 300, job)
                job.kill()
                kills += 1
                job.start()
            else:
                broker.hard_kill()
                broker_kills += 1
                time.sleep(2)
                broker.services("up")
        producer.join(timeout=EVENTS / RATE * 3 + 900)
        assert producer.error is None, producer.error
        assert not producer.is_alive(), "the producer did not finish"
        _wait(
            "every offset committed",
            lambda: _offsets_at_end(topic, broker.bootstrap),
            max(900, EVENTS / 50),
            job,
        )
        assert job.stop() == 0, job.log()
        figures["seconds"] = round(time.monotonic() - t0, 1)

        rows = _explanations(job.home)
        ids = Counter(r["explanation_id"] for r in rows)
        requests = Counter(r["request_id"] for r in rows)
        expected = {e["request_id"] for e in events}
        figures |= {
            "job_kills": kills,
            "broker_kills": broker_kills,
            "iceberg_rows": len(rows),
            "duplicates": sum(c - 1 for c in ids.values()) + sum(c - 1 for c in requests.values()),
            "lost": len(expected - set(requests)),
            "unexpected": len(set(requests) - expected),
        }
        replica = _replica_counts(topic)
        figures["replica_docs"] = sum(replica.values())
        figures["replica_mismatch"] = len(set(replica) ^ set(ids))
        dead = _dead_letters(job.home)
        figures["dead_letters"] = len(dead)
        print("\nstreaming fault test:", json.dumps(figures, sort_keys=True))

        assert kills >= 3 and broker_kills >= 2
        assert set(requests) == expected, "an event was lost (or one appeared from nowhere)"
        assert max(ids.values()) == 1 and max(requests.values()) == 1, "an event twice in Iceberg"
        assert replica == Counter(set(ids)), "OpenSearch does not hold exactly the Iceberg rows"
        assert len(producer.planted) == PLANTED
        assert {d["source"] for d in dead} == producer.planted
        assert all(d["stage"] == "read" for d in dead) and len(dead) == PLANTED
        starts = [r for r in _runs(job.home) if r["status"] == "started"]
        assert len(starts) == kills + 1  # every killed run is visible as never finished
    finally:
        with contextlib.suppress(Exception):
            broker.services("down")
