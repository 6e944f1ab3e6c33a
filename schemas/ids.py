"""Identifiers: the grammar of tenant ids, and the deterministic ids and hashes records carry."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence

import numpy as np

from whylake.schemas.errors import InvalidIdError
from whylake.schemas.secrets import Secret

# A tenant id names folders, Iceberg partitions and OpenSearch indices: lowercase letters,
# digits, '-' and '_', starting with a letter or digit, so no wildcard, comma, dot or path
# separator can widen a pattern built from it.
TENANT_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def check_tenant(tenant_id: object) -> str:
    """The tenant id, or ValueError saying what the grammar is."""
    if not isinstance(tenant_id, str) or not TENANT_ID.fullmatch(tenant_id):
        raise InvalidIdError(f"tenant id {tenant_id!r} must match {TENANT_ID.pattern}")
    return tenant_id


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
    tenant_id: str, request_id: str, model_sha: str, config_hash: str, input_hash: str
) -> str:
    """Same input + same model + same explainer config = same id, so replays are idempotent."""
    key = "\x1f".join((tenant_id, request_id, model_sha, config_hash, input_hash))
    return hashlib.sha256(key.encode()).hexdigest()
