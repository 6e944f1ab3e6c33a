"""The streaming job on Prism against a real Kafka broker and OpenSearch node: exactly once.

Each test runs `whylake stream` in a subprocess (its own process group, so Prism dies with it),
produces events with event_ts = now (the Kafka timestamp too), and checks the tables.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.conftest import TEST_HASH_KEY
from whylake.jobs.demo_data import _jsonable, tenant_table
from whylake.jobs.demo_models import register_demo_models
from whylake.lake.catalog import (
    DEAD_LETTERS,
    EXPLANATIONS,
    METRICS,
    RUNS,
    CatalogConfig,
    ensure_tables,
    open_catalog,
)
from whylake.registry.store import ModelRegistry
from whylake.transforms.sampling.policy import default_policy_file

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]
PRISM = REPO / ".infra/cache/prism/v2.77.0/bin/prism"
KAFKA = os.environ.get("WHYLAKE_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
OPENSEARCH = os.environ.get("WHYLAKE_OPENSEARCH_URL", "http://127.0.0.1:9200")
POLICY = default_policy_file()
WINDOW_S = 2
TENANTS = ("acme", "globex")


def _require_services(bootstrap: str = KAFKA) -> None:
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(
        {"bootstrap.servers": bootstrap, "socket.connection.setup.timeout.ms": 3000}
    )
    try:
        admin.list_topics(timeout=5)
    except KafkaException as exc:
        pytest.fail(f"Kafka is not reachable at {bootstrap} ({exc}): run `make up`")
    try:
        urllib.request.urlopen(OPENSEARCH, timeout=5).close()
    except OSError as exc:
        pytest.fail(f"OpenSearch is not reachable at {OPENSEARCH} ({exc}): run `make up`")
    if not PRISM.exists():
        pytest.skip(
            f"the Prism runner binary is missing ({PRISM}): `infra/services.sh fetch prism` "
            "(or `make up-all`) builds it from the Go module proxy"
        )


@pytest.fixture(scope="module")
def registry_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _require_services()
    root = tmp_path_factory.mktemp("stream-models") / "models"
    register_demo_models(ModelRegistry(root))
    return root


class StreamJob:
    """One `whylake stream` subprocess; restartable; killed with its process group."""

    def __init__(
        self,
        home: Path,
        topic: str,
        policy: Path,
        registry: Path,
        bootstrap: str,
        runner_args: tuple[str, ...] = (),
    ):
        self.home, self.topic, self.policy, self.registry = home, topic, policy, registry
        self.bootstrap = bootstrap
        # Default: Prism. Anything else: e.g. ("--runner=FlinkRunner", "--runner-arg=...").
        self.runner_args = runner_args or (f"--prism-location={PRISM}",)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = open(self.home / f"job-{self.starts}.log", "wb")  # noqa: SIM115 — the job owns it
        cmd = [
            sys.executable,
            "-m",
            "whylake.jobs.cli",
            "stream",
            f"--topic={self.topic}",
            f"--bootstrap-servers={self.bootstrap}",
            f"--group-id=test-{self.topic}",
            f"--home={self.home}",
            f"--registry={self.registry}",
            f"--policy={self.policy}",
            f"--window-s={WINDOW_S}",
            "--allowed-lateness-s=2",
            f"--opensearch-url={OPENSEARCH}",
            *self.runner_args,
        ]
        env = {**os.environ, "WHYLAKE_HASH_KEY": TEST_HASH_KEY.reveal()}
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def kill(self) -> None:
        """SIGKILL the job and everything it started (Prism): a crash, nothing flushed."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> int:
        """SIGTERM, as an operator would: the job cancels the pipeline and exits 0."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        finally:
            self.kill()

    def log(self) -> str:
        return "\n".join(
            (self.home / f"job-{i}.log").read_text(errors="replace")[-3000:]
            for i in range(1, self.starts + 1)
        )


@pytest.fixture
def job_factory(tmp_path: Path, registry_root: Path) -> Iterator[Callable[..., StreamJob]]:
    jobs: list[StreamJob] = []

    def make(
        topic: str, policy: Path, bootstrap: str = KAFKA, runner_args: tuple[str, ...] = ()
    ) -> StreamJob:
        home = tmp_path / f"home-{len(jobs)}"
        home.mkdir()
        ensure_tables(open_catalog(CatalogConfig.embedded(home)))
        job = StreamJob(home, topic, policy, registry_root, bootstrap, runner_args)
        jobs.append(job)
        return job

    yield make
    for job in jobs:
        job.kill()


def _policy(tmp_path: Path, budget: int) -> Path:
    policy = yaml.safe_load(POLICY.read_text())
    policy["defaults"]["budget_per_day"] = budget
    for overrides in policy["tenants"].values():
        overrides.pop("budget_per_day", None)
    path = tmp_path / f"policy-{budget}.yaml"
    path.write_text(yaml.safe_dump(policy))
    return path


def _create_topic(bootstrap: str = KAFKA, partitions: int = 2) -> str:
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = f"whylake-test-{uuid.uuid4().hex[:10]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        future.result(timeout=30)
    return topic


def _events(registry: Path, prefix: str, per_tenant: int, seed: int = 3) -> list[dict[str, Any]]:
    """Valid records of the demo tenants, interleaved, with request ids unique to the test."""
    reg = ModelRegistry(registry)
    per = {
        t: [
            _jsonable(r)
            for r in tenant_table(reg, t, datetime.now(UTC).date(), per_tenant, seed).to_pylist()
        ]
        for t in TENANTS
    }
    out = []
    for i in range(per_tenant):
        for tenant in TENANTS:
            row = per[tenant][i]
            row["request_id"] = f"{prefix}-{tenant}-{i:05d}"
            out.append(row)
    return out


def _produce(
    topic: str,
    events: list[dict[str, Any]],
    rate: float,
    bootstrap: str = KAFKA,
    raw: tuple[bytes, ...] = (),
) -> None:
    """Produce at about `rate` events/s, stamping event_ts (and the Kafka timestamp) with now."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    t0 = time.monotonic()
    for i, event in enumerate(events):
        now = datetime.now(UTC)
        event["event_ts"] = now.isoformat()
        ms = int(now.timestamp() * 1000)
        producer.produce(topic, json.dumps(event).encode(), key=event["request_id"], timestamp=ms)
        if i == len(events) // 2:
            for value in raw:
                producer.produce(topic, value, timestamp=ms)
        ahead = (i + 1) / rate - (time.monotonic() - t0)
        if ahead > 0:
            producer.poll(0)
            time.sleep(ahead)
    assert producer.flush(60) == 0, "the producer could not deliver every event"


def _produce_at(topic: str, events: list[dict[str, Any]], when: datetime) -> None:
    """Produce events stamped (event_ts and Kafka timestamp) at `when`."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": KAFKA})
    for event in events:
        event["event_ts"] = when.isoformat()
        ms = int(when.timestamp() * 1000)
        producer.produce(topic, json.dumps(event).encode(), key=event["request_id"], timestamp=ms)
    assert producer.flush(60) == 0


def _wait_for(what: str, predicate: Callable[[], bool], timeout_s: float, job: StreamJob) -> None:
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


def _explanations(home: Path) -> list[dict[str, Any]]:
    table = open_catalog(CatalogConfig.embedded(home)).load_table(EXPLANATIONS)
    fields = ("explanation_id", "request_id", "tenant_id", "event_ts", "sampling_reason")
    return table.scan(selected_fields=(*fields, "stratum_size")).to_arrow().to_pylist()


def _runs(home: Path) -> list[dict[str, Any]]:
    table = open_catalog(CatalogConfig.embedded(home)).load_table(RUNS)
    return table.scan().to_arrow().to_pylist()


def _dead_letters(home: Path) -> list[dict[str, Any]]:
    table = open_catalog(CatalogConfig.embedded(home)).load_table(DEAD_LETTERS)
    return table.scan().to_arrow().to_pylist()


def _offsets_at_end(topic: str, bootstrap: str = KAFKA) -> bool:
    """Whether the job's group has committed every partition to its end."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"test-{topic}"})
    try:
        parts = consumer.list_topics(topic, timeout=5).topics[topic].partitions
        tps = [TopicPartition(topic, p) for p in parts]
        committed = consumer.committed(tps, timeout=5)
        ends = [consumer.get_watermark_offsets(tp, timeout=5)[1] for tp in tps]
        return all(c.offset == end for c, end in zip(committed, ends, strict=True))
    except KafkaException:
        return False
    finally:
        consumer.close()


def _replica_ids(prefix: str) -> Counter[str]:
    """explanation_id -> number of documents in OpenSearch, for this test's requests."""
    from opensearchpy import OpenSearch

    client = OpenSearch(hosts=[OPENSEARCH], timeout=30)
    pattern = "whylake-explanations-*"
    client.indices.refresh(index=pattern)
    hits = client.search(
        index=pattern,
        body={"query": {"prefix": {"request_id": prefix}}, "size": 10_000, "_source": False},
    )["hits"]["hits"]
    return Counter(h["_id"] for h in hits)


def _assert_once_everywhere(home: Path, prefix: str) -> list[dict[str, Any]]:
    rows = _explanations(home)
    ids = Counter(r["explanation_id"] for r in rows)
    requests = Counter(r["request_id"] for r in rows)
    assert max(ids.values(), default=1) == 1, "an explanation id is in Iceberg twice"
    assert max(requests.values(), default=1) == 1, "a request was explained twice"
    replica = _replica_ids(prefix)
    assert replica == Counter(ids), "OpenSearch does not hold exactly the Iceberg rows"
    return rows


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _always(event: dict[str, Any]) -> bool:
    """The default policy's always-explain rules (flags, confidence < 0.55, risk > 0.9)."""
    conf = event.get("confidence")
    return bool(
        set(event.get("flags") or ()) & {"flagged", "disputed", "high_risk"}
        or (conf is not None and conf < 0.55)
        or event.get("risk_score", 0) > 0.9
    )


def _hostile_values(
    template: dict[str, Any], topic: str
) -> tuple[list[bytes], dict[str, tuple[bytes, str]]]:
    """Damaged copies of a valid event: values the decoder refuses (a dead letter of stage
    read each), and request id -> (value, reason) for records past the contract's limits."""
    now = datetime.now(UTC).isoformat()
    good = {**template, "event_ts": now}
    first = next(iter(good["features"]))

    def event(name: str, **changes: Any) -> str:
        user = f"user-77{len(name):04d}"
        return json.dumps({**good, "request_id": f"{topic}-{name}", "user_id": user, **changes})

    unreadable = [
        b'{"tenant_id": "acme", "request_id": broken',
        b'{"user_id": "user-770001", "request_id": "bad-utf8", \xff\xfe}',
        b"[" * 5000 + b"]" * 5000,
        event("surrogate", label="x\ud800y").encode(),
        event("int-too-big", features={**good["features"], first: 10**400}).encode(),
    ]
    refused = {
        "far-future": (event("far-future", event_ts="9999-12-31T23:59:59Z"), "in the future"),
        "float32": (event("float32", features={**good["features"], first: 1e308}), "float32"),
        "tenant": (event("tenant", tenant_id="a" * 5000), "tenant id"),
        "path": (event("path", model_id="../globex/" + good["model_id"]), "model id"),
    }
    return unreadable, {f"{topic}-{k}": (v.encode(), why) for k, (v, why) in refused.items()}


def _window(ts: str | datetime) -> int:
    when = datetime.fromisoformat(ts) if isinstance(ts, str) else ts
    return int(when.timestamp() * 1000) // (WINDOW_S * 1000)


def test_sampled_events_land_once_in_iceberg_and_opensearch_and_a_malformed_one_dead_letters(
    job_factory: Callable[..., StreamJob], registry_root: Path, tmp_path: Path
) -> None:
    budget = 15
    topic = _create_topic()
    job = job_factory(topic, _policy(tmp_path, budget))
    events = _events(registry_root, topic, per_tenant=250)
    job.start()
    unreadable, refused = _hostile_values(events[0], topic)
    _produce(topic, events, rate=150, raw=(*unreadable, *(v for v, _ in refused.values())))
    # Three events from ten minutes ago, long past the 2 s allowed lateness: dead letters.
    # Produced once a window has committed, so the reader's watermark is surely past them.
    _wait_for("a first committed window", lambda: len(_explanations(job.home)) > 0, 90, job)
    late = _events(registry_root, f"{topic}-late", per_tenant=2)[:3]
    _produce_at(topic, late, datetime.now(UTC) - timedelta(minutes=10))
    _wait_for("every offset committed", lambda: _offsets_at_end(topic), 120, job)
    assert job.stop() == 0, job.log()

    rows = _assert_once_everywhere(job.home, topic)
    # Per (tenant, window) stratum: every always-explain event, min(k, population) sampled.
    population: Counter[tuple[str, int]] = Counter()
    for e in events:
        if not _always(e):
            population[(e["tenant_id"], _window(e["event_ts"]))] += 1
    always = {e["request_id"] for e in events if _always(e)}
    got_always = {r["request_id"] for r in rows if r["sampling_reason"].startswith("always:")}
    assert got_always == always
    sampled: Counter[tuple[str, int]] = Counter()
    for r in rows:
        if not r["sampling_reason"].startswith("always:"):
            key = (r["tenant_id"], _window(r["event_ts"]))
            sampled[key] += 1
            assert r["stratum_size"] == population[key], f"stratum {key} lost records"
    assert sampled == {k: min(budget, n) for k, n in population.items()}
    assert len(rows) < len(events), "the budget should have left events unexplained"

    letters = _dead_letters(job.home)
    # Hostile values, each a dead letter alone: the ones the decoder refuses at stage read,
    # the ones past the contract's limits at validate; no raw user id in any of them.
    read = [d for d in letters if d["stage"] == "read"]
    assert len(read) == len(unreadable), read
    assert all(d["source"].startswith(f"kafka://{topic}/") for d in read)
    assert any("broken" in d["record"] for d in read)
    validated = {d["request_id"]: d for d in letters if d["stage"] == "validate"}
    assert set(validated) == set(refused), validated
    for request, (_, reason) in refused.items():
        assert reason in validated[request]["error_message"], validated[request]
    assert "user-77" not in json.dumps(letters, default=str), "a raw user id in a dead letter"
    late_letters = [d for d in letters if d["stage"] == "late"]
    assert {d["request_id"] for d in late_letters} == {e["request_id"] for e in late}
    assert all(d["error_type"] == "LateRecord" for d in late_letters)
    hostile = len(unreadable) + len(refused)
    assert len(letters) == hostile + len(late)  # nothing else was refused

    # The manifest's counts are the pipeline's own, not zeros.
    (final,) = [r for r in _runs(job.home) if r["status"] == "stopped"]
    assert final["records_read"] == len(events) + hostile + len(late)
    assert final["records_invalid"] == hostile + len(late)
    assert final["records_committed"] == len(rows)
    assert final["records_sampled"] == final["records_explained"] == len(rows)
    assert final["records_failed"] == 0 and final["records_already_present"] == 0
    assert any("later than the allowed lateness" in w for w in final["warnings"])
    assert not any("not accounted for" in w for w in final["warnings"]), final["warnings"]

    # The shared stage measured every window pane (issue 9): per (tenant, window), the metrics
    # rows count exactly the explanations committed for it, and name the window.
    table = open_catalog(CatalogConfig.embedded(job.home)).load_table(METRICS)
    measured: Counter[tuple[str, int]] = Counter()
    for m in table.scan().to_arrow().to_pylist():
        assert m["window_start"] is not None and m["window_end"] > m["window_start"]
        measured[(m["tenant_id"], _window(m["window_start"]))] += m["explained"]
    assert measured == Counter((r["tenant_id"], _window(r["event_ts"])) for r in rows)


def test_killed_mid_stream_and_restarted_loses_nothing_and_doubles_nothing(
    job_factory: Callable[..., StreamJob], registry_root: Path, tmp_path: Path
) -> None:
    topic = _create_topic()
    job = job_factory(topic, _policy(tmp_path, budget=100_000))  # every event explained
    events = _events(registry_root, topic, per_tenant=300)
    before, after = events[: len(events) // 2], events[len(events) // 2 :]
    # The timing is the test's, not the machine's: the second half is produced only after the
    # kill, so the job always dies with work left, however fast it ran the first half.
    job.start()
    _produce(topic, before, rate=150)
    _wait_for("a first committed window", lambda: len(_explanations(job.home)) > 0, 90, job)
    job.kill()
    at_kill = len(_explanations(job.home))
    assert 0 < at_kill <= len(before)
    # The killed run is visible as started without a finish, not lost.
    (killed,) = _runs(job.home)
    assert killed["status"] == "started" and killed["finished_at"] is None
    _produce(topic, after, rate=300)  # while the job is down
    job.start()
    _wait_for("every offset committed", lambda: _offsets_at_end(topic), 150, job)
    assert job.stop() == 0, job.log()

    rows = _assert_once_everywhere(job.home, topic)
    assert {r["request_id"] for r in rows} == {e["request_id"] for e in events}
    statuses = sorted((r["run_id"] == killed["run_id"], r["status"]) for r in _runs(job.home))
    assert statuses == [(False, "started"), (False, "stopped"), (True, "started")]


def test_the_job_resumes_after_the_broker_stops_and_restarts(
    job_factory: Callable[..., StreamJob], registry_root: Path, tmp_path: Path
) -> None:
    # A private broker: stopping the shared one would break other suites running beside this.
    port, controller = _free_ports(2)
    env = {
        **os.environ,
        "WHYLAKE_INFRA_RUN": str(tmp_path / "infra"),
        "WHYLAKE_KAFKA_PORT": str(port),
        "WHYLAKE_KAFKA_CONTROLLER_PORT": str(controller),
    }
    bootstrap = f"127.0.0.1:{env['WHYLAKE_KAFKA_PORT']}"

    def broker(action: str) -> None:
        done = subprocess.run(
            ["bash", "infra/services.sh", action, "kafka"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=200,
        )
        assert done.returncode == 0, (
            f"infra/services.sh {action} kafka:\n{done.stdout}{done.stderr}"
        )

    broker("up")
    try:
        topic = _create_topic(bootstrap)
        job = job_factory(topic, _policy(tmp_path, budget=100_000), bootstrap)
        events = _events(registry_root, topic, per_tenant=100)
        half = len(events) // 2
        job.start()
        _produce(topic, events[:half], rate=100, bootstrap=bootstrap)
        _wait_for("the first half", lambda: len(_explanations(job.home)) == half, 90, job)
        broker("down")
        time.sleep(3)
        broker("up")
        _produce(topic, events[half:], rate=100, bootstrap=bootstrap)
        _wait_for("every offset committed", lambda: _offsets_at_end(topic, bootstrap), 150, job)
        assert job.stop() == 0, job.log()
        rows = _assert_once_everywhere(job.home, topic)
        assert {r["request_id"] for r in rows} == {e["request_id"] for e in events}
    finally:
        subprocess.run(
            ["bash", "infra/services.sh", "down", "kafka"], cwd=REPO, env=env, timeout=120
        )
