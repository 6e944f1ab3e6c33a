"""Human reviews: append-only, tenant-scoped, reviewers hashed, visible as of a time."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pyiceberg.catalog import Catalog

from whylake.lake.catalog import REVIEWS
from whylake.lake.history import LOGGED_TABLES, record_history
from whylake.lake.reconstruct import reconstruct, to_json
from whylake.lake.reviews import ReviewRequest, add_review, list_reviews, with_reviews
from whylake.schemas.errors import ConfigError, RecordNotFoundError
from whylake.schemas.secrets import Secret

KEY = Secret("review-test-key", "tests")


@pytest.fixture
def reviewed(lake_catalog: Catalog, make_row: Any, commit_rows: Any) -> Catalog:
    commit_rows(lake_catalog, [make_row("acme", "r-1"), make_row("globex", "r-1")], "b-1")
    return lake_catalog


def test_a_review_is_stored_with_the_reviewer_hashed(reviewed: Catalog) -> None:
    row = add_review(reviewed, ReviewRequest("acme", "r-1", "Ada Lovelace", "confirm", "ok"), KEY)
    stored = reviewed.load_table(REVIEWS).scan().to_arrow().to_pylist()
    assert stored == [row]
    expected = hmac.new(b"review-test-key", b"acme\x1fAda Lovelace", hashlib.sha256).hexdigest()
    assert row["reviewer_hash"] == expected
    assert "Ada" not in str(stored)
    assert row["explanation_id"] == reconstruct(reviewed, "acme", "r-1").record["explanation_id"]


def test_reviews_are_scoped_to_the_tenant_and_the_record(reviewed: Catalog) -> None:
    add_review(reviewed, ReviewRequest("acme", "r-1", "ada", "escalate", "needs a clinician"), KEY)
    add_review(reviewed, ReviewRequest("globex", "r-1", "bob", "acknowledge", "seen"), KEY)
    assert [r["decision"] for r in list_reviews(reviewed, "acme")] == ["escalate"]
    assert [r["tenant_id"] for r in list_reviews(reviewed, "globex", "r-1")] == ["globex"]
    with pytest.raises(RecordNotFoundError):
        add_review(reviewed, ReviewRequest("acme", "no-such", "ada", "confirm", "x"), KEY)
    with pytest.raises(RecordNotFoundError, match="has no explanation"):
        request = ReviewRequest("acme", "r-1", "ada", "confirm", "x", explanation_id="f" * 64)
        add_review(reviewed, request, KEY)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"decision": "approve"}, "decision must be one of"),
        ({"reason": "  "}, "reason must say why"),
        ({"reviewer": ""}, "reviewer must name"),
        ({"reason": "x" * 2001}, "at most 2000"),
    ],
)
def test_a_bad_review_is_refused(kwargs: dict[str, str], message: str) -> None:
    args = {"reviewer": "ada", "decision": "confirm", "reason": "fine", **kwargs}
    with pytest.raises(ConfigError, match=message):
        ReviewRequest("acme", "r-1", **args)


def test_the_latest_review_joins_the_history_and_time_travels(reviewed: Catalog) -> None:
    t0 = datetime.now(UTC)
    add_review(reviewed, ReviewRequest("acme", "r-1", "ada", "escalate", "unsure"), KEY, now=t0)
    first_commit = reviewed.load_table(REVIEWS).current_snapshot()
    assert first_commit is not None
    between = datetime.fromtimestamp(first_commit.timestamp_ms / 1000, UTC)
    while datetime.now(UTC) <= between + timedelta(milliseconds=5):
        pass
    later = t0 + timedelta(minutes=5)
    add_review(reviewed, ReviewRequest("acme", "r-1", "bob", "override", "wrong"), KEY, now=later)

    now = with_reviews(reviewed, reconstruct(reviewed, "acme", "r-1"))
    assert [r["decision"] for r in now.reviews] == ["escalate", "override"]
    assert now.history[-1]["latest_review"]["decision"] == "override"
    assert '"reviews"' in to_json(now)
    rec = reconstruct(reviewed, "acme", "r-1", as_of=between)
    assert [r["decision"] for r in with_reviews(reviewed, rec).reviews] == ["escalate"]

    # The same answers once maintenance has expired every snapshot but the heads.
    before = (with_reviews(reviewed, rec), now)
    record_history(reviewed)
    for name in LOGGED_TABLES:
        table = reviewed.load_table(name)
        if table.current_snapshot() is not None:
            table.maintenance.expire_snapshots().older_than(datetime.now(UTC)).commit()
    assert reviewed.load_table(REVIEWS).snapshot_by_id(first_commit.snapshot_id) is None
    rec = reconstruct(reviewed, "acme", "r-1", as_of=between)
    assert (
        with_reviews(reviewed, rec),
        with_reviews(reviewed, reconstruct(reviewed, "acme", "r-1")),
    ) == before
