"""The same batch pipeline on Beam's Flink runner (local mini-cluster) gives the same records."""

from __future__ import annotations

import os

import pytest

from tests.integration.conftest import DemoHome
from whylake.jobs.batch_job import run_batch
from whylake.lake.catalog import EXPLANATIONS, CatalogConfig, open_catalog

pytestmark = pytest.mark.integration
FLINK_VERSION = os.environ.get("WHYLAKE_FLINK_VERSION", "1.19")
# The job server jar is staged by `infra/services.sh fetch flink` into Beam's jar cache, so
# Beam starts it without a download; LOOPBACK runs the Python workers in this process.
FLINK_ARGS = (
    "--flink_master=[local]",
    f"--flink_version={FLINK_VERSION}",
    "--environment_type=LOOPBACK",
    "--parallelism=2",
)


def _by_id(home) -> dict[str, dict]:
    rows = open_catalog(CatalogConfig.embedded(home)).load_table(EXPLANATIONS).scan().to_arrow()
    return {r["explanation_id"]: r for r in rows.to_pylist()}


def test_flink_runner_writes_the_same_explanations_as_the_local_runner(
    demo_home: DemoHome, tmp_path
) -> None:
    run = run_batch(
        demo_home.config(
            catalog=CatalogConfig.embedded(tmp_path), runner="FlinkRunner", runner_args=FLINK_ARGS
        )
    ).record
    assert run.status == "succeeded", run.warnings
    assert run.records_read == demo_home.generated.records
    local, flink = _by_id(demo_home.home), _by_id(tmp_path)
    assert set(flink) == set(local)
    for key, row in flink.items():
        other = local[key]
        for field in (
            "request_id",
            "model_sha256",
            "sampling_reason",
            "input_hash",
            "counterfactual_status",
            "policy_version",
        ):
            assert row[field] == other[field], field
        assert row["inclusion_probability"] == pytest.approx(other["inclusion_probability"])
        assert row["prediction"] == pytest.approx(other["prediction"], abs=1e-6)
        for a, b in zip(row["attributions"], other["attributions"], strict=True):
            assert a["value"] == pytest.approx(b["value"], abs=1e-5)
