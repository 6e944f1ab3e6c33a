"""Personal data in records that are kept as they came (dead letters): only keyed hashes of it."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from whylake.schemas.errors import ConfigError
from whylake.schemas.ids import hash_user_id
from whylake.schemas.secrets import Secret

# The inference record's personal identifier; a deployment may name more fields, never fewer.
DEFAULT_PII_FIELDS: tuple[str, ...] = ("user_id",)
HASH_SUFFIX = "_hash"
_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
# Raw values shorter than this are not searched for in free text (error messages): "7" would
# blank every 7 in a message. Values this short are scrubbed where they sit (their field).
_MIN_SCRUBBED = 3


@dataclass(frozen=True)
class PiiPolicy:
    """Which record fields are personal data, and the key their hashes are made under.

    A dead letter keeps the record as it came, so that a person can see what was wrong with
    it; every configured field in it (at any depth, in any container, even in text that is not
    JSON) is replaced by `<field>_hash`: HMAC-SHA256 of (tenant, value) under the deployment's
    user-id key, the same hash the explanation table stores in `user_id_hash`, so an operator
    can still join a dead letter to the person's explanations without seeing who it is.
    """

    hash_key: Secret
    fields: tuple[str, ...] = DEFAULT_PII_FIELDS

    def __post_init__(self) -> None:
        if not isinstance(self.hash_key, Secret):
            raise ConfigError("a PiiPolicy needs the user-id hash key as a Secret")
        fields = tuple(self.fields)
        for name in fields:
            if not isinstance(name, str) or not _FIELD_NAME.fullmatch(name):
                raise ConfigError(f"PII field {name!r} must be a plain field name")
        missing = [f for f in DEFAULT_PII_FIELDS if f not in fields]
        if missing:
            raise ConfigError(f"PII fields must include {missing}: they are always personal data")
        object.__setattr__(self, "fields", fields)

    def hash_value(self, tenant_id: str | None, value: object) -> str | None:
        """The keyed hash of one personal value (None stays None)."""
        if value is None:
            return None
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
        return hash_user_id(tenant_id or "", _encodable(text), self.hash_key)

    def redact(self, record: object, tenant_id: str | None) -> tuple[object, list[str]]:
        """The record with every personal field hashed, and the raw values it held.

        Dicts are searched at any depth and inside lists; a field named in the policy becomes
        `<field>_hash`. The raw values are returned only so that the caller can scrub them
        from free text (an error message); they must not be stored.
        """
        raw: list[str] = []
        return self._redact(record, tenant_id, raw, depth=0), raw

    def redact_text(self, text: str, tenant_id: str | None) -> tuple[str, list[str]]:
        """A record as received (a JSON line, a Kafka message) with personal fields hashed.

        JSON is parsed, redacted and written back (canonical, keys sorted); text that is not
        JSON (a cut-off line, another format) has each `field: value` occurrence replaced.
        """
        try:
            parsed = json.loads(text)
        except (ValueError, RecursionError):
            parsed = None
        else:
            redacted, raw = self.redact(parsed, tenant_id)
            return json.dumps(redacted, sort_keys=True, default=str), raw
        raw = []

        def replace(match: re.Match[str]) -> str:
            value = match.group("value")
            unquoted = value[1:-1] if len(value) >= 2 and value[0] == value[-1] else value
            unquoted = unquoted.lstrip("\"'")
            raw.append(unquoted)
            digest = self.hash_value(tenant_id, unquoted)
            return f'"{match.group("field")}{HASH_SUFFIX}": "{digest}"'

        return _text_pattern(self.fields).sub(replace, text), raw

    def scrub(self, message: str, raw_values: Iterable[str]) -> str:
        """Free text (an error message) with every known raw personal value blanked out."""
        for value in sorted({v for v in raw_values if len(v) >= _MIN_SCRUBBED}, key=len)[::-1]:
            message = message.replace(value, "<redacted>")
        return message

    def _redact(self, value: object, tenant_id: str | None, raw: list[str], depth: int) -> Any:
        if depth > 64:  # deeper than any record: kept only as its hash, never as text
            return {"truncated_hash": self.hash_value(tenant_id, value)}
        if isinstance(value, dict):
            out: dict[str, Any] = {}
            for key, item in value.items():
                if key in self.fields:
                    if item is not None:
                        raw.append(item if isinstance(item, str) else json.dumps(item, default=str))
                    out[f"{key}{HASH_SUFFIX}"] = self.hash_value(tenant_id, item)
                else:
                    out[str(key)] = self._redact(item, tenant_id, raw, depth + 1)
            return out
        if isinstance(value, list | tuple):
            return [self._redact(item, tenant_id, raw, depth + 1) for item in value]
        return value


@functools.lru_cache(maxsize=16)
def _text_pattern(fields: tuple[str, ...]) -> re.Pattern[str]:
    """`"user_id": "u-1"`, `'user_id': 7`, `user_id=u-1`, and a string cut off mid-value."""
    names = "|".join(re.escape(f) for f in fields)
    return re.compile(
        r"""(?P<q>["']?)\b(?P<field>""" + names + r""")(?P=q)\s*[:=]\s*"""
        r"""(?P<value>"(?:[^"\\]|\\.)*"?|'(?:[^'\\]|\\.)*'?|[^\s,}\]]*)"""
    )


def _encodable(text: str) -> str:
    """Text UTF-8 can encode: lone surrogates (valid in JSON escapes) become escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
