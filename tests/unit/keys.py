"""The tests' user-id hash key and PII policy: raw user ids must never reach a store under it."""

from __future__ import annotations

from whylake.schemas.pii import PiiPolicy
from whylake.schemas.secrets import Secret

TEST_HASH_KEY = Secret("whylake-tests-hash-key", "tests")
TEST_PII = PiiPolicy(TEST_HASH_KEY)
