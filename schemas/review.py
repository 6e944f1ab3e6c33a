"""The human review of an explanation: an append-only record of who decided what, and why."""

from __future__ import annotations

import hashlib
from datetime import datetime

import pyarrow as pa
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.transforms import IdentityTransform
from pyiceberg.types import NestedField, StringType, TimestamptzType

# acknowledge: seen, no opinion; confirm: the decision stands; override: a person changed it;
# escalate: passed to someone with more authority.
DECISIONS: tuple[str, ...] = ("acknowledge", "confirm", "override", "escalate")

REVIEW_SCHEMA = Schema(
    NestedField(1, "review_id", StringType(), required=True, doc="sha256 of the review's content"),
    NestedField(2, "tenant_id", StringType(), required=True),
    NestedField(3, "request_id", StringType(), required=True),
    NestedField(4, "explanation_id", StringType(), required=True, doc="The record reviewed"),
    NestedField(
        5,
        "reviewer_hash",
        StringType(),
        required=True,
        doc="HMAC-SHA256 of (tenant, reviewer) under the deployment's key: never the name",
    ),
    NestedField(6, "decision", StringType(), required=True, doc=" / ".join(DECISIONS)),
    NestedField(7, "reason", StringType(), required=True),
    NestedField(8, "reviewed_at", TimestamptzType(), required=True),
)

# identity(tenant_id): a tenant's reviews sit in files of their own, like its explanations.
REVIEW_PARTITION_SPEC = PartitionSpec(
    PartitionField(source_id=2, field_id=1000, transform=IdentityTransform(), name="tenant_id"),
)

REVIEW_ARROW_SCHEMA: pa.Schema = REVIEW_SCHEMA.as_arrow()


def review_id(
    tenant_id: str,
    request_id: str,
    explanation_id: str,
    reviewer_hash: str,
    decision: str,
    reason: str,
    reviewed_at: datetime,
) -> str:
    """The same review submitted twice (a retried command) is stored once."""
    parts = (tenant_id, request_id, explanation_id, reviewer_hash, decision, reason)
    key = "\x1f".join((*parts, reviewed_at.isoformat()))
    return hashlib.sha256(key.encode()).hexdigest()
