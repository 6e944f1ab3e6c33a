"""The batch job killed at each commit boundary, then rerun; and two jobs started together.

Each kill is a failpoint (lake/failpoints.py) armed through WHYLAKE_FAILPOINTS on a real
`whylake batch` process, which sends itself SIGKILL at exactly that boundary: no race with a
timer. After the rerun every explanation and dead letter is in Iceberg exactly once and every
explanation in OpenSearch exactly once (set equality with a run that was never killed), and the
manifest shows the killed run as started, never finished.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.conftest import DAY, POLICY, TEST_HASH_KEY, DemoHome
from whylake.jobs.batch_job import run_batch
from whylake.jobs.demo_data import generate_day
from whylake.lake.catalog import DEAD_LETTERS, EXPLANATIONS, RUNS, CatalogConfig, open_catalog
from whylake.lake.opensearch import OpenSearchConfig
from whylake.lake.runs import list_runs
from whylake.pipelines.configs import BatchJobConfig, StoreConfig
from whylake.transforms.sampling.policy import load_policies

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]
OPENSEARCH = os.environ.get(
    "WHYLAKE_TEST_OPENSEARCH_URL",
    f"http://127.0.0.1:{os.environ.get('WHYLAKE_OPENSEARCH_PORT', '9200')}",
)


@dataclass(frozen=True)
class Day:
    """A small day of logs (with malformed lines) and what a run that is never killed commits."""

    registry: Path
    inputs: tuple[str, ...]
    explanations: frozenset[str]
    dead_letters: frozenset[str]

    def config(self, home: Path, replica: OpenSearchConfig | None) -> BatchJobConfig:
        store = StoreConfig(
            registry_root=str(self.registry),
            policies=load_policies(POLICY),
            hash_key=TEST_HASH_KEY,
            catalog=CatalogConfig.embedded(home),
            opensearch=replica,
        )
        return BatchJobConfig(inputs=self.inputs, store=store, day=DAY)

    def cli(self, home: Path, replica: OpenSearchConfig, **env: str) -> Job:
        """`whylake batch` over this day in a process of its own, as a scheduler starts it."""
        args = [a for path in self.inputs for a in ("--input", path)]
        environ = {k: v for k, v in os.environ.items() if not k.startswith("WHYLAKE_")}
        environ |= {
            "WHYLAKE_HASH_KEY": TEST_HASH_KEY.reveal(),
            "WHYLAKE_OPENSEARCH_INDEX_PREFIX": replica.index_prefix,
            "WHYLAKE_LOG": "WARNING",
            "COLUMNS": "200",
            **env,
        }
        # Output goes to files, not pipes: whatever a job prints, the test's own memory stays
        # bounded (a pipe read by communicate() holds all of it in this process).
        home.parent.mkdir(parents=True, exist_ok=True)
        out = home.parent / f"{home.name}-{uuid.uuid4().hex[:6]}.out"
        err = out.with_suffix(".err")
        with out.open("w") as stdout, err.open("w") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-m", "whylake.jobs.cli", "batch", *args]
                + ["--date", DAY.isoformat(), "--registry", str(self.registry)]
                + ["--home", str(home), "--opensearch-url", replica.url],
                cwd=home.parent,
                env=environ,
                stdout=stdout,
                stderr=stderr,
            )
        return Job(process, out, err)


@dataclass(frozen=True)
class Job:
    """A `whylake batch` process and the files its output goes to."""

    process: subprocess.Popen[bytes]
    out: Path
    err: Path

    def wait(self, timeout: float = 900) -> tuple[int, str, str]:
        """Its exit status and the ends of its stdout and stderr (with their sizes)."""
        code = self.process.wait(timeout=timeout)
        return code, _tail(self.out, 2000), _tail(self.err, 3000)


def _tail(path: Path, chars: int) -> str:
    size = path.stat().st_size
    with path.open("rb") as f:
        f.seek(max(0, size - 4 * chars))
        text = f.read().decode(errors="replace")[-chars:]
    return f"[{path.name}: {size:,} bytes] {text}"


def _ids(home: Path, table: str, key: str) -> Counter[str]:
    rows = open_catalog(CatalogConfig.embedded(home)).load_table(table).scan(selected_fields=(key,))
    return Counter(rows.to_arrow()[key].to_pylist())


def _documents(replica: OpenSearchConfig) -> Counter[str]:
    client = replica.client()
    try:
        pattern = f"{replica.index_prefix}-*"
        client.indices.refresh(index=pattern, ignore_unavailable=True, allow_no_indices=True)
        hits = client.search(
            index=pattern,
            body={"query": {"match_all": {}}, "size": 10_000, "_source": ["explanation_id"]},
            ignore_unavailable=True,
            allow_no_indices=True,
        )["hits"]["hits"]
    finally:
        client.close()
    assert all(h["_source"]["explanation_id"] == h["_id"] for h in hits)
    return Counter(h["_id"] for h in hits)


def _statuses(home: Path) -> dict[str, list[str]]:
    rows = open_catalog(CatalogConfig.embedded(home)).load_table(RUNS).scan().to_arrow()
    out: dict[str, list[str]] = {}
    for row in rows.to_pylist():
        out.setdefault(row["run_id"], []).append(row["status"])
    return {k: sorted(v) for k, v in out.items()}


@pytest.fixture(scope="module")
def day(demo_home: DemoHome, tmp_path_factory: pytest.TempPathFactory) -> Day:
    folder = tmp_path_factory.mktemp("crash-day")
    generated = generate_day(demo_home.registry, folder / "input", DAY, per_tenant=300, seed=14)
    partial = Day(
        demo_home.home / "models", tuple(map(str, generated.paths)), frozenset(), frozenset()
    )
    reference = folder / "never-killed"
    assert run_batch(partial.config(reference, None)).status == "succeeded"
    explanations = _ids(reference, EXPLANATIONS, "explanation_id")
    dead = _ids(reference, DEAD_LETTERS, "dead_letter_id")
    assert explanations and dead and max(explanations.values()) == max(dead.values()) == 1
    return Day(partial.registry, partial.inputs, frozenset(explanations), frozenset(dead))


@pytest.fixture
def replica() -> OpenSearchConfig:
    config = OpenSearchConfig(url=OPENSEARCH, index_prefix=f"test-crash-{uuid.uuid4().hex[:8]}")
    client = config.client()
    try:
        if not client.ping():
            pytest.fail(f"no OpenSearch at {OPENSEARCH}: start it with `make up`")
        yield config
    finally:
        client.indices.delete(index=f"{config.index_prefix}-*", ignore_unavailable=True)
        client.close()


# What is durable when the job dies at each boundary, of what a whole run commits:
# (explanations, dead letters, replica documents), each "none", "some" or "all". Once the first
# explanation group is durable, other worker threads may finish theirs before the kill lands.
SOME = frozenset({"some", "all"})
NONE, ALL = frozenset({"none"}), frozenset({"all"})
BOUNDARIES = {
    "before-first-commit": (NONE, NONE, NONE),
    "after-explanations-commit": (SOME, NONE, NONE),
    "before-replica": (SOME, NONE, NONE),
    "before-final-manifest": (ALL, ALL, ALL),
}


def _amount(found: Counter[str], expected: frozenset[str]) -> str:
    assert set(found) <= expected and max(found.values(), default=1) == 1
    return "none" if not found else "all" if set(found) == expected else "some"


@pytest.mark.parametrize("boundary", list(BOUNDARIES))
def test_a_run_killed_at_a_boundary_and_rerun_loses_and_duplicates_nothing(
    day: Day, replica: OpenSearchConfig, tmp_path: Path, boundary: str
) -> None:
    home = tmp_path / "home"
    code, out, err = day.cli(home, replica, WHYLAKE_FAILPOINTS=boundary).wait()
    assert code == -signal.SIGKILL, out + err
    # SIGKILL from anything else (the kernel's OOM killer) is not the boundary under test.
    assert f"failpoint {boundary} reached" in err, (
        f"the job was SIGKILLed before reaching {boundary}: not by the failpoint (out of "
        f"memory? see dmesg); its stderr ends: {err}"
    )

    # The kill happened where it says: exactly this much was durable.
    state = (
        _amount(_ids(home, EXPLANATIONS, "explanation_id"), day.explanations),
        _amount(_ids(home, DEAD_LETTERS, "dead_letter_id"), day.dead_letters),
        _amount(_documents(replica), day.explanations),
    )
    assert all(a in allowed for a, allowed in zip(state, BOUNDARIES[boundary], strict=True)), state
    (killed_run,) = _statuses(home)
    assert _statuses(home)[killed_run] == ["started"]

    rerun = run_batch(day.config(home, replica)).record
    assert rerun.status == "succeeded", rerun.warnings
    assert rerun.records_committed + rerun.records_already_present == len(day.explanations)

    # 0 lost, 0 duplicated, in Iceberg and in OpenSearch.
    explanations = _ids(home, EXPLANATIONS, "explanation_id")
    assert set(explanations) == day.explanations and max(explanations.values()) == 1
    dead = _ids(home, DEAD_LETTERS, "dead_letter_id")
    assert set(dead) == day.dead_letters and max(dead.values()) == 1
    documents = _documents(replica)
    assert set(documents) == day.explanations and max(documents.values()) == 1
    # The killed run stays visible: started, never finished.
    statuses = _statuses(home)
    assert statuses[killed_run] == ["started"]
    assert statuses[rerun.run_id] == ["started", "succeeded"]
    shown = {
        r["run_id"]: r["status"] for r in list_runs(open_catalog(CatalogConfig.embedded(home)))
    }
    assert shown == {killed_run: "started", rerun.run_id: "succeeded"}


def test_two_jobs_started_together_on_a_fresh_home_both_succeed(
    day: Day, replica: OpenSearchConfig, tmp_path: Path
) -> None:
    home = tmp_path / "fresh"  # no catalog, no tables yet: both jobs create them
    jobs = [day.cli(home, replica), day.cli(home, replica)]
    for code, out, err in [job.wait() for job in jobs]:
        assert code == 0, out + err
    explanations = _ids(home, EXPLANATIONS, "explanation_id")
    assert set(explanations) == day.explanations and max(explanations.values()) == 1
    dead = _ids(home, DEAD_LETTERS, "dead_letter_id")
    assert set(dead) == day.dead_letters and max(dead.values()) == 1
    documents = _documents(replica)
    assert set(documents) == day.explanations and max(documents.values()) == 1
    statuses = _statuses(home)
    assert len(statuses) == 2
    assert all(s in (["started", "succeeded"],) for s in statuses.values()), statuses
