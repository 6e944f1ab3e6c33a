"""The batch job's Beam arguments: the local runner's workers, without a timed flush."""

from __future__ import annotations

from apache_beam.runners.portability.fn_api_runner import worker_handlers

from whylake.pipelines.batch import local_pipeline_options, local_runner_args


def test_the_local_runner_gets_one_worker_unless_told_otherwise() -> None:
    assert local_runner_args("FnApiRunner", ()) == [
        "--runner=FnApiRunner",
        "--direct_num_workers=1",
    ]
    two = ("--direct_num_workers=2", "--direct_running_mode=multi_threading")
    assert local_runner_args("FnApiRunner", two) == ["--runner=FnApiRunner", *two]
    assert local_runner_args("FlinkRunner", ("--parallelism=2",)) == [
        "--runner=FlinkRunner",
        "--parallelism=2",
    ]


def test_local_options_turn_off_the_timed_flush_that_splits_elements() -> None:
    """Beam's gRPC data plane flushes on a timer, also mid-element (see
    tests/integration/test_local_runner.py); the job's options turn it off."""
    saved = worker_handlers.DATA_BUFFER_TIME_LIMIT_MS
    try:
        worker_handlers.DATA_BUFFER_TIME_LIMIT_MS = 1000  # Beam 2.77's default
        local_pipeline_options("FnApiRunner", ())
        assert worker_handlers.DATA_BUFFER_TIME_LIMIT_MS == 0
    finally:
        worker_handlers.DATA_BUFFER_TIME_LIMIT_MS = saved
