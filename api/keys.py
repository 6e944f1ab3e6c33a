"""Per-tenant API keys: a file maps each key's sha256 to a tenant; no key is stored in clear."""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from whylake.schemas.errors import ApiKeysError
from whylake.schemas.ids import check_tenant

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
KEY_PREFIX = "wl_"


@dataclass(frozen=True)
class KeyGrant:
    """What one key may read: one tenant's records, up to a tier."""

    tenant_id: str
    max_tier: int = 4
    label: str = ""

    def __post_init__(self) -> None:
        check_tenant(self.tenant_id)
        if self.max_tier not in (1, 2, 3, 4):
            raise ApiKeysError(f"max_tier must be 1..4, got {self.max_tier!r}")


def key_digest(key: str) -> str:
    """sha256 of a key, as keys.yaml stores it."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    """A fresh random key (256 bits), shown once to whoever asked for it."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class ApiKeys:
    """sha256(key) -> grant. Keys are high-entropy random strings, so an unsalted sha256 is
    enough: nothing in the file helps to guess a key, and a leaked file grants nothing."""

    grants: Mapping[str, KeyGrant] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        for digest in self.grants:
            if not _SHA256.fullmatch(digest):
                raise ApiKeysError(
                    f"keys must be given by their sha256 (64 lowercase hex digits), got "
                    f"{digest[:6]}...; never put a key itself in the file"
                )

    def grant_for(self, key: str | None) -> KeyGrant | None:
        """The grant of a presented key, or None for no key or an unknown one."""
        if not key:
            return None
        return self.grants.get(key_digest(key))

    @classmethod
    def parse(cls, document: object, source: str = "keys file") -> ApiKeys:
        """From `{keys: {<sha256>: <tenant> | {tenant, max_tier, label}}}`."""
        if not isinstance(document, Mapping) or set(document) - {"keys"}:
            raise ApiKeysError(f"{source}: expected a mapping with one key, `keys`")
        entries = document.get("keys") or {}
        if not isinstance(entries, Mapping):
            raise ApiKeysError(f"{source}: `keys` must map a key's sha256 to a tenant")
        grants: dict[str, KeyGrant] = {}
        for digest, value in entries.items():
            spec: Any = {"tenant_id": value} if isinstance(value, str) else value
            if not isinstance(spec, Mapping):
                raise ApiKeysError(f"{source}: entry {str(digest)[:6]}... must name a tenant")
            spec = dict(spec)
            if "tenant" in spec:
                spec["tenant_id"] = spec.pop("tenant")
            try:
                grants[str(digest)] = KeyGrant(**spec)
            except (TypeError, ValueError) as err:
                raise ApiKeysError(f"{source}: entry {str(digest)[:6]}...: {err}") from err
        return cls(grants)

    @classmethod
    def load(cls, path: str | Path) -> ApiKeys:
        """Read a keys.yaml file."""
        try:
            document = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except OSError as err:
            raise ApiKeysError(f"cannot read keys file {path}: {err}") from err
        except yaml.YAMLError as err:
            raise ApiKeysError(f"keys file {path} is not valid YAML: {err}") from err
        return cls.parse(document or {"keys": {}}, str(path))


def add_key(path: str | Path, tenant_id: str, *, max_tier: int = 4, label: str = "") -> str:
    """Create a key for `tenant_id`, store its sha256 in `path` (created if missing), return it."""
    target = Path(path)
    document: dict[str, Any] = {"keys": {}}
    if target.exists():
        loaded = yaml.safe_load(target.read_text(encoding="utf-8")) or {"keys": {}}
        ApiKeys.parse(loaded, str(target))  # refuse to extend a malformed file
        document = {"keys": dict(loaded.get("keys") or {})}
    key = new_key()
    grant = KeyGrant(check_tenant(tenant_id), max_tier, label)
    document["keys"][key_digest(key)] = {
        "tenant": grant.tenant_id,
        "max_tier": grant.max_tier,
        "label": grant.label,
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(document, sort_keys=True), encoding="utf-8")
    return key
