"""Production storage for real: inputs and warehouse on an S3 object store, a REST catalog.

The object store is the SeaweedFS server `make up` starts (infra/svc/seaweedfs.sh); the REST
catalog is Apache Iceberg's own REST catalog server (infra/svc/iceberg-rest.sh), started here
privately on a free port with a fresh JDBC backend and a fresh warehouse prefix, so the module
leaves nothing behind for other runs and sees nothing of theirs. The jobs run as a user runs
them: the `whylake` CLI in a subprocess, configured only through pyiceberg's environment.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from tests.integration.conftest import DAY, TEST_HASH_KEY
from whylake.jobs.demo_data import GeneratedDay, generate_day
from whylake.jobs.demo_models import register_demo_models
from whylake.lake.audit import run_tenant_sql
from whylake.lake.catalog import DEAD_LETTERS, EXPLANATIONS, RUNS, CatalogConfig, open_catalog
from whylake.lake.reconstruct import reconstruct
from whylake.lake.storage import StorageConfig
from whylake.registry.store import ModelRegistry

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
S3_ENDPOINT = f"http://127.0.0.1:{os.environ.get('WHYLAKE_S3_PORT', '8333')}"
BUCKET = os.environ.get("WHYLAKE_S3_BUCKET", "whylake")
# The local object store's own test identity (infra/services.sh); it listens on loopback only.
S3_PROPERTIES = {
    "s3.endpoint": S3_ENDPOINT,
    "s3.region": "us-east-1",
    "s3.access-key-id": os.environ.get("WHYLAKE_S3_ACCESS_KEY", "whylake-local"),
    "s3.secret-access-key": os.environ.get("WHYLAKE_S3_SECRET_KEY", "whylake-local-secret"),
}


@dataclass(frozen=True)
class Lake:
    """A REST catalog whose warehouse, like the job's inputs, lives on the object store."""

    uri: str
    prefix: str  # s3://bucket/test-<id>: everything this module writes is below it
    storage: StorageConfig
    home: Path

    def catalog_properties(self) -> dict[str, str]:
        return {"type": "rest", "uri": self.uri, **S3_PROPERTIES}

    def catalog(self) -> object:
        return open_catalog(CatalogConfig.of("whylake", self.catalog_properties()))

    def env(self) -> dict[str, str]:
        """A user's environment: pyiceberg's settings for the catalog named `whylake`."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("WHYLAKE_", "PYICEBERG_", "AWS_"))
        }
        env.update(COLUMNS="200", WHYLAKE_HASH_KEY=TEST_HASH_KEY.reveal())
        for key, value in self.catalog_properties().items():
            env[
                f"PYICEBERG_CATALOG__WHYLAKE__{key.upper().replace('.', '__').replace('-', '_')}"
            ] = value
        return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _object_store() -> pafs.FileSystem:
    storage = StorageConfig.of(S3_PROPERTIES)
    fs, _ = storage.filesystem(f"s3://{BUCKET}/")
    try:
        fs.get_file_info(BUCKET)
        if fs.get_file_info(BUCKET).type != pafs.FileType.Directory:
            raise OSError(f"bucket {BUCKET!r} does not exist")
    except OSError as exc:
        pytest.fail(
            f"no object store at {S3_ENDPOINT} ({exc}): start it with `make up` "
            "(infra/services.sh up seaweedfs)"
        )
    return fs


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lake]:
    fs = _object_store()
    prefix = f"{BUCKET}/test-{uuid.uuid4().hex[:12]}"
    run = tmp_path_factory.mktemp("iceberg-rest")
    port = _free_port()
    env = {
        **os.environ,
        "WHYLAKE_INFRA_RUN": str(run),
        "WHYLAKE_ICEBERG_REST_PORT": str(port),
        "WHYLAKE_ICEBERG_REST_WAREHOUSE": f"s3://{prefix}/warehouse",
    }

    def catalog_server(action: str) -> None:
        done = subprocess.run(
            ["bash", "infra/services.sh", action, "iceberg-rest"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, (
            f"infra/services.sh {action} iceberg-rest:\n{done.stdout}{done.stderr}"
        )

    catalog_server("up")
    try:
        yield Lake(
            f"http://127.0.0.1:{port}",
            f"s3://{prefix}",
            StorageConfig.of(S3_PROPERTIES),
            tmp_path_factory.mktemp("home"),
        )
    finally:
        catalog_server("down")
        fs.delete_dir(prefix)


@dataclass(frozen=True)
class Run:
    """One batch run whose inputs were uploaded to the object store."""

    generated: GeneratedDay
    inputs: tuple[str, ...]
    done: subprocess.CompletedProcess[str]


def whylake(lake: Lake, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "whylake.jobs.cli", *args],
        cwd=lake.home,
        env=lake.env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.fixture(scope="module")
def batch_run(lake: Lake) -> Run:
    registry = ModelRegistry(lake.home / "models")
    register_demo_models(registry)
    generated = generate_day(registry, lake.home / "input", DAY, per_tenant=300)
    fs, _ = lake.storage.filesystem(lake.prefix)
    inputs = []
    for path in generated.paths:
        uri = f"{lake.prefix}/logs/{DAY.isoformat()}/{path.name}"
        with fs.open_output_stream(uri.removeprefix("s3://")) as out:
            out.write(path.read_bytes())
        inputs.append(uri)
    logs = f"{lake.prefix}/logs/{DAY.isoformat()}"
    done = whylake(
        lake,
        "batch",
        "--input",
        f"{logs}/*.jsonl",
        "--input",
        f"{logs}/*.parquet",
        "--registry",
        str(lake.home / "models"),
        "--date",
        DAY.isoformat(),
        "--home",
        str(lake.home / "never-used"),
    )
    return Run(generated, tuple(sorted(inputs)), done)


def test_the_batch_job_reads_s3_inputs_and_commits_through_the_rest_catalog(
    lake: Lake, batch_run: Run
) -> None:
    assert batch_run.done.returncode == 0, batch_run.done.stdout + batch_run.done.stderr
    catalog = lake.catalog()
    runs = catalog.load_table(RUNS).scan().to_arrow().to_pylist()  # type: ignore[attr-defined]
    assert len(runs) == 2 and {r["status"] for r in runs} >= {"succeeded"}, runs
    final = next(r for r in runs if r["status"] == "succeeded")
    assert final["records_read"] == batch_run.generated.records
    logs = f"{lake.prefix}/logs/{DAY.isoformat()}"
    assert sorted(final["inputs"]) == [f"{logs}/*.jsonl", f"{logs}/*.parquet"]
    explanations = catalog.load_table(EXPLANATIONS)  # type: ignore[attr-defined]
    rows = explanations.scan().to_arrow()
    assert rows.num_rows == final["records_committed"] > 0
    assert {t for t in rows["tenant_id"].to_pylist()} == {"acme", "globex", "initech"}
    # Everything lives on the object store: metadata, manifests and data files.
    assert explanations.metadata_location.startswith(f"{lake.prefix}/warehouse/")
    files = [t.file.file_path for t in explanations.scan().plan_files()]
    assert files and all(f.startswith(f"{lake.prefix}/warehouse/") for f in files)
    # The embedded default was never opened: the environment's catalog was used unchanged.
    assert not (lake.home / "never-used" / "catalog.db").exists()
    # Malformed lines became dead letters pointing at their object and line.
    dead = catalog.load_table(DEAD_LETTERS).scan().to_arrow().to_pylist()  # type: ignore[attr-defined]
    assert len(dead) == batch_run.generated.malformed == final["records_invalid"]
    read_stage = [d for d in dead if d["stage"] == "read"]
    assert read_stage and all(d["source"].startswith(f"{lake.prefix}/logs/") for d in read_stage)


def test_the_tenant_audit_and_a_reconstruction_read_the_object_store(
    lake: Lake, batch_run: Run
) -> None:
    assert batch_run.done.returncode == 0, batch_run.done.stderr
    catalog = lake.catalog()
    table = catalog.load_table(EXPLANATIONS)  # type: ignore[attr-defined]
    acme = [r for r in table.scan().to_arrow().to_pylist() if r["tenant_id"] == "acme"]
    sql = (
        "SELECT count(*) AS n, count(DISTINCT tenant_id) AS tenants, "
        "round(sum(ht_weight), 6) AS population FROM explanations"
    )
    done = whylake(lake, "sql", sql, "--tenant", "acme", "--output", "json")
    assert done.returncode == 0, done.stdout + done.stderr
    answer = json.loads(done.stdout)
    assert answer == [
        {
            "n": len(acme),
            "tenants": 1,
            "population": round(sum(r["ht_weight"] for r in acme), 6),
        }
    ]
    # The same through the library, time-travelled to the first snapshot with a row of acme.
    first = min(table.snapshots(), key=lambda s: s.timestamp_ms)
    in_first = run_tenant_sql(
        catalog,  # type: ignore[arg-type]
        "acme",
        "SELECT count(*) AS n FROM explanations",
        snapshot_id=first.snapshot_id,
    ).to_pylist()[0]["n"]
    assert 0 <= in_first <= len(acme)
    # Reconstruction of one request, through the CLI, equals the row in the table.
    target = sorted(acme, key=lambda r: r["request_id"])[0]
    shown = whylake(lake, "reconstruct", "--tenant", "acme", "--request-id", target["request_id"])
    assert shown.returncode == 0, shown.stdout + shown.stderr
    record = json.loads(shown.stdout)["record"]
    assert record["explanation_id"] == target["explanation_id"]
    assert [a["value"] for a in record["attributions"]] == [
        a["value"] for a in target["attributions"]
    ]
    again = reconstruct(catalog, "acme", target["request_id"])  # type: ignore[arg-type]
    assert again.record["explanation_id"] == target["explanation_id"]


def test_an_s3_pattern_that_matches_nothing_is_a_clear_error(lake: Lake) -> None:
    done = whylake(lake, "batch", "--input", f"{lake.prefix}/nothing-here/*.jsonl")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "matched no file" in done.stdout + done.stderr
