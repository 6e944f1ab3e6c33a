"""Streaming job throughput and latency on a real Kafka broker, OpenSearch node and Prism.

Two phases against one `whylake stream` subprocess, figures to bench/results/streaming.json:

1. backlog: `--backlog` events are in the topic before the job starts; the job drains them
   (validate, sample ~2%, explain, commit). Sustained events/s = events / time until every
   offset is committed (so it includes the explain stage keeping up with the sample).
2. paced: `--rate` events/s for `--duration` s with event_ts = produce time; latency from
   produce to the Iceberg commit (the snapshot's commit time) and to OpenSearch-visible
   (first seen by a poller every 0.25 s, refresh interval 1 s), p50 and p99, per sampled event.

Run: `python -m bench.streaming [--rate 5000 --duration 30 --backlog 150000]`. Never asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from whylake.jobs.demo_data import _jsonable, tenant_table
from whylake.jobs.demo_models import DEMO_TENANTS, register_demo_models
from whylake.lake.catalog import EXPLANATIONS, CatalogConfig, ensure_tables, open_catalog
from whylake.registry.store import ModelRegistry

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench/results/streaming.json"
PRISM = REPO / ".infra/cache/prism/v2.77.0/bin/prism"
POLICY = REPO / "schemas/policies/default.yaml"
_TS_PLACEHOLDER = "0000-00-00T00:00:00.000000+00:00"


def _templates(registry: ModelRegistry, per_tenant: int) -> list[tuple[bytes, bytes, str]]:
    """(JSON before event_ts, JSON after it, tenant) per distinct record; ids added later."""
    out = []
    day = datetime.now(UTC).date()
    for tenant in DEMO_TENANTS:
        for row in tenant_table(registry, tenant, day, per_tenant, seed=11).to_pylist():
            event = _jsonable(row)
            event["event_ts"] = _TS_PLACEHOLDER
            event["request_id"] = "@ID@"
            text = json.dumps(event)
            before, after = text.split(_TS_PLACEHOLDER)
            out.append((before.encode(), after.encode(), tenant))
    return out


def produce(
    bootstrap: str,
    topic: str,
    templates: list[tuple[bytes, bytes, str]],
    n: int,
    rate: float | None,
    run: str,
) -> dict[str, float]:
    """Produce n events (paced at `rate`/s, or as fast as possible); event_ts = now."""
    from confluent_kafka import Producer

    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 20, "queue.buffering.max.messages": 500_000}
    )
    t0 = time.monotonic()
    for i in range(n):
        before, after, tenant = templates[i % len(templates)]
        request_id = f"{run}-{tenant}-{i:08d}"
        now = time.time()
        ts = datetime.fromtimestamp(now, UTC).isoformat(timespec="microseconds")
        value = before.replace(b"@ID@", request_id.encode()) + ts.encode() + after
        while True:
            try:
                producer.produce(topic, value, key=request_id, timestamp=int(now * 1000))
                break
            except BufferError:
                producer.poll(0.05)
        if i % 1000 == 0:
            producer.poll(0)
            if rate:
                ahead = (i + 1) / rate - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)
    producer.flush(120)
    elapsed = time.monotonic() - t0
    return {"events": n, "seconds": elapsed, "events_per_s": n / elapsed}


def _offsets_lag(bootstrap: str, topic: str, group: str) -> int | None:
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        parts = consumer.list_topics(topic, timeout=5).topics[topic].partitions
        tps = [TopicPartition(topic, p) for p in parts]
        committed = consumer.committed(tps, timeout=5)
        lag = 0
        for c, tp in zip(committed, tps, strict=True):
            low, high = consumer.get_watermark_offsets(tp, timeout=5)
            lag += high - (c.offset if c.offset >= 0 else low)
        return lag
    except KafkaException:
        return None
    finally:
        consumer.close()


def _wait_drained(bootstrap: str, topic: str, group: str, timeout_s: float) -> float | None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if _offsets_lag(bootstrap, topic, group) == 0:
            return time.monotonic()
        time.sleep(0.5)
    return None


class _ReplicaPoller(threading.Thread):
    """Records when each explanation id of this run first becomes visible in OpenSearch."""

    def __init__(self, url: str, prefix: str) -> None:
        super().__init__(daemon=True)
        self.url, self.prefix = url, prefix
        self.seen: dict[str, float] = {}
        self.halt = threading.Event()

    def run(self) -> None:
        from opensearchpy import OpenSearch

        client = OpenSearch(hosts=[self.url], timeout=30)
        while not self.halt.wait(0.25):
            try:
                resp = client.search(
                    index="whylake-explanations-*",
                    body={
                        "query": {"prefix": {"request_id": self.prefix}},
                        "size": 10_000,
                        "_source": False,
                        "sort": [{"explained_at": "desc"}],
                    },
                    ignore_unavailable=True,
                )
            except Exception:  # noqa: BLE001 — a bench poller retries
                continue
            now = time.time()
            for hit in resp["hits"]["hits"]:
                self.seen.setdefault(hit["_id"], now)


def _commit_times(home: Path, prefix: str) -> dict[str, tuple[float, float]]:
    """explanation_id -> (event time, commit time of the snapshot that added it), epoch s."""
    table = open_catalog(CatalogConfig.embedded(home)).load_table(EXPLANATIONS)
    out: dict[str, tuple[float, float]] = {}
    for snap in sorted(table.snapshots(), key=lambda s: s.timestamp_ms):
        rows = table.scan(
            snapshot_id=snap.snapshot_id,
            selected_fields=("explanation_id", "request_id", "event_ts"),
        ).to_arrow()
        for r in rows.to_pylist():
            if r["explanation_id"] not in out and r["request_id"].startswith(prefix):
                out[r["explanation_id"]] = (r["event_ts"].timestamp(), snap.timestamp_ms / 1000)
    return out


def _percentiles(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "p50_s": None, "p99_s": None, "max_s": None}
    arr = np.asarray(values)
    return {
        "n": len(values),
        "p50_s": round(float(np.percentile(arr, 50)), 3),
        "p99_s": round(float(np.percentile(arr, 99)), 3),
        "max_s": round(float(arr.max()), 3),
    }


def _policy(path: Path, budget: int) -> Path:
    policy = yaml.safe_load(POLICY.read_text())
    policy["defaults"]["budget_per_day"] = budget
    for overrides in policy["tenants"].values():
        overrides.pop("budget_per_day", None)
    path.write_text(yaml.safe_dump(policy))
    return path


def _start_job(args: argparse.Namespace, home: Path, topic: str, policy: Path) -> Any:
    cmd = [
        sys.executable,
        "-m",
        "whylake.jobs.cli",
        "stream",
        "--insecure-demo-hash-key",  # generated events, made-up user ids
        f"--topic={topic}",
        f"--bootstrap-servers={args.bootstrap}",
        f"--group-id=bench-{topic}",
        f"--home={home}",
        f"--policy={policy}",
        f"--window-s={args.window_s}",
        f"--allowed-lateness-s={args.allowed_lateness_s}",
        f"--opensearch-url={args.opensearch}",
        f"--prism-location={PRISM}",
    ]
    log = open(home / f"job-{topic}.log", "wb")  # noqa: SIM115 — the job owns it
    return subprocess.Popen(
        cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


def _stop(proc: Any) -> None:
    proc.send_signal(signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=60)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def _create_topic(bootstrap: str, partitions: int) -> str:
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = f"whylake-bench-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        future.result(timeout=30)
    return topic


def _read_rates(log: Path) -> list[float]:
    """records/s from the job's progress lines (cumulative since its start)."""
    text = log.read_text(errors="replace").replace("\n", " ")
    return [float(m.replace(",", "")) for m in re.findall(r"\(([\d,]+) records/s\)", text)]


def _budget(args: argparse.Namespace, rate: float) -> int:
    """Per (tenant, window): about the target fraction of a window's records, less the
    always-explain share (~1%), so that always + priority ~= --sample overall."""
    per_window = rate * args.window_s / len(DEMO_TENANTS)
    return max(1, int(per_window * max(args.sample - 0.01, 0.005)))


def _paced(
    args: argparse.Namespace,
    work: Path,
    templates: list[tuple[bytes, bytes, str]],
    policy: Path,
    rate: float,
) -> dict[str, Any]:
    """One paced phase at `rate` events/s: latencies per sampled event."""
    topic = _create_topic(args.bootstrap, args.partitions)
    job = _start_job(args, work, topic, policy)
    poller = _ReplicaPoller(args.opensearch, topic)
    try:
        time.sleep(8)  # job start-up (Prism, workers, models) is not what this phase measures
        poller.start()
        n = int(rate * args.duration)
        produced = produce(args.bootstrap, topic, templates, n, rate, topic)
        drained = _wait_drained(args.bootstrap, topic, f"bench-{topic}", 300)
        time.sleep(3)  # let the poller see the last documents
    finally:
        poller.halt.set()
        _stop(job)
    commits = _commit_times(work, topic)
    to_iceberg = [c - e for e, c in commits.values()]
    to_replica = [poller.seen[i] - e for i, (e, _) in commits.items() if i in poller.seen]
    return {
        "target_events_per_s": rate,
        "budget_per_tenant_window": _budget(args, rate),
        "produce": produced,
        "drained": drained is not None,
        "explained_rows": len(commits),
        "sampled_fraction": round(len(commits) / max(n, 1), 4),
        "replica_rows_seen": len(to_replica),
        "job_read_rate_events_per_s_progress": _read_rates(work / f"job-{topic}.log")[-3:],
        "latency_produce_to_iceberg_commit": _percentiles(to_iceberg),
        "latency_produce_to_opensearch_visible": _percentiles(to_replica),
    }


def profile(
    args: argparse.Namespace, work: Path, templates: list[tuple[bytes, bytes, str]]
) -> dict[str, Any]:
    """Where the time goes per event: each stage's own code, in this process, on one core.

    The same events as the job reads, through the same functions its DoFns call (consume,
    decode, validate, sample, explain, Iceberg commit, replica bulk index), timed one stage at
    a time; what the whole job costs beyond their sum is the runner (Beam's per-bundle and
    per-element work, coders, Prism) and waiting.
    """
    import pyarrow as pa
    from confluent_kafka import TopicPartition
    from pyiceberg.expressions import EqualTo

    from whylake.lake.commit import append_once
    from whylake.lake.opensearch import OpenSearchConfig, index_records
    from whylake.schemas.arrow import strict_table
    from whylake.schemas.explanation import EXPLANATION_ARROW_SCHEMA
    from whylake.schemas.inference import INFERENCE_ARROW_SCHEMA
    from whylake.schemas.pii import PiiPolicy
    from whylake.schemas.secrets import Secret
    from whylake.transforms.explainers.config import ExplainConfig
    from whylake.transforms.kafka.config import KafkaReadConfig
    from whylake.transforms.kafka.decode import decode_messages
    from whylake.transforms.model_bank import ModelBank
    from whylake.transforms.read import coerce_json_row
    from whylake.transforms.sample import _DrawSampleFn, _PreselectFn
    from whylake.transforms.sampling.policy import load_policies
    from whylake.transforms.sampling.priority import merge_accumulators
    from whylake.transforms.validate import ValidateConfig, _ValidateFn

    n = args.profile_events
    topic = _create_topic(args.bootstrap, 1)
    produce(args.bootstrap, topic, templates, n, None, topic)
    stages: dict[str, float] = {}

    def timed(name: str, fn: Any) -> Any:
        t0 = time.perf_counter()
        out = fn()
        stages[name] = time.perf_counter() - t0
        return out

    kafka = KafkaReadConfig(topic=topic, bootstrap_servers=args.bootstrap, group_id="profile")
    consumer = kafka.consumer()
    consumer.assign([TopicPartition(topic, 0, 0)])
    consumer.consume(1, 10.0)  # connect and fetch before the clock starts
    consumer.assign([TopicPartition(topic, 0, 0)])

    def consume() -> list[bytes]:
        values: list[bytes] = []
        while len(values) < n:
            values.extend(m.value() for m in consumer.consume(5000, 1.0) if m.error() is None)
        return values

    values = timed("consume", consume)
    consumer.close()
    chunk = 5000
    sources = [f"kafka://{topic}/0@{i}" for i in range(n)]

    def old_decode() -> None:
        for i in range(0, n, chunk):
            rows = [coerce_json_row(v.decode()) for v in values[i : i + chunk]]
            pa.RecordBatch.from_pylist(rows, schema=INFERENCE_ARROW_SCHEMA)

    timed("decode_per_record_json_before", old_decode)
    batches = timed(
        "decode",
        lambda: [
            decode_messages(values[i : i + chunk], sources[i : i + chunk]).batch
            for i in range(0, n, chunk)
        ],
    )
    pii = PiiPolicy(Secret("0" * 64, "bench"))
    validate = _ValidateFn(ValidateConfig(str(work / "models"), "profile", pii=pii))
    validate.setup()
    valid = timed("validate", lambda: [b for batch in batches for b in validate.process(batch)])
    budget = max(1, int(n * max(args.sample - 0.01, 0.005) / len(DEMO_TENANTS)))
    policies = load_policies(_policy(work / "policy-profile.yaml", budget))

    def sample() -> list[dict[str, Any]]:
        pre, strata = _PreselectFn(policies), {}
        for batch in valid:
            for key, acc in pre.process(batch):
                strata[key] = merge_accumulators((strata[key], acc)) if key in strata else acc
        draw = _DrawSampleFn(policies)
        return [
            row for item in strata.items() for row in draw.process(item) if isinstance(row, dict)
        ]

    sampled = timed("sample", sample)
    bank = ModelBank(
        str(work / "models"),
        ExplainConfig(),
        policies,
        Secret("0" * 64, "bench"),
    )
    # Model loading is start-up, not per event: warm every tenant's model up first.
    first_per_tenant = {r["tenant_id"]: r for r in reversed(sampled)}
    bank.explain(list(first_per_tenant.values()), "warm-up")
    explained = timed(
        "explain",
        lambda: [
            r for i in range(0, len(sampled), 256) for r in bank.explain(sampled[i : i + 256], "p")
        ],
    )
    home = work / "profile-home"
    catalog = open_catalog(CatalogConfig.embedded(home))
    ensure_tables(catalog)

    def commit() -> None:
        for tenant in DEMO_TENANTS:
            rows = [r for r in explained if r["tenant_id"] == tenant]
            append_once(
                catalog,
                EXPLANATIONS,
                strict_table(rows, EXPLANATION_ARROW_SCHEMA),
                key="explanation_id",
                scope=EqualTo("tenant_id", tenant),
                run_id="profile",
                batch_id=f"profile-{tenant}",
            )

    timed("commit", commit)
    replica = OpenSearchConfig(url=args.opensearch, index_prefix=f"bench-profile-{topic[-8:]}")
    client = replica.client()
    try:
        outcome = timed("replica", lambda: index_records(client, replica, explained))
        client.indices.delete(index=f"{replica.index_prefix}-*", ignore_unavailable=True)
        client.indices.delete_index_template(name=replica.index_prefix, ignore=[404])
    finally:
        client.close()
    per_event = {k: round(v / n * 1e6, 2) for k, v in stages.items()}
    rows = max(len(explained), 1)
    return {
        "events": n,
        "sampled": len(sampled),
        "explained": len(explained),
        "replica_indexed": outcome.indexed,
        "seconds": {k: round(v, 4) for k, v in stages.items()},
        "us_per_event": per_event,
        "us_per_explained_row": {
            k: round(stages[k] / rows * 1e6, 1) for k in ("explain", "commit", "replica")
        },
        "stages_sum_us_per_event": round(
            sum(v for k, v in per_event.items() if not k.endswith("_before")), 2
        ),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--bootstrap", default=os.environ.get("WHYLAKE_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    )
    parser.add_argument(
        "--opensearch", default=os.environ.get("WHYLAKE_OPENSEARCH_URL", "http://127.0.0.1:9200")
    )
    parser.add_argument(
        "--rate", type=float, nargs="+", default=[5000.0, 2000.0], help="paced phases, events/s"
    )
    parser.add_argument("--duration", type=float, default=30.0, help="paced phase, seconds")
    parser.add_argument(
        "--backlog", type=int, default=150_000, help="backlog phase events (0: skip)"
    )
    parser.add_argument("--window-s", type=float, default=5.0)
    parser.add_argument("--allowed-lateness-s", type=float, default=5.0)
    parser.add_argument("--sample", type=float, default=0.02, help="target sampled fraction")
    parser.add_argument("--partitions", type=int, default=2)
    parser.add_argument(
        "--profile-events", type=int, default=50_000, help="per-stage profile events (0: skip)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the figures go")
    args = parser.parse_args(argv)
    if not PRISM.exists():
        raise SystemExit(f"Prism missing at {PRISM}: run `infra/services.sh fetch prism`")

    work = Path(tempfile.mkdtemp(prefix="whylake-bench-stream-"))
    registry = ModelRegistry(work / "models")
    register_demo_models(registry)
    ensure_tables(open_catalog(CatalogConfig.embedded(work)))
    templates = _templates(registry, per_tenant=2000)
    budget = _budget(args, args.rate[0])
    policy = _policy(work / "policy.yaml", budget)
    results: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_1_5_15_at_start": [round(x, 2) for x in os.getloadavg()],
        },
        "goals": (
            "issue 10: >= 20,000 events/s sustained with a 2% sample explained; at 5,000 "
            "events/s p99 produce -> Iceberg-committed <= 5 s, -> OpenSearch-visible <= 6 s"
        ),
        "runner": "PrismRunner (v2.77.0, LOOPBACK Python workers)",
        "settings": {**vars(args), "budget_per_tenant_window": budget},
    }

    if args.profile_events:
        results["profile"] = profile(args, work, templates)
        print(json.dumps(results["profile"], indent=2), flush=True)

    if args.backlog:
        topic = _create_topic(args.bootstrap, args.partitions)
        produced = produce(args.bootstrap, topic, templates, args.backlog, None, topic)
        t0 = time.monotonic()
        job = _start_job(args, work, topic, policy)
        try:
            drained = _wait_drained(args.bootstrap, topic, f"bench-{topic}", 900)
        finally:
            _stop(job)
        rows = len(_commit_times(work, topic))
        seconds = (drained - t0) if drained else None
        results["backlog"] = {
            "events": args.backlog,
            "produce": produced,
            "drain_seconds_incl_job_start": round(seconds, 1) if seconds else None,
            "events_per_s": round(args.backlog / seconds) if seconds else None,
            "explained_rows": rows,
            "sampled_fraction": round(rows / args.backlog, 4),
        }
        print(json.dumps(results["backlog"], indent=2), flush=True)

    results["paced"] = [
        _paced(
            args,
            work,
            templates,
            _policy(work / f"policy-{rate:g}.yaml", _budget(args, rate)),
            rate,
        )
        for rate in args.rate
        if rate > 0
    ]
    results["machine"]["load_average_1_5_15_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["machine"]["load_average_before_after"] = [
        results["machine"]["load_average_1_5_15_at_start"][0],
        round(os.getloadavg()[0], 2),
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, sort_keys=True, default=str) + "\n")
    print(json.dumps(results, indent=2, sort_keys=True))
    return results


if __name__ == "__main__":
    main()
