"""Benchmark the OpenSearch hot replica: documents/s indexed, and search latency p50/p99.

Indexes N explanation documents (default 1,000,000, spread over the demo tenants and 30 days)
with the same bulk path the pipeline uses, then times request-id lookups and tenant +
time-range queries. Writes bench/results/replica.json. Needs `make up` (a local node).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from whylake.lake.opensearch import OpenSearchConfig, ensure_template, index_records
from whylake.lake.replica import SearchQuery, _prepare_for_load, _restore_after_load, search

RESULTS = Path(__file__).resolve().parent / "results" / "replica.json"
TENANTS = ("acme", "globex", "initech")
START = datetime(2026, 10, 23, tzinfo=UTC)


def _documents(n: int, seed: int = 7) -> Any:
    """Explanation records shaped like the pipeline's (30 attributions each), cheaply varied."""
    rng = random.Random(seed)
    features = [f"feature_{j:02d}" for j in range(30)]
    # 1,000 distinct attribution vectors, reused: drawing 30 Gaussians per document made the
    # generator, not the indexing, the benchmark's bottleneck (~140 us of its ~250 us per doc).
    pool = [[rng.gauss(0, 0.05) for _ in features] for _ in range(1000)]
    for i in range(n):
        tenant = TENANTS[i % len(TENANTS)]
        event_ts = START + timedelta(seconds=rng.randrange(30 * 86_400))
        values = pool[i % len(pool)]
        yield {
            "explanation_id": uuid.UUID(int=rng.getrandbits(128)).hex,
            "tenant_id": tenant,
            "request_id": f"{tenant}-{i:09d}",
            "event_ts": event_ts,
            "explained_at": event_ts + timedelta(hours=1),
            "run_id": "bench",
            "model_id": "m",
            "model_version": "1",
            "model_sha256": "0" * 64,
            "output_name": "p",
            "prediction": rng.random(),
            "logged_score": rng.random(),
            "predicted_class": None,
            "user_id_hash": None,
            "input_hash": "1" * 64,
            "source": "bench",
            "policy_version": "bench/priority",
            "schema_version": 1,
            "summary": "The predicted p is 0.5 above the base value, mainly because feature_01.",
            "flags": None,
            "explainer_method": "integrated_gradients",
            "explainer_config": "{}",
            "explainer_config_hash": "2" * 64,
            "explainer_versions": "{}",
            "baseline_kind": "training mean",
            "seed": 0,
            "base_value": 0.3,
            "device": "cpu",
            "attributions": [
                {"feature": f, "value": v, "input_value": 1.0, "baseline_value": 0.0}
                for f, v in zip(features, values, strict=True)
            ],
            "shap_values": values,
            "completeness_error": 1e-4,
            "shap_additivity_error": 1e-8,
            "stability": 0.8,
            "score_drift": 0.0,
            "counterfactual_status": "not_requested",
            "counterfactuals": None,
            "sampling_policy": "bench/priority",
            "sampling_reason": "priority",
            "inclusion_probability": 0.02,
            "ht_weight": 50.0,
            "stratum_size": 1000,
        }


def _percentiles(samples: list[float]) -> dict[str, float]:
    ms = np.array(samples) * 1000
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "mean_ms": round(float(ms.mean()), 2),
        "queries": len(samples),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--documents", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--chunk", type=int, default=20_000, help="documents per index call")
    parser.add_argument("--bulk", type=int, default=2000, help="documents per bulk request")
    parser.add_argument("--threads", type=int, default=2, help="bulk requests in flight")
    parser.add_argument(
        "--url", default=os.environ.get("WHYLAKE_OPENSEARCH_URL", "http://127.0.0.1:9200")
    )
    parser.add_argument("--keep", action="store_true", help="keep the indices afterwards")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    config = OpenSearchConfig(
        url=args.url, index_prefix="bench-replica", batch_size=args.bulk, threads=args.threads
    )
    client = config.client()
    client.indices.delete(index="bench-replica-*", ignore_unavailable=True)
    load_at_start = os.getloadavg()
    known: set[str] = set()
    indexed = failed = 0
    ids: list[tuple[str, str]] = []
    # As `whylake replica backfill` loads: the template, then every day's index created with
    # refresh off and no replicas (timed apart: 90 index creations are cluster-state updates,
    # not indexing), bulk writes, then the template's settings restored and a refresh.
    t0 = time.perf_counter()
    ensure_template(client, config)
    loading: set[str] = set()
    days = [
        {"tenant_id": t, "event_ts": START + timedelta(days=d)} for t in TENANTS for d in range(30)
    ]
    _prepare_for_load(client, config, days, loading)
    create_s = time.perf_counter() - t0
    start = time.perf_counter()
    chunk: list[dict[str, Any]] = []
    for doc in _documents(args.documents):
        chunk.append(doc)
        if len(ids) < 50_000 or random.random() < 0.01:
            ids.append((doc["tenant_id"], doc["request_id"]))
        if len(chunk) == args.chunk:
            outcome = index_records(client, config, chunk, known)
            indexed, failed, chunk = indexed + outcome.indexed, failed + outcome.failed, []
            if indexed % 100_000 < args.chunk:
                rate = indexed / (time.perf_counter() - start)
                print(f"indexed {indexed:,} ({rate:,.0f} docs/s)", flush=True)
    if chunk:
        outcome = index_records(client, config, chunk, known)
        indexed, failed = indexed + outcome.indexed, failed + outcome.failed
    _restore_after_load(client, config, loading)  # refresh back on, and one refresh
    index_s = time.perf_counter() - start
    client.indices.refresh(index="bench-replica-*")
    count = client.count(index="bench-replica-*")["count"]

    rng = random.Random(11)
    lookups = []
    for _ in range(args.queries):
        tenant, request_id = rng.choice(ids)
        t0 = time.perf_counter()
        hits = search(config, SearchQuery(tenant_id=tenant, request_id=request_id), client)
        lookups.append(time.perf_counter() - t0)
        assert len(hits) == 1, (tenant, request_id, len(hits))
    ranges = []
    for _ in range(args.queries):
        tenant = rng.choice(TENANTS)
        since = START + timedelta(hours=rng.randrange(29 * 24))
        t0 = time.perf_counter()
        search(
            config,
            SearchQuery(tenant_id=tenant, since=since, until=since + timedelta(hours=6), size=20),
            client,
        )
        ranges.append(time.perf_counter() - t0)
    result = {
        "benchmark": "replica",
        "documents_indexed": indexed,
        "documents_failed": failed,
        "documents_in_index": count,
        "index_s": round(index_s, 1),
        "index_creation_s": round(create_s, 1),
        "documents_per_s": round(indexed / index_s, 1),
        "request_id_lookup": _percentiles(lookups),
        "tenant_time_range_query": _percentiles(ranges),
        "goals": (
            "issue 10: >= 20,000 docs/s indexed; request-id lookup p99 <= 10 ms over 1M "
            "documents; tenant + time-range query p99 <= 30 ms"
        ),
        "notes": "latency is the whole whylake search call (client + HTTP + query) on loopback",
        "settings": {
            "url": args.url,
            "documents": args.documents,
            "chunk": args.chunk,
            "bulk_batch": config.batch_size,
            "bulk_threads": config.threads,
            "serializer": "orjson",
            "mapping": "template, layout v2: attributions stored not indexed, flat top-5",
            "indices": "one per tenant per day, 1 shard, 0 replicas, refresh 1s",
        },
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "load_average_1_5_15_at_start": [round(x, 2) for x in load_at_start],
            "load_average_1_5_15_at_end": [round(x, 2) for x in os.getloadavg()],
            "load_average_before_after": [
                round(load_at_start[0], 2),
                round(os.getloadavg()[0], 2),
            ],
        },
        "server": client.info()["version"]["number"],
    }
    if not args.keep:
        client.indices.delete(index="bench-replica-*", ignore_unavailable=True)
        client.indices.delete_index_template(name=config.index_prefix, ignore=[404])
    client.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
