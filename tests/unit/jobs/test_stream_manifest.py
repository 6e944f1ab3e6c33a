"""The streaming run manifest counts what the pipeline counted (no hard-coded zeros)."""

from __future__ import annotations

from whylake.jobs.stream_job import manifest_counts


def test_counts_come_from_counters_or_progress_hooks_whichever_saw_more() -> None:
    counters = {"records_read": 120, "dead_letters.read": 2, "records_explained": 5}
    progress = {
        "kafka_read": 100,  # the hooks saw fewer reads than the counter: the counter wins
        "dead_letters.late": 3,
        "dead_letters.validate": 4,
        "dead_letters.explain": 1,
        "records_sampled": 9,
        "explained": 8,
        "explanations.committed": 6,
        "explanations.already_present": 2,
        "records_replayed_skipped": 7,
        "records_behind_watermark": 5,
    }
    got = manifest_counts(counters, progress)
    assert got["records_read"] == 120
    assert got["records_invalid"] == 2 + 3 + 4  # unreadable + late + failed validation
    assert got["records_sampled"] == 9 and got["records_explained"] == 8
    assert got["records_failed"] == 1
    assert (got["records_committed"], got["records_already_present"]) == (6, 2)
    assert got["replica_lag"] is None  # no replica configured: no counter at all
    assert any("3 records later than the allowed lateness" in w for w in got["warnings"])
    assert any("7 re-read records" in w for w in got["warnings"])
    assert any("5 records came in behind the watermark" in w for w in got["warnings"])
    # read 120 = 2 + 3 + 4 refused + 7 re-read skipped + valid; with no valid count, 104 are
    # unaccounted for: the manifest says so instead of balancing silently.
    assert any("104 records read are not accounted for" in w for w in got["warnings"])


def test_balanced_counts_raise_no_warning() -> None:
    counters = {"records_read": 10, "dead_letters.read": 1, "records_valid": 9}
    assert manifest_counts(counters, {})["warnings"] == []


def test_a_replica_that_indexed_everything_reports_zero_lag() -> None:
    assert manifest_counts({"replica_indexed": 4}, {})["replica_lag"] == 0
