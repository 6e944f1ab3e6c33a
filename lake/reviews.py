"""Human reviews of explanations: append-only, tenant-scoped, reviewer identities hashed."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.expressions import And, BooleanExpression, EqualTo

from whylake.lake.catalog import REVIEWS
from whylake.lake.commit import append_once
from whylake.lake.history import point_in_time
from whylake.lake.reconstruct import Reconstruction, reconstruct
from whylake.schemas.errors import ConfigError, RecordNotFoundError
from whylake.schemas.ids import check_request_id, check_tenant, hash_user_id
from whylake.schemas.review import DECISIONS, REVIEW_ARROW_SCHEMA, review_id
from whylake.schemas.secrets import Secret

Row = dict[str, Any]
MAX_REASON = 2000


@dataclass(frozen=True)
class ReviewRequest:
    """One person's decision on one explanation, before it is stored."""

    tenant_id: str
    request_id: str
    reviewer: str  # hashed before storage: never written as given
    decision: str
    reason: str
    explanation_id: str | None = None  # None: the request's latest explanation

    def __post_init__(self) -> None:
        check_tenant(self.tenant_id)
        check_request_id(self.request_id)
        if not isinstance(self.reviewer, str) or not self.reviewer.strip():
            raise ConfigError("reviewer must name the person reviewing (it is stored hashed)")
        if self.decision not in DECISIONS:
            raise ConfigError(f"decision must be one of {list(DECISIONS)}, got {self.decision!r}")
        if not isinstance(self.reason, str) or not self.reason.strip():
            raise ConfigError("reason must say why, in words (an auditor reads it)")
        if len(self.reason) > MAX_REASON:
            raise ConfigError(f"reason is {len(self.reason)} characters; at most {MAX_REASON}")


def add_review(
    catalog: Catalog, review: ReviewRequest, hash_key: Secret, *, now: datetime | None = None
) -> Row:
    """Append one review and return the stored row.

    The explanation must exist for that tenant (the current snapshot is asked); a review of an
    explanation id the request never had is refused. The reviewer is stored as
    HMAC-SHA256(tenant, reviewer) under the deployment's key, like user ids.

    Raises:
        RecordNotFoundError: the tenant has no such request, or not that explanation of it.
    """
    rec = reconstruct(catalog, review.tenant_id, review.request_id)
    known = [h["explanation_id"] for h in rec.history]
    target = review.explanation_id or str(rec.record["explanation_id"])
    if target not in known:
        raise RecordNotFoundError(
            f"tenant {review.tenant_id!r} has no explanation {target!r} of request "
            f"{review.request_id!r}; its explanations are {known}"
        )
    reviewer_hash = hash_user_id(review.tenant_id, review.reviewer.strip(), hash_key)
    assert reviewer_hash is not None
    at = (now or datetime.now(UTC)).astimezone(UTC)
    row = {
        "review_id": review_id(
            review.tenant_id,
            review.request_id,
            target,
            reviewer_hash,
            review.decision,
            review.reason,
            at,
        ),
        "tenant_id": review.tenant_id,
        "request_id": review.request_id,
        "explanation_id": target,
        "reviewer_hash": reviewer_hash,
        "decision": review.decision,
        "reason": review.reason.strip(),
        "reviewed_at": at,
    }
    append_once(
        catalog,
        REVIEWS,
        pa.Table.from_pylist([row], schema=REVIEW_ARROW_SCHEMA),
        key="review_id",
        scope=EqualTo("tenant_id", review.tenant_id),
        run_id="review",
        batch_id=row["review_id"],
    )
    return row


def list_reviews(
    catalog: Catalog,
    tenant_id: str,
    request_id: str | None = None,
    *,
    as_of: datetime | None = None,
) -> list[Row]:
    """The tenant's reviews (optionally of one request), oldest first, as the table held them.

    With `as_of` the reviews table is read at the snapshot current then, so a reconstruction
    as of a past time shows the reviews that existed at that time and no later one.
    """
    check_tenant(tenant_id)
    # Through the commit log (lake/history.py), so the answer is the same after the reviews'
    # snapshots are expired by maintenance.
    point = point_in_time(catalog, REVIEWS, as_of=as_of)
    if point is None:  # no review yet then (or at all)
        return []
    expr: BooleanExpression = EqualTo("tenant_id", tenant_id)
    if request_id is not None:
        expr = And(expr, EqualTo("request_id", request_id))
    rows = point.scan(expr).to_pylist()
    rows = [r for r in rows if r["tenant_id"] == tenant_id]
    rows.sort(key=lambda r: (r["reviewed_at"], r["review_id"]))
    return rows


def latest_by_explanation(reviews: list[Row]) -> dict[str, Row]:
    """The latest review of each explanation id (reviews oldest first, as list_reviews gives)."""
    return {r["explanation_id"]: r for r in reviews}


def with_reviews(catalog: Catalog, rec: Reconstruction) -> Reconstruction:
    """The reconstruction with its request's reviews as of the same time, and each history
    entry with the latest review of that explanation (or None)."""
    # As of the time asked for; a reconstruction of the current state (or of a snapshot id)
    # shows every review recorded so far.
    reviews = list_reviews(catalog, rec.tenant_id, rec.request_id, as_of=rec.as_of)
    latest = latest_by_explanation(reviews)
    history = [
        {**h, "latest_review": _brief(latest.get(str(h["explanation_id"])))} for h in rec.history
    ]
    return replace(rec, reviews=reviews, history=history)


def _brief(review: Row | None) -> Row | None:
    if review is None:
        return None
    return {k: review[k] for k in ("decision", "reason", "reviewed_at", "reviewer_hash")}
