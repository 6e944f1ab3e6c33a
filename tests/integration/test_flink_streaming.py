"""The streaming job on Beam's Flink runner (local mini-cluster): the same exactly-once checks.

One run covers the guarantees the Prism tests check one by one: a malformed event among valid
ones becomes one dead letter, the job is SIGKILLed mid-stream and restarted, and afterwards
every event (the policy explains all) is in Iceberg exactly once and OpenSearch holds exactly
the Iceberg rows. Flink's job server is the jar `infra/services.sh fetch flink` stages.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.test_flink_runner import FLINK_VERSION
from tests.integration.test_streaming import (
    StreamJob,
    _assert_once_everywhere,
    _create_topic,
    _dead_letters,
    _events,
    _explanations,
    _offsets_at_end,
    _policy,
    _produce,
    _runs,
    _wait_for,
    job_factory,
    registry_root,
)

__all__ = ["job_factory", "registry_root"]

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FLINK = (
    "--runner=FlinkRunner",
    "--runner-arg=--flink_master=[local]",
    f"--runner-arg=--flink_version={FLINK_VERSION}",
    "--runner-arg=--environment_type=LOOPBACK",
    "--runner-arg=--parallelism=2",
)


@pytest.mark.timeout(1800)
def test_flink_streaming_killed_and_restarted_is_exactly_once_with_a_dead_letter(
    job_factory: Callable[..., StreamJob], registry_root: Path, tmp_path: Path
) -> None:
    topic = _create_topic()
    job = job_factory(topic, _policy(tmp_path, budget=100_000), runner_args=FLINK)
    events = _events(registry_root, topic, per_tenant=150)
    before, after = events[: len(events) // 2], events[len(events) // 2 :]
    job.start()
    _produce(topic, before, rate=100, raw=(b'{"tenant_id": "acme", "request_id": broken',))
    # A Flink mini-cluster takes a while to start here (minutes on a loaded 2-core machine).
    _wait_for("a first committed window", lambda: len(_explanations(job.home)) > 0, 900, job)
    job.kill()
    assert 0 < len(_explanations(job.home)) <= len(before)
    _produce(topic, after, rate=200)  # while the job is down
    job.start()
    _wait_for("every offset committed", lambda: _offsets_at_end(topic), 900, job)
    assert job.stop() == 0, job.log()

    rows = _assert_once_everywhere(job.home, topic)
    assert {r["request_id"] for r in rows} == {e["request_id"] for e in events}
    dead = _dead_letters(job.home)
    assert [(d["stage"], "broken" in d["record"]) for d in dead] == [("read", True)]
    statuses = sorted(r["status"] for r in _runs(job.home))
    assert statuses == ["started", "started", "stopped"]  # the killed run never finished
