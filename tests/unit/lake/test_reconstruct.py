"""Reconstruction: a record as it stood at a past time or snapshot, later ones hidden."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest

from whylake.lake.catalog import EXPLANATIONS
from whylake.lake.reconstruct import (
    Reconstruction,
    committed_time,
    parse_as_of,
    reconstruct,
    to_json,
)
from whylake.schemas.errors import RecordNotFoundError, SnapshotNotFoundError

if TYPE_CHECKING:
    from collections.abc import Callable

    from pyiceberg.catalog import Catalog

    from tests.unit.lake.conftest import SeededLake

    RowFactory = Callable[..., dict[str, Any]]
    Committer = Callable[[Catalog, list[dict[str, Any]], str], int]


def test_as_of_a_time_shows_the_record_current_then(seeded_lake: SeededLake) -> None:
    then = reconstruct(seeded_lake.catalog, "acme", "r-1", as_of=seeded_lake.between)
    assert then.snapshot_id == seeded_lake.first_snapshot_id
    assert then.snapshot_committed_at <= seeded_lake.between
    assert (then.record["model_version"], then.record["explainer_method"]) == (
        "1.0.0",
        "integrated_gradients",
    )
    assert [h["model_version"] for h in then.history] == ["1.0.0"]
    assert then.as_of == seeded_lake.between


def test_a_request_explained_again_shows_the_newer_record_now_and_both_in_history(
    seeded_lake: SeededLake,
) -> None:
    now = reconstruct(seeded_lake.catalog, "acme", "r-1")
    assert now.snapshot_id == seeded_lake.second_snapshot_id
    assert (now.record["model_version"], now.record["explainer_method"]) == (
        "2.0.0",
        "kernel_shap",
    )
    # History is never rewritten: the first explanation is still there, oldest first.
    assert [(h["model_version"], h["explainer_method"], h["run_id"]) for h in now.history] == [
        ("1.0.0", "integrated_gradients", "run-1"),
        ("2.0.0", "kernel_shap", "run-2"),
    ]
    assert set(now.history[0]) == {
        "explanation_id",
        "explained_at",
        "model_version",
        "explainer_method",
        "run_id",
        "policy_hash",
        "review_route",
    }


def test_by_snapshot_id_matches_by_time(seeded_lake: SeededLake) -> None:
    lake = seeded_lake
    by_id = reconstruct(lake.catalog, "acme", "r-1", snapshot_id=lake.first_snapshot_id)
    by_time = reconstruct(lake.catalog, "acme", "r-1", as_of=lake.between)
    assert by_id.record == by_time.record
    assert by_id.history == by_time.history
    later = reconstruct(lake.catalog, "acme", "r-1", snapshot_id=lake.second_snapshot_id)
    assert later.record["model_version"] == "2.0.0"


def test_a_record_added_after_the_time_is_not_there_then(seeded_lake: SeededLake) -> None:
    with pytest.raises(RecordNotFoundError, match=r"'acme'.*'r-3'.*snapshot \d+"):
        reconstruct(seeded_lake.catalog, "acme", "r-3", as_of=seeded_lake.between)
    assert reconstruct(seeded_lake.catalog, "acme", "r-3").record["request_id"] == "r-3"


def test_a_tenant_cannot_reconstruct_another_tenants_request(seeded_lake: SeededLake) -> None:
    with pytest.raises(RecordNotFoundError, match="'acme'"):
        reconstruct(seeded_lake.catalog, "acme", "r-9")  # only globex has r-9
    # Both tenants have a request r-1: each gets its own.
    assert reconstruct(seeded_lake.catalog, "globex", "r-1").record["model_version"] == "9.9.9"
    assert reconstruct(seeded_lake.catalog, "acme", "r-1").record["tenant_id"] == "acme"


def test_a_time_before_the_first_commit_names_the_earliest_commit(
    seeded_lake: SeededLake,
) -> None:
    first = seeded_lake.catalog.load_table(EXPLANATIONS).snapshot_by_id(
        seeded_lake.first_snapshot_id
    )
    assert first is not None
    earliest = committed_time(first)
    pattern = f"earliest commit.*{re.escape(earliest.isoformat())}"
    with pytest.raises(SnapshotNotFoundError, match=pattern):
        reconstruct(seeded_lake.catalog, "acme", "r-1", as_of=earliest - timedelta(seconds=1))
    # The commit instant itself is included.
    at = reconstruct(seeded_lake.catalog, "acme", "r-1", as_of=earliest)
    assert at.snapshot_id == first.snapshot_id


def test_an_unknown_snapshot_id_is_an_error(seeded_lake: SeededLake) -> None:
    with pytest.raises(SnapshotNotFoundError, match="no snapshot 12345"):
        reconstruct(seeded_lake.catalog, "acme", "r-1", snapshot_id=12345)


def test_an_empty_table_has_nothing_to_reconstruct(lake_catalog: Catalog) -> None:
    with pytest.raises(SnapshotNotFoundError, match="no snapshots yet"):
        reconstruct(lake_catalog, "acme", "r-1")


def test_ambiguous_arguments_are_refused(seeded_lake: SeededLake) -> None:
    with pytest.raises(ValueError, match="not both"):
        reconstruct(seeded_lake.catalog, "acme", "r-1", as_of=seeded_lake.between, snapshot_id=1)
    with pytest.raises(ValueError, match="no time zone"):
        reconstruct(seeded_lake.catalog, "acme", "r-1", as_of=datetime(2024, 5, 1))
    with pytest.raises(ValueError, match="non-empty"):
        reconstruct(seeded_lake.catalog, "", "r-1")


def test_to_json_is_deterministic_with_iso_times(seeded_lake: SeededLake) -> None:
    first = reconstruct(seeded_lake.catalog, "acme", "r-1", as_of=seeded_lake.between)
    again = reconstruct(seeded_lake.catalog, "acme", "r-1", as_of=seeded_lake.between)
    text = to_json(first)
    assert text == to_json(again)
    doc = json.loads(text)
    assert list(doc) == sorted(doc)
    assert list(doc["record"]) == sorted(doc["record"])
    assert doc["record"]["event_ts"] == "2024-05-01T09:30:00.000000+00:00"
    assert doc["snapshot_id"] == seeded_lake.first_snapshot_id
    assert doc["record"]["counterfactuals"][0]["changes"][0]["feature"] == "late_payments"


def test_to_json_keeps_non_finite_numbers_visible_and_valid(make_row: RowFactory) -> None:
    record = make_row("acme", "r-x", stability=float("nan"), score_drift=float("inf"))
    rec = Reconstruction(record, 1, datetime(2024, 6, 1, tzinfo=UTC), [])
    doc = json.loads(to_json(rec))
    assert (doc["record"]["stability"], doc["record"]["score_drift"]) == ("nan", "inf")


def test_reconstruct_sees_a_record_appended_in_a_later_snapshot(
    lake_catalog: Catalog, make_row: RowFactory, commit_rows: Committer
) -> None:
    first = commit_rows(lake_catalog, [make_row("acme", "r-1")], "b-1")
    second = commit_rows(
        lake_catalog,
        [make_row("acme", "r-1", model_version="3.0.0", explained_at=datetime.now(UTC))],
        "b-2",
    )
    assert (
        reconstruct(lake_catalog, "acme", "r-1", snapshot_id=first).record["model_version"]
        == "1.0.0"
    )
    assert (
        reconstruct(lake_catalog, "acme", "r-1", snapshot_id=second).record["model_version"]
        == "3.0.0"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T12:00:00Z", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("2024-05-01T14:00:00+02:00", datetime(2024, 5, 1, 12, tzinfo=UTC)),
    ],
)
def test_parse_as_of(text: str, expected: datetime) -> None:
    assert parse_as_of(text) == expected


@pytest.mark.parametrize("text", ["2024-05-01", "2024-05-01T12:00:00", "yesterday"])
def test_parse_as_of_rejects_ambiguous_times(text: str) -> None:
    with pytest.raises(ValueError, match=text):
        parse_as_of(text)
