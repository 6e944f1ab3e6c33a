"""Failpoints: a no-op unless armed; armed, they kill or raise exactly where they are placed."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from whylake.jobs import options
from whylake.lake.catalog import ALERTS, DEAD_LETTERS, EXPLANATIONS, METRICS
from whylake.lake.failpoints import KILL, POINTS, RAISE, Failpoints
from whylake.schemas.errors import ConfigError, FailpointTriggered
from whylake.transforms.write_iceberg import AppendConfig, _AppendGroupFn

ROOT = Path(__file__).resolve().parents[3]


def test_parse_arms_kill_by_default_and_raise_on_request() -> None:
    armed = Failpoints.parse(" after-explanations-commit , before-replica=raise ")
    assert armed.armed == (("after-explanations-commit", KILL), ("before-replica", RAISE))
    assert armed.describe() == "after-explanations-commit=kill,before-replica=raise"
    assert Failpoints.parse("") == Failpoints()


@pytest.mark.parametrize("text", ["after-explanation-commit", "before-replica=panic"])
def test_a_misspelt_point_or_action_is_refused_before_the_run(text: str) -> None:
    with pytest.raises(ConfigError, match="failpoint"):
        Failpoints.parse(text)


def test_unarmed_points_do_nothing_and_armed_ones_fire_only_there() -> None:
    for name in POINTS:
        Failpoints().hit(name)
    armed = Failpoints.parse("before-replica=raise")
    for name in set(POINTS) - {"before-replica"}:
        armed.hit(name)
    with pytest.raises(FailpointTriggered, match="before-replica"):
        armed.hit("before-replica")
    with pytest.raises(ConfigError):
        Failpoints().hit("no-such-point")


def test_kill_ends_the_process_with_sigkill_at_the_point() -> None:
    code = (
        "from whylake.lake.failpoints import Failpoints\n"
        "print('before', flush=True)\n"
        "Failpoints.parse('before-final-manifest').hit('before-final-manifest')\n"
        "print('after', flush=True)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL
    assert done.stdout.split() == ["before"]


def test_the_setting_is_read_on_the_launcher_and_travels_in_the_store_config(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(options.ENV_FAILPOINTS, "after-explanations-commit")
    assert options.failpoints() == Failpoints((("after-explanations-commit", KILL),))
    monkeypatch.delenv(options.ENV_FAILPOINTS)
    assert options.failpoints() == Failpoints()


def test_every_point_in_the_code_is_a_known_one() -> None:
    roots = re.search(r"ROOTS = \(([^)]*)\)", (ROOT / "setup.py").read_text()).group(1)
    used = set()
    for root in re.findall(r'"(\w+)"', roots):
        for path in (ROOT / root).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            used |= set(re.findall(r"\.hit\(\"([a-z-]+)\"\)", text))
    # The commit step names its point after its table (write_iceberg.py).
    used |= {
        f"after-{t.split('.')[1].replace('_', '-')}-commit"
        for t in (EXPLANATIONS, DEAD_LETTERS, METRICS)
    }
    assert used == set(POINTS)


def test_a_table_without_a_point_of_its_own_commits_without_one() -> None:
    # A commit step for a table added later (as the monitoring tables were) must not make
    # every run fail with "unknown failpoint".
    schema = pa.schema([("k", pa.string()), ("tenant_id", pa.string())])
    points = {
        table: _AppendGroupFn(AppendConfig(table, "k", schema, "run-1")).after_commit
        for table in (EXPLANATIONS, METRICS, ALERTS)
    }
    assert points == {
        EXPLANATIONS: "after-explanations-commit",
        METRICS: "after-metrics-commit",
        ALERTS: None,
    }
