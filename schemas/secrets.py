"""A secret value that never shows itself: not in repr, logs, run manifests or display data."""

from __future__ import annotations

import hashlib
from typing import Any


class Secret:
    """A secret resolved once on the launcher; it travels inside the pipeline's configs.

    Its repr and str are masked, so a config that holds it can be logged, printed or shown in
    Beam's display data without leaking it; `fingerprint` identifies which secret a run used
    (e.g. after a key rotation) without revealing it.
    """

    __slots__ = ("_value", "_source")

    def __init__(self, value: str, source: str) -> None:
        if not isinstance(value, str) or not value:
            raise ValueError(f"the secret from {source} is empty")
        self._value = value
        self._source = source

    def reveal(self) -> str:
        """The value itself: only for the one call that needs it (an HMAC, a login)."""
        return self._value

    @property
    def source(self) -> str:
        """Where it came from, e.g. `env:WHYLAKE_HASH_KEY` (never the value)."""
        return self._source

    @property
    def fingerprint(self) -> str:
        """The first 12 hex digits of sha256(value): which key, not what key."""
        return hashlib.sha256(self._value.encode()).hexdigest()[:12]

    def __repr__(self) -> str:
        return f"Secret(source={self._source!r}, fingerprint={self.fingerprint!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled with the pipeline (Beam stages its DoFns): the worker needs the value.
        return (Secret, (self._value, self._source))
