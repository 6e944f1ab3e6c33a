"""The dead letter: a record a stage could not process, kept with the reason."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import NamedTuple

import pyarrow as pa
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.transforms import DayTransform, IdentityTransform
from pyiceberg.types import NestedField, StringType, TimestamptzType

from whylake.schemas.errors import InvalidIdError
from whylake.schemas.ids import check_request_id, check_tenant
from whylake.schemas.pii import PiiPolicy

DEAD_LETTER_SCHEMA = Schema(
    NestedField(
        1,
        "dead_letter_id",
        StringType(),
        required=True,
        doc="sha256 of (stage, source, record): a replay adds no duplicate",
    ),
    NestedField(2, "run_id", StringType(), required=True),
    NestedField(3, "stage", StringType(), required=True, doc="read / validate / explain / check"),
    NestedField(4, "error_type", StringType(), required=True),
    NestedField(5, "error_message", StringType(), required=True),
    NestedField(6, "failed_at", TimestamptzType(), required=True),
    NestedField(7, "tenant_id", StringType(), required=True, doc="'_unknown' when unparseable"),
    NestedField(8, "request_id", StringType(), required=False),
    NestedField(9, "source", StringType(), required=False, doc="File and line, or topic/offset"),
    NestedField(
        10,
        "record",
        StringType(),
        required=True,
        doc="The offending record as received, personal fields only as keyed hashes",
    ),
)

DEAD_LETTER_PARTITION_SPEC = PartitionSpec(
    PartitionField(source_id=7, field_id=1000, transform=IdentityTransform(), name="tenant_id"),
    PartitionField(source_id=6, field_id=1001, transform=DayTransform(), name="failed_day"),
)

DEAD_LETTER_ARROW_SCHEMA: pa.Schema = DEAD_LETTER_SCHEMA.as_arrow()
UNKNOWN_TENANT = "_unknown"
# A dead letter keeps the start of a huge record (and the whole record's sha256), not all of it.
MAX_RECORD_CHARS = 64 * 1024


class DeadLetter(NamedTuple):
    """The Beam element type of a dead letter; a test checks it against DEAD_LETTER_SCHEMA."""

    dead_letter_id: str
    run_id: str
    stage: str
    error_type: str
    error_message: str
    failed_at: datetime
    tenant_id: str
    request_id: str | None
    source: str | None
    record: str


def dead_letter(
    *,
    run_id: str,
    stage: str,
    error: BaseException | str,
    record: object,
    source: str | None,
    pii: PiiPolicy,
    tenant_id: object = None,
    request_id: object = None,
    error_type: str | None = None,
) -> DeadLetter:
    """Build a dead letter whose id depends only on (stage, source, record): replays dedupe.

    Whatever the record holds, the dead letter can be committed: personal fields are stored
    only as keyed hashes (`pii`), and raw values are scrubbed from the error message too; the
    tenant and request columns hold an id only when it passes the id grammar (a 5,000-character
    tenant id would otherwise name a partition folder); text is valid UTF-8; a huge record is
    kept as its first MAX_RECORD_CHARS characters and its sha256.
    """
    tenant = tenant_id if isinstance(tenant_id, str) and _is_id(check_tenant, tenant_id) else None
    if isinstance(record, str):
        text, raw = pii.redact_text(record, tenant)
    else:
        redacted, raw = pii.redact(record, tenant)
        text = json.dumps(redacted, sort_keys=True, default=str)
    text = _utf8(text)
    key = hashlib.sha256(f"{stage}\x1f{source}\x1f{text}".encode()).hexdigest()
    if len(text) > MAX_RECORD_CHARS:
        digest = hashlib.sha256(text.encode()).hexdigest()
        text = f"{text[:MAX_RECORD_CHARS]}... [{len(text):,} characters, sha256 {digest}]"
    message = pii.scrub(str(error), raw)
    return DeadLetter(
        dead_letter_id=key,
        run_id=run_id,
        stage=stage,
        error_type=error_type
        or (type(error).__name__ if isinstance(error, BaseException) else "InvalidRecord"),
        error_message=_utf8(message[:2000]),
        failed_at=datetime.now(UTC),
        tenant_id=tenant or UNKNOWN_TENANT,
        request_id=request_id
        if isinstance(request_id, str) and _is_id(check_request_id, request_id)
        else None,
        source=None if source is None else _utf8(str(source)[:2000]),
        record=text,
    )


def _is_id(check: Callable[[object], str], value: object) -> bool:
    try:
        check(value)
    except InvalidIdError:
        return False
    return True


def _utf8(text: str) -> str:
    """Text Arrow and Parquet can store: lone surrogates become backslash escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
