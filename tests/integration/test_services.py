"""The real servers started by infra/services.sh answer as whylake needs them to.

Start them first with `make up` (infra/services.sh up); these tests fail, saying so, when a
service is not there. They check: OpenSearch indexes and finds a document; Kafka carries a
message on a fresh topic; a tiny Beam pipeline runs on the FlinkRunner with the staged job
server and no network; the same pipeline runs on Prism when its binary has been built
(infra/services.sh fetch prism), and on a long-running Flink job server when one is up
(infra/services.sh up flink).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ROOT / "infra" / "services.sh"
MAKE_UP = "run `make up` (infra/services.sh up) first"


@pytest.fixture(scope="module")
def infra_env() -> dict[str, str]:
    """Connection settings as infra/services.sh computes them (WHYLAKE_* overrides respected)."""
    out = subprocess.run(
        ["bash", str(SERVICES), "env"], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    env: dict[str, str] = {}
    for line in out.splitlines():
        if line.startswith("export ") and "=" in line:
            key, _, value = line[len("export ") :].partition("=")
            env[key] = value
    for key in list(env):
        env[key] = os.environ.get(key, env[key])
    return env


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# ---------------------------------------------------------------- OpenSearch


@pytest.fixture(scope="module")
def opensearch(infra_env: dict[str, str]) -> Iterator[object]:
    from opensearchpy import OpenSearch
    from opensearchpy.exceptions import ConnectionError as OSConnectionError

    url = infra_env["WHYLAKE_OPENSEARCH_URL"]
    client = OpenSearch(hosts=[url], timeout=30)
    try:
        health = client.cluster.health()
    except OSConnectionError as exc:
        pytest.fail(f"OpenSearch is not reachable at {url}: {MAKE_UP} ({exc})")
    assert health["status"] in ("green", "yellow"), health
    yield client
    client.close()


def test_opensearch_indexes_and_searches_a_document(opensearch) -> None:  # type: ignore[no-untyped-def]
    index = _unique("whylake-it")
    opensearch.indices.create(
        index=index,
        body={
            "settings": {"number_of_shards": 1, "number_of_replicas": 0},
            "mappings": {
                "properties": {
                    "tenant_id": {"type": "keyword"},
                    "request_id": {"type": "keyword"},
                    "event_ts": {"type": "date"},
                    "summary": {"type": "text"},
                    "score": {"type": "float"},
                }
            },
        },
    )
    try:
        doc = {
            "tenant_id": "acme",
            "request_id": "req-42",
            "event_ts": "2026-11-21T10:00:00Z",
            "summary": "income and debt ratio drove the score up",
            "score": 0.87,
        }
        opensearch.index(index=index, id="expl-42", body=doc, refresh="true")
        opensearch.index(
            index=index,
            id="expl-43",
            refresh="true",
            body={**doc, "tenant_id": "other", "request_id": "req-43"},
        )
        found = opensearch.search(
            index=index,
            body={
                "query": {
                    "bool": {
                        "filter": [{"term": {"tenant_id": "acme"}}],
                        "must": [{"match": {"summary": "income"}}],
                    }
                }
            },
        )
        hits = found["hits"]["hits"]
        assert [h["_id"] for h in hits] == ["expl-42"]
        assert hits[0]["_source"]["request_id"] == "req-42"
        assert opensearch.get(index=index, id="expl-42")["_source"] == doc
    finally:
        opensearch.indices.delete(index=index)


# ---------------------------------------------------------------- Kafka


def test_kafka_produces_and_consumes_on_a_fresh_topic(infra_env: dict[str, str]) -> None:
    from confluent_kafka import Consumer, KafkaException, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    bootstrap = infra_env["WHYLAKE_KAFKA_BOOTSTRAP"]
    host, _, port = bootstrap.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        pytest.fail(f"Kafka is not reachable at {bootstrap}: {MAKE_UP} ({exc})")
    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        admin.list_topics(timeout=10)
    except KafkaException as exc:
        pytest.fail(f"Kafka at {bootstrap} does not answer: {MAKE_UP} ({exc})")

    topic = _unique("whylake-it")
    admin.create_topics(
        [NewTopic(topic, num_partitions=1, replication_factor=1)], operation_timeout=10
    )[topic].result(timeout=15)
    try:
        errors: list[object] = []
        producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
        payload = b'{"tenant_id": "acme", "request_id": "req-42"}'
        producer.produce(
            topic,
            key=b"acme",
            value=payload,
            on_delivery=lambda err, _msg: errors.append(err) if err else None,
        )
        assert producer.flush(15) == 0, "message not delivered within 15 s"
        assert not errors, errors

        consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": _unique("whylake-it"),
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        consumer.subscribe([topic])
        received = None
        deadline = time.monotonic() + 30
        try:
            while received is None and time.monotonic() < deadline:
                msg = consumer.poll(1.0)
                if msg is None:
                    continue
                assert msg.error() is None, msg.error()
                received = msg
        finally:
            consumer.close()
        assert received is not None, f"no message consumed from {topic} within 30 s"
        assert (received.key(), received.value()) == (b"acme", payload)
    finally:
        admin.delete_topics([topic], operation_timeout=10)[topic].result(timeout=15)


# ---------------------------------------------------------------- Beam on Flink / Prism

PIPELINE = """
import sys
import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to

out = sys.argv[1]
with beam.Pipeline(options=PipelineOptions(sys.argv[2:])) as p:
    counts = (p | beam.Create(["a b", "b c", "c"]) | beam.FlatMap(str.split)
                | beam.combiners.Count.PerElement())
    assert_that(counts, equal_to([("a", 1), ("b", 2), ("c", 2)]))
    (counts | beam.Map(lambda kv: "%s=%d" % kv)
            | beam.io.WriteToText(out, shard_name_template=""))
print("runner:", p.runner.__class__.__name__)
"""


def _offline_prefix() -> tuple[list[str], dict[str, str]]:
    """A command prefix that runs its command with no network but loopback.

    A private network namespace (`unshare -n`, root; or `unshare -rn` with user namespaces),
    loopback brought up inside; otherwise proxies pointing at a closed port for any HTTP(S).
    """
    inner = 'ip link set lo up && exec "$@"'
    if shutil.which("unshare") and shutil.which("ip"):
        for flags in (["-n"], ["-rn"]):
            probe = subprocess.run(
                ["unshare", *flags, "sh", "-c", inner, "sh", "true"],
                capture_output=True,
                timeout=30,
            )
            if probe.returncode == 0:
                return ["unshare", *flags, "sh", "-c", inner, "sh"], {}
    dead = "http://127.0.0.1:9"
    return [], {
        "HTTP_PROXY": dead,
        "HTTPS_PROXY": dead,
        "http_proxy": dead,
        "https_proxy": dead,
        "NO_PROXY": "localhost,127.0.0.1",
        "no_proxy": "localhost,127.0.0.1",
    }


def _run_pipeline(
    tmp_path: Path, args: list[str], offline: bool = True, timeout: int = 600
) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "tiny_pipeline.py"
    script.write_text(PIPELINE)
    out = tmp_path / "counts.txt"
    prefix, extra_env = _offline_prefix() if offline else ([], {})
    env = {**os.environ, **extra_env}
    proc = subprocess.run(
        [*prefix, sys.executable, str(script), str(out), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, (
        f"pipeline failed ({' '.join(args)}), offline via {prefix or 'dead proxies'}\n"
        f"--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-6000:]}"
    )
    assert sorted(out.read_text().split()) == ["a=1", "b=2", "c=2"]
    return proc


def _beam_version() -> str:
    import apache_beam

    return apache_beam.__version__


def test_beam_pipeline_runs_on_flink_with_the_staged_job_server(
    infra_env: dict[str, str], tmp_path: Path
) -> None:
    flink = infra_env["WHYLAKE_FLINK_VERSION"]
    staged = (
        Path.home()
        / ".apache_beam"
        / "cache"
        / "jars"
        / f"beam-runners-flink-{flink}-job-server-{_beam_version()}.jar"
    )
    if not staged.is_file() or not Path(infra_env["WHYLAKE_FLINK_JOB_SERVER_JAR"]).is_file():
        pytest.fail(f"Flink job server jar not staged at {staged}: {MAKE_UP}")
    with zipfile.ZipFile(staged) as jar:
        manifest = jar.read("META-INF/MANIFEST.MF").decode()
    assert "FlinkJobServerDriver" in manifest.replace("\r\n ", "")
    # no --flink_job_server_jar: Beam must find the staged jar itself, and has no network
    proc = _run_pipeline(
        tmp_path,
        [
            "--runner=FlinkRunner",
            "--flink_master=[local]",
            f"--flink_version={flink}",
            "--environment_type=LOOPBACK",
            "--parallelism=1",
        ],
    )
    assert str(staged) in proc.stderr, "Beam did not start the staged job server jar"


def test_beam_pipeline_runs_on_a_long_running_flink_job_server(
    infra_env: dict[str, str], tmp_path: Path
) -> None:
    status = subprocess.run(
        ["bash", str(SERVICES), "status", "flink"], capture_output=True, text=True, timeout=60
    )
    if status.returncode != 0:
        pytest.skip("no long-running Flink job server (infra/services.sh up flink)")
    _run_pipeline(
        tmp_path,
        [
            "--runner=PortableRunner",
            f"--job_endpoint={infra_env['WHYLAKE_FLINK_JOB_ENDPOINT']}",
            "--environment_type=LOOPBACK",
            "--parallelism=1",
        ],
        offline=False,
    )


def test_beam_pipeline_runs_on_prism(infra_env: dict[str, str], tmp_path: Path) -> None:
    prism = Path(infra_env["WHYLAKE_PRISM_BIN"])
    if not os.access(prism, os.X_OK):
        pytest.skip(f"prism not built at {prism} (infra/services.sh fetch prism)")
    _run_pipeline(tmp_path, ["--runner=PrismRunner", f"--prism_location={prism}"])
