"""Load-test `whylake serve`: lookups over the hot replica, and 500 concurrent event streams.

Commits synthetic explanation rows to a fresh embedded lake, indexes them into OpenSearch under
a private index prefix, starts the real server (`whylake serve`, a subprocess, so the load
client does not share its interpreter) and then:

1. lookups: `--clients` concurrent clients (bounded asyncio + httpx, one connection each) ask
   `GET /v1/tenants/{t}/explanations/{r}?tier=N` for random committed requests, `--requests`
   in all; p50 / p99 latency and requests/s, and that every answer came from the replica;
2. stream: `--streams` SSE connections spread over `--stream-tenants` tenants wait until every
   one is subscribed, then `--commits` commits of new explanations land in Iceberg; each
   connection must receive every event of its own tenant and none of another's; delivery
   latency is commit -> event received.

Writes bench/results/api.json with the settings, the machine's load and the figures. Needs a
local OpenSearch (`make up`). Bounded: every loop has a count and a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml
from pyiceberg.expressions import In

from bench.replica import _documents
from whylake.api.keys import key_digest
from whylake.lake.catalog import EXPLANATIONS, CatalogConfig, ensure_tables, open_catalog
from whylake.lake.commit import append_once
from whylake.lake.opensearch import OpenSearchConfig, index_records
from whylake.schemas.arrow import strict_table
from whylake.schemas.explanation import EXPLANATION_ARROW_SCHEMA

RESULTS = Path(__file__).resolve().parent / "results" / "api.json"
GOAL = "lookup p99 <= 50 ms at 50 concurrent clients; every stream gets all and only its events"


def _rows(n: int, tenants: list[str], seed: int, tag: str) -> list[dict[str, Any]]:
    """Explanation rows shaped like the pipeline's (30 attributions), events in the last day."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    rows = []
    for i, doc in enumerate(_documents(n, seed=seed)):
        tenant = tenants[i % len(tenants)]
        event_ts = now - timedelta(seconds=rng.randrange(1, 86_400))
        doc.update(
            explanation_id=uuid.UUID(int=rng.getrandbits(128)).hex,
            tenant_id=tenant,
            request_id=f"{tenant}-{tag}-{i:07d}",
            event_ts=event_ts,
            explained_at=event_ts + timedelta(minutes=5),
            template_version="v2",
            trust_tier="silver",
            confidence=0.8,
            risk_score=0.1,
            review_route="auto",
            review_reasons=[],
        )
        rows.append(doc)
    return rows


def _commit(catalog: Any, rows: list[dict[str, Any]], batch_id: str) -> None:
    tenants = sorted({r["tenant_id"] for r in rows})
    append_once(
        catalog,
        EXPLANATIONS,
        strict_table(rows, EXPLANATION_ARROW_SCHEMA),
        key="explanation_id",
        scope=In("tenant_id", tenants),
        run_id="bench-api",
        batch_id=batch_id,
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used (Linux /proc), a load-independent cost."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _percentiles(samples: list[float]) -> dict[str, float]:
    ms = np.array(samples) * 1000
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "max_ms": round(float(ms.max()), 2),
        "mean_ms": round(float(ms.mean()), 2),
        "samples": len(samples),
    }


async def _lookups(
    base: str,
    targets: list[tuple[str, str]],
    keys: dict[str, str],
    clients: int,
    requests: int,
    tier: int,
    seed: int,
) -> dict[str, Any]:
    rng = random.Random(seed)
    plan = [rng.choice(targets) for _ in range(requests)]
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    sources: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
        # Warm: one request per client opens its connection (not measured).
        await asyncio.gather(
            *(
                client.get(
                    f"/v1/tenants/{t}/explanations/{r}",
                    params={"tier": tier},
                    headers={"Authorization": f"Bearer {keys[t]}"},
                )
                for t, r in plan[:clients]
            )
        )
        queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        for item in plan:
            queue.put_nowait(item)

        async def worker() -> None:
            while True:
                try:
                    tenant, request_id = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                t0 = time.perf_counter()
                try:
                    response = await client.get(
                        f"/v1/tenants/{tenant}/explanations/{request_id}",
                        params={"tier": tier},
                        headers={"Authorization": f"Bearer {keys[tenant]}"},
                    )
                except httpx.HTTPError as exc:  # counted, never hidden
                    errors[type(exc).__name__] += 1
                    continue
                latencies.append(time.perf_counter() - t0)
                statuses[response.status_code] += 1
                if response.status_code == 200:
                    sources[response.json()["source"]] += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - start
    return {
        "tier": tier,
        "clients": clients,
        "requests": requests,
        "elapsed_s": round(elapsed, 2),
        "requests_per_s": round(requests / elapsed, 1),
        "latency": _percentiles(latencies),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "sources": dict(sources),
        "errors": dict(errors),
    }


async def _streams(
    base: str,
    catalog: Any,
    keys: dict[str, str],
    tenants: list[str],
    streams: int,
    commits: int,
    rows_per_commit: int,
    timeout_s: float,
) -> dict[str, Any]:
    ready = asyncio.Semaphore(0)
    received: list[list[dict[str, Any]]] = [[] for _ in range(streams)]
    arrival: list[list[float]] = [[] for _ in range(streams)]
    owners = [tenants[i % len(tenants)] for i in range(streams)]
    expected: Counter[str] = Counter()
    commit_time: dict[str, float] = {}
    done = asyncio.Event()
    limits = httpx.Limits(max_connections=streams + 10, max_keepalive_connections=streams + 10)
    timeout = httpx.Timeout(timeout_s, connect=60)

    async def listen(i: int, client: httpx.AsyncClient) -> None:
        tenant = owners[i]
        url = f"/v1/tenants/{tenant}/explanations/stream"
        headers = {"Authorization": f"Bearer {keys[tenant]}"}
        async with client.stream("GET", url, headers=headers) as response:
            kind = None
            async for line in response.aiter_lines():
                if line.startswith("event:"):
                    kind = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and kind == "ready":
                    ready.release()
                elif line.startswith("data:") and kind == "explanation":
                    received[i].append(json.loads(line.split(":", 1)[1]))
                    arrival[i].append(time.perf_counter())
                if done.is_set():
                    return

    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=timeout) as client:
        tasks = [asyncio.create_task(listen(i, client)) for i in range(streams)]
        t0 = time.perf_counter()
        for _ in range(streams):
            await asyncio.wait_for(ready.acquire(), timeout=timeout_s)
        connect_s = time.perf_counter() - t0
        loop = asyncio.get_running_loop()
        for c in range(commits):
            rows = _rows(rows_per_commit, tenants, seed=1000 + c, tag=f"s{c}")
            await loop.run_in_executor(None, _commit, catalog, rows, f"stream-{c}")
            now = time.perf_counter()
            for row in rows:
                expected[row["tenant_id"]] += 1
                commit_time[row["explanation_id"]] = now
        deadline = time.perf_counter() + timeout_s

        def complete() -> bool:
            return all(len(received[i]) >= expected[owners[i]] for i in range(streams))

        while not complete() and time.perf_counter() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # anything extra (a foreign or duplicate event) shows now
        done.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    per_stream_ok = 0
    foreign = duplicates = missing = 0
    delays = []
    for i in range(streams):
        ids = [e["explanation_id"] for e in received[i]]
        foreign += sum(e["tenant_id"] != owners[i] for e in received[i])
        duplicates += len(ids) - len(set(ids))
        missing += max(0, expected[owners[i]] - len(set(ids)))
        if (
            len(set(ids)) == expected[owners[i]]
            and len(ids) == len(set(ids))
            and all(e["tenant_id"] == owners[i] for e in received[i])
        ):
            per_stream_ok += 1
        delays.extend(
            t - commit_time[e["explanation_id"]]
            for e, t in zip(received[i], arrival[i], strict=True)
            if e["explanation_id"] in commit_time
        )
    return {
        "streams": streams,
        "tenants": len(tenants),
        "commits": commits,
        "rows_per_commit": rows_per_commit,
        "events_expected": sum(expected[owners[i]] for i in range(streams)),
        "events_received": sum(len(r) for r in received),
        "streams_with_exactly_their_events": per_stream_ok,
        "foreign_events": foreign,
        "duplicate_events": duplicates,
        "missing_events": missing,
        "all_subscribed_s": round(connect_s, 2),
        "commit_to_event": _percentiles(delays) if delays else None,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--documents", type=int, default=20_000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=5_000)
    parser.add_argument("--tier", type=int, default=2)
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--stream-tenants", type=int, default=50)
    parser.add_argument("--commits", type=int, default=5)
    parser.add_argument("--rows-per-commit", type=int, default=200)
    parser.add_argument("--timeout-s", type=float, default=120)
    parser.add_argument(
        "--url", default=os.environ.get("WHYLAKE_OPENSEARCH_URL", "http://127.0.0.1:9200")
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    load_start = os.getloadavg()
    home = Path(tempfile.mkdtemp(prefix="whylake-bench-api-"))
    prefix = f"bench-api-{uuid.uuid4().hex[:8]}"
    replica = OpenSearchConfig(url=args.url, index_prefix=prefix, batch_size=1000)
    lookup_tenants = ["acme", "globex", "initech"]
    stream_tenants = [f"t{i:03d}" for i in range(args.stream_tenants)]
    keys = {t: f"wl_bench_{t}_{uuid.uuid4().hex}" for t in lookup_tenants + stream_tenants}
    (home / "keys.yaml").write_text(
        yaml.safe_dump({"keys": {key_digest(k): t for t, k in keys.items()}})
    )
    catalog = open_catalog(CatalogConfig.embedded(home))
    ensure_tables(catalog)
    rows = _rows(args.documents, lookup_tenants, seed=7, tag="r")
    t0 = time.perf_counter()
    for start in range(0, len(rows), 10_000):
        _commit(catalog, rows[start : start + 10_000], f"load-{start}")
    commit_s = time.perf_counter() - t0
    client = replica.client()
    t0 = time.perf_counter()
    outcome = index_records(client, replica, rows)
    client.indices.refresh(index=f"{prefix}-*")
    index_s = time.perf_counter() - t0
    targets = [(r["tenant_id"], r["request_id"]) for r in rows]

    port = _free_port()
    env = {**os.environ, "WHYLAKE_OPENSEARCH_INDEX_PREFIX": prefix}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "whylake.jobs.cli",
            "serve",
            "--home",
            str(home),
            "--keys",
            str(home / "keys.yaml"),
            "--port",
            str(port),
            "--opensearch-url",
            args.url,
        ],  # fmt: skip
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        health: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                health = httpx.get(base + "/healthz", timeout=5).json()
                if health.get("replica_fresh"):
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None:
                raise SystemExit(f"whylake serve exited with {server.returncode}")
            time.sleep(0.2)
        if not health.get("replica_fresh"):
            raise SystemExit(f"the replica never became fresh: {health}")
        cpu_before = _cpu_s(server.pid)
        lookup = asyncio.run(
            _lookups(base, targets, keys, args.clients, args.requests, args.tier, seed=11)
        )
        # Server CPU per lookup (warm-up included): what the machine's load does not change.
        lookup["server_cpu_ms_per_request"] = round(
            (_cpu_s(server.pid) - cpu_before) * 1000 / (args.requests + args.clients), 2
        )
        print(json.dumps(lookup, indent=2), flush=True)
        stream = (
            None
            if args.streams == 0
            else asyncio.run(
                _streams(
                    base,
                    catalog,
                    keys,
                    stream_tenants,
                    args.streams,
                    args.commits,
                    args.rows_per_commit,
                    args.timeout_s,
                )
            )
        )
        print(json.dumps(stream, indent=2), flush=True)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        client.indices.delete(index=f"{prefix}-*", ignore_unavailable=True)
        client.close()
        shutil.rmtree(home, ignore_errors=True)
    result = {
        "benchmark": "api",
        "goals": GOAL,
        "lookup": lookup,
        "stream": stream,
        "setup": {
            "documents": args.documents,
            "commit_s": round(commit_s, 1),
            "indexed": outcome.indexed,
            "index_s": round(index_s, 1),
        },
        "settings": {
            "server": "whylake serve (uvicorn, 1 process) as a subprocess on 127.0.0.1",
            "client": "asyncio + httpx, one connection per client, same machine",
            "replica": f"OpenSearch at {args.url}, private index prefix, 1 shard per index",
            "lookup_path": "replica (fresh) -> tier view rendered per request",
        },
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "load_average_1m_at_start": round(load_start[0], 2),
            "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
