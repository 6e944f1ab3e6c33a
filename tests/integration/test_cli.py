"""The command line end to end: real pipelines, real OpenSearch, honest exit codes and manifests.

Each command runs as `python -m whylake.jobs.cli ...` in a subprocess, as a user runs it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.integration.conftest import DAY, TEST_HASH_KEY, DemoHome
from whylake.lake.catalog import DEAD_LETTERS, RUNS, CatalogConfig, ensure_tables, open_catalog
from whylake.lake.opensearch import OpenSearchConfig

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
OPENSEARCH = f"http://127.0.0.1:{os.environ.get('WHYLAKE_OPENSEARCH_PORT', '9200')}"


def whylake(
    *args: str, cwd: Path, key: str | None = TEST_HASH_KEY.reveal()
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHYLAKE_")}
    env["COLUMNS"] = "200"
    if key is not None:
        env["WHYLAKE_HASH_KEY"] = key
    return subprocess.run(
        [sys.executable, "-m", "whylake.jobs.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def _manifest(home: Path) -> list[dict]:
    catalog = open_catalog(CatalogConfig.embedded(home))
    return catalog.load_table(RUNS).scan().to_arrow().to_pylist()


def _inputs(demo_home: DemoHome) -> list[str]:
    return [arg for p in demo_home.generated.paths for arg in ("--input", str(p))]


def test_batch_succeeds_and_a_rerun_adds_nothing(demo_home: DemoHome, tmp_path: Path) -> None:
    args = (
        "batch",
        *_inputs(demo_home),
        "--registry",
        str(demo_home.home / "models"),
        "--home",
        str(tmp_path),
        "--date",
        DAY.isoformat(),
    )
    first = whylake(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "succeeded" in first.stdout and "committed (new rows)" in first.stdout
    second = whylake(*args, cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    rows = _manifest(tmp_path)
    # Each run wrote a started row, then a final one.
    assert sorted(r["status"] for r in rows) == ["started", "started", "succeeded", "succeeded"]
    finals = [r for r in rows if r["status"] == "succeeded"]
    assert sorted(r["records_committed"] for r in finals)[0] == 0  # the rerun added nothing
    assert all(r["finished_at"] is not None and r["entry_id"].endswith("/final") for r in finals)


def test_a_run_whose_explanations_all_fail_exits_1_and_is_recorded_failed(
    demo_home: DemoHome, tmp_path: Path
) -> None:
    registry = tmp_path / "models"
    shutil.copytree(demo_home.home / "models", registry)
    # Damage globex's artifact after registration: validation (cards only) still passes, every
    # explanation of globex fails the sha256 check, so the run must not call itself a success.
    (artifact,) = (registry / "globex").glob("*/*/model.pt")
    artifact.write_bytes(artifact.read_bytes() + b"\0")
    done = whylake(
        "batch",
        *_inputs(demo_home),
        "--registry",
        str(registry),
        "--home",
        str(tmp_path),
        "--tenant",
        "globex",
        "--date",
        DAY.isoformat(),
        cwd=tmp_path,
    )
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    final = next(r for r in _manifest(tmp_path) if r["status"] != "started")
    assert final["status"] == "failed"
    assert final["records_failed"] == final["records_sampled"] > 0
    assert any("max_failed_share" in w for w in final["warnings"])
    dead = open_catalog(CatalogConfig.embedded(tmp_path)).load_table(DEAD_LETTERS)
    letters = dead.scan().to_arrow().to_pylist()
    explain = [d for d in letters if d["stage"] == "explain"]
    assert len(explain) == final["records_failed"]
    assert {d["error_type"] for d in explain} == {"RegistryIntegrityError"}


def test_a_run_that_raises_is_recorded_failed_with_the_error(tmp_path: Path) -> None:
    bad = tmp_path / "no-columns.parquet"
    pq.write_table(pa.table({"not_a_field": [1, 2, 3]}), bad)
    (tmp_path / "models").mkdir()
    done = whylake("batch", "--input", str(bad), "--home", str(tmp_path), cwd=tmp_path)
    assert done.returncode != 0
    rows = _manifest(tmp_path)
    assert sorted(r["status"] for r in rows) == ["failed", "started"]
    final = next(r for r in rows if r["status"] == "failed")
    # The file is dead letters (one per row, with the reason), not a crash; a run in which no
    # record was valid fails.
    assert any("none of the 3 records read was valid" in w for w in final["warnings"]), final
    dead = open_catalog(CatalogConfig.embedded(tmp_path)).load_table(DEAD_LETTERS).scan()
    reasons = dead.to_arrow().column("error_message").to_pylist()
    assert len(reasons) == 3 and all("required column" in r for r in reasons), reasons


def test_the_demo_command_runs_end_to_end(tmp_path: Path) -> None:
    done = whylake("demo", "--per-tenant", "300", "--home", str(tmp_path), cwd=tmp_path, key=None)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for step in ("the batch job", "an audit query", "a reconstruction", "HTML report", "Tier 1"):
        assert step in done.stdout
    assert list((tmp_path / "reports").glob("acme-*.html"))
    # One Tier 1 sentence (the decision, in words) and one letter.
    assert "The decision on your request acme-" in done.stdout
    (letter,) = (tmp_path / "letters").glob("acme-*.pdf")
    assert letter.read_bytes().startswith(b"%PDF-")


def test_replica_backfill_search_and_retention_commands(
    demo_home: DemoHome, tmp_path: Path
) -> None:
    from opensearchpy import OpenSearch

    client = OpenSearch(hosts=[OPENSEARCH], timeout=30)
    if not client.ping():
        pytest.fail(f"no OpenSearch at {OPENSEARCH}: start it with `make up`")
    # A home of its own with one tenant's rows under a tenant id no other test uses.
    home = tmp_path / "home"
    catalog = open_catalog(CatalogConfig.embedded(home))
    ensure_tables(catalog)
    tenant = f"cli{uuid.uuid4().hex[:8]}"
    source = demo_home.catalog().load_table("whylake.explanations").scan().to_arrow()
    rows = source.filter(pa.compute.equal(source["tenant_id"], "acme")).slice(0, 5)
    at = rows.schema.get_field_index("tenant_id")
    field = rows.schema.field(at)
    rows = rows.set_column(at, field, pa.array([tenant] * rows.num_rows, field.type))
    catalog.load_table("whylake.explanations").append(rows)
    try:
        url = ("--opensearch-url", OPENSEARCH)
        fill = whylake(
            "replica",
            "backfill",
            "--since",
            DAY.isoformat(),
            "--tenant",
            tenant,
            *url,
            "--home",
            str(home),
            cwd=tmp_path,
        )
        assert fill.returncode == 0, fill.stdout + fill.stderr
        assert f"indexed {rows.num_rows} documents, 0 failed" in fill.stdout
        client.indices.refresh(index=OpenSearchConfig(OPENSEARCH).tenant_pattern(tenant))
        request = rows["request_id"][0].as_py()
        found = whylake("search", "--tenant", tenant, "--request-id", request, *url, cwd=tmp_path)
        assert found.returncode == 0, found.stderr
        assert request in found.stdout and found.stdout.count('"request_id"') == 1
        kept = whylake("replica", "retention", "--days", "3650", *url, cwd=tmp_path)
        assert kept.returncode == 0 and "deleted 0 indices" in kept.stdout
    finally:
        client.indices.delete(
            index=OpenSearchConfig(OPENSEARCH).tenant_pattern(tenant), ignore_unavailable=True
        )
        client.close()
