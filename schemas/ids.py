"""Identifiers: the grammar of tenant ids, and the deterministic ids and hashes records carry."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np

from whylake.schemas.errors import InvalidIdError
from whylake.schemas.secrets import Secret

# A tenant id names folders, Iceberg partitions and OpenSearch indices: lowercase letters,
# digits, '-' and '_', starting with a letter or digit, so no wildcard, comma, dot or path
# separator can widen a pattern built from it.
TENANT_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
# Model ids and versions name registry folders: no separator, no leading dot (so never `.`
# or `..`), bounded length.
MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MODEL_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
# Request ids are the producer's own: any printable text up to 256 characters. No control
# characters (C0, DEL, C1) and no lone surrogates, which UTF-8 (Arrow, Parquet, JSON) cannot
# encode: one of them would fail the commit of every row it is batched with.
REQUEST_ID = re.compile(r"^[^\x00-\x1f\x7f-\x9f\ud800-\udfff]{1,256}$")


def _check(kind: str, grammar: re.Pattern[str], value: object) -> str:
    if not isinstance(value, str) or not grammar.fullmatch(value):
        shown = value if not isinstance(value, str) or len(value) <= 80 else value[:77] + "..."
        raise InvalidIdError(f"{kind} {shown!r} must match {grammar.pattern}")
    return value


def check_tenant(tenant_id: object) -> str:
    """The tenant id, or InvalidIdError saying what the grammar is."""
    return _check("tenant id", TENANT_ID, tenant_id)


def check_model_id(model_id: object) -> str:
    """A model id safe as one folder name."""
    return _check("model id", MODEL_ID, model_id)


def check_model_version(version: object) -> str:
    """A model version safe as one folder name."""
    return _check("model version", MODEL_VERSION, version)


def check_request_id(request_id: object) -> str:
    """A request id: printable, 1 to 256 characters."""
    return _check("request id", REQUEST_ID, request_id)


def hash_user_id(tenant_id: str, user_id: str | None, key: Secret) -> str | None:
    """HMAC-SHA256 of (tenant, user id) under the deployment's key; the raw id is never stored.

    Keyed, so a stored hash cannot be reversed by hashing a list of known user ids; per tenant,
    so the same person is not linkable across tenants.
    """
    if user_id is None:
        return None
    message = f"{tenant_id}\x1f{user_id}".encode()
    return hmac.new(key.reveal().encode(), message, hashlib.sha256).hexdigest()


def input_digest(feature_names: Sequence[str], x: np.ndarray) -> str:
    """sha256 of the canonical input: feature names and float64 values in model order."""
    h = hashlib.sha256("\x1f".join(feature_names).encode())
    h.update(np.ascontiguousarray(x, dtype="<f8").tobytes())
    return h.hexdigest()


def explanation_id(
    tenant_id: str,
    request_id: str,
    event_ts: datetime,
    model_sha: str,
    config_hash: str,
    input_hash: str,
) -> str:
    """Same record + same model + same explainer config = same id, so replays are idempotent.

    The event time (to the microsecond, as stored) is part of the id, so rows that share an id
    share their partition and their event time: the commit protocol's key check reads only the
    files whose event times overlap a batch's (lake/commit.py), and a request logged twice at
    two times is two records, each explained and reconstructable on its own.
    """
    if event_ts.tzinfo is None:
        raise ValueError("event_ts must be timezone-aware (whylake stores UTC)")
    micros = (event_ts - _EPOCH) // timedelta(microseconds=1)
    key = "\x1f".join((tenant_id, request_id, str(micros), model_sha, config_hash, input_hash))
    return hashlib.sha256(key.encode()).hexdigest()


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
