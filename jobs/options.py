"""Command-line options and the environment, turned once into the configs a run travels with.

This is the only module that reads the environment: everything below whylake.jobs gets its
settings from the frozen configs built here, on the machine that launches the pipeline.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pyiceberg.utils.config import Config

from whylake.lake.audit import SqlLimits
from whylake.lake.catalog import CATALOG_NAME, CatalogConfig, RetentionConfig
from whylake.lake.failpoints import Failpoints
from whylake.lake.opensearch import OpenSearchConfig
from whylake.lake.storage import STORAGE_PREFIXES, StorageConfig
from whylake.schemas.errors import ConfigError, SecretNotConfiguredError
from whylake.schemas.explanation_policy import ExplanationPolicies
from whylake.schemas.secrets import Secret

ENV_HOME = "WHYLAKE_HOME"
ENV_HASH_KEY = "WHYLAKE_HASH_KEY"
ENV_OPENSEARCH_URL = "WHYLAKE_OPENSEARCH_URL"
ENV_PRISM = "WHYLAKE_PRISM_LOCATION"
ENV_MLFLOW = ("WHYLAKE_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI")
ENV_RETENTION_DAYS = "WHYLAKE_RETENTION_DAYS"
ENV_FAILPOINTS = "WHYLAKE_FAILPOINTS"
PRISM_VERSION = "v2.77.0"  # the Beam release pinned in pyproject.toml

# Public on purpose: the demo is reproducible anywhere. Hashes under it are reversible by
# anyone who hashes candidate user ids, so only `whylake demo` (or a flag that says so in its
# name) may use it.
DEMO_HASH_KEY = "whylake-demo-key-change-me"
_SECRET_SETTING = ("password", "secret", "token", "key")
# s3.access-key-id names a key; so does every credential of pyiceberg's FileIO properties.
_STORAGE_SECRET_WORDS = ("password", "secret", "token", "key", "credential", "session", "sas")


def home_dir(home: Path | None) -> Path:
    """The embedded default's folder: --home, else WHYLAKE_HOME, else ./.whylake."""
    return (home or Path(os.environ.get(ENV_HOME) or ".whylake")).resolve()


def catalog_config(home: Path | None) -> CatalogConfig:
    """The catalog named `whylake` in pyiceberg's own configuration, else the embedded default.

    pyiceberg's configuration is `~/.pyiceberg.yaml` or `PYICEBERG_CATALOG__WHYLAKE__*`
    variables (REST, Glue, a PostgreSQL SQL catalog, credentials); it is read here, once.
    """
    configured = Config().get_catalog_config(CATALOG_NAME)
    if configured:
        return CatalogConfig.of(CATALOG_NAME, {k: str(v) for k, v in configured.items()})
    return CatalogConfig.embedded(home_dir(home))


def storage_config(catalog: CatalogConfig, options: Sequence[str] = ()) -> StorageConfig:
    """How inputs are reached: the catalog's file-system properties, then `--storage-option`s.

    The catalog's `s3.*` / `gcs.*` / `adls.*` / `client.*` properties (pyiceberg's FileIO
    names) also open the inputs, so one set of settings serves a warehouse and logs on the
    same object store; `key=value` options add to them or override them (another bucket's
    endpoint or credentials).
    """
    merged: dict[str, str | Secret] = {
        k: v for k, v in catalog.properties if k.startswith(STORAGE_PREFIXES)
    }
    merged.update(dict(key_values(options, secret_words=_STORAGE_SECRET_WORDS)))
    return StorageConfig(tuple(sorted(merged.items())))


def sql_limits(
    timeout_s: float | None = None,
    memory_limit: str | None = None,
    threads: int | None = None,
    max_rows: int | None = None,
) -> SqlLimits:
    """Tenant SQL's bounds: the options, else WHYLAKE_SQL_{TIMEOUT_S,MEMORY_LIMIT,THREADS,
    MAX_ROWS} (a service sets them once for every query), else the defaults of SqlLimits."""
    defaults = SqlLimits()

    def number(value: float | int | None, env: str, kind: type, fallback: float | int) -> Any:
        if value is not None:
            return value
        text = os.environ.get(env)
        if not text:
            return fallback
        try:
            return kind(text)
        except ValueError as exc:
            raise ConfigError(f"{env}={text!r} is not a {kind.__name__}") from exc

    return SqlLimits(
        timeout_s=number(timeout_s, "WHYLAKE_SQL_TIMEOUT_S", float, defaults.timeout_s),
        memory_limit=memory_limit
        or os.environ.get("WHYLAKE_SQL_MEMORY_LIMIT")
        or defaults.memory_limit,
        threads=number(threads, "WHYLAKE_SQL_THREADS", int, defaults.threads),
        max_result_rows=number(max_rows, "WHYLAKE_SQL_MAX_ROWS", int, defaults.max_result_rows),
    )


def registry_root(registry: Path | None, home: Path | None) -> str:
    """--registry, else <home>/models."""
    return str((registry or home_dir(home) / "models").resolve())


def mlflow_tracking_uri(option: str | None) -> str:
    """--tracking-uri, else WHYLAKE_MLFLOW_TRACKING_URI, else MLflow's own MLFLOW_TRACKING_URI.

    Raises:
        ConfigError: none is set.
    """
    for value in (option, *(os.environ.get(name) for name in ENV_MLFLOW)):
        if value:
            return value
    raise ConfigError(
        "no MLflow tracking server: give --tracking-uri or set MLFLOW_TRACKING_URI "
        "(`infra/services.sh up mlflow` starts one on http://127.0.0.1:5055)"
    )


def hash_key(key_file: Path | None = None, *, insecure_demo_key: bool = False) -> Secret:
    """The user-id hash key: --hash-key-file, else WHYLAKE_HASH_KEY; refused when neither is set.

    Raises:
        SecretNotConfiguredError: no key is configured (and the demo key was not asked for).
    """
    if insecure_demo_key:
        return Secret(DEMO_HASH_KEY, "the public demo key (--insecure-demo-hash-key)")
    if key_file is not None:
        try:
            value = key_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SecretNotConfiguredError(
                f"cannot read --hash-key-file {key_file}: {exc}"
            ) from exc
        if not value:
            raise SecretNotConfiguredError(f"--hash-key-file {key_file} is empty")
        return Secret(value, f"file:{key_file}")
    value = os.environ.get(ENV_HASH_KEY, "").strip()
    if not value:
        raise SecretNotConfiguredError(
            f"no user-id hash key: set {ENV_HASH_KEY} (or --hash-key-file) to a secret of your "
            "own, e.g. `export WHYLAKE_HASH_KEY=$(openssl rand -hex 32)`; user ids are stored only "
            "as HMAC-SHA256 under it, so keep it as long as the audit trail. "
            "For a throwaway trial only: --insecure-demo-hash-key"
        )
    if value == DEMO_HASH_KEY:
        raise SecretNotConfiguredError(
            f"{ENV_HASH_KEY} holds the public demo key; set a secret of your own "
            "(or pass --insecure-demo-hash-key to say you mean it)"
        )
    return Secret(value, f"env:{ENV_HASH_KEY}")


def retention(days: int | None = None) -> RetentionConfig | None:
    """The snapshot-history horizon asked for: `days`, else WHYLAKE_RETENTION_DAYS, else None.

    None keeps each table's own horizon (184 days where a table has none yet).
    """
    if days is not None:
        return RetentionConfig(days=days)
    text = os.environ.get(ENV_RETENTION_DAYS, "").strip()
    if not text:
        return None
    try:
        return RetentionConfig(days=int(text))
    except ValueError as exc:
        raise ConfigError(f"{ENV_RETENTION_DAYS}={text!r} is not a whole number of days") from exc


def failpoints() -> Failpoints:
    """Failpoints armed by WHYLAKE_FAILPOINTS (a testing tool: lake/failpoints.py); none unset."""
    return Failpoints.parse(os.environ.get(ENV_FAILPOINTS, ""))


def opensearch_config(url: str | None) -> OpenSearchConfig | None:
    """The hot replica from --opensearch-url / WHYLAKE_OPENSEARCH_URL and WHYLAKE_OPENSEARCH_*."""
    url = url or os.environ.get(ENV_OPENSEARCH_URL)
    if not url:
        return None
    password = os.environ.get("WHYLAKE_OPENSEARCH_PASSWORD")
    return OpenSearchConfig(
        url=url,
        username=os.environ.get("WHYLAKE_OPENSEARCH_USERNAME"),
        password=Secret(password, "env:WHYLAKE_OPENSEARCH_PASSWORD") if password else None,
        ca_certs=os.environ.get("WHYLAKE_OPENSEARCH_CA_CERTS"),
        verify_certs=os.environ.get("WHYLAKE_OPENSEARCH_VERIFY_CERTS", "true") != "false",
        index_prefix=os.environ.get("WHYLAKE_OPENSEARCH_INDEX_PREFIX") or "whylake-explanations",
    )


def prism_location(option: str | None) -> str:
    """A local Prism binary: --prism-location, WHYLAKE_PRISM_LOCATION, or what `make up` built.

    Raises:
        ConfigError: none of them names an existing file.
    """
    for given, what in ((option, "--prism-location"), (os.environ.get(ENV_PRISM), ENV_PRISM)):
        if given:
            if not Path(given).is_file():
                raise ConfigError(f"{what} {given!r} is not a file")
            return str(Path(given).resolve())
    built = Path(".infra/cache/prism") / PRISM_VERSION / "bin/prism"
    if built.is_file():
        return str(built.resolve())
    raise ConfigError(
        "no Prism binary: give --prism-location or WHYLAKE_PRISM_LOCATION, or run `make up` "
        f"in a checkout (it builds {built} from the Go module proxy)"
    )


def key_values(
    pairs: Sequence[str], *, secret_words: Sequence[str] = _SECRET_SETTING
) -> tuple[tuple[str, str | Secret], ...]:
    """`key=value` settings (e.g. librdkafka's); credential-like values become Secrets."""
    out: list[tuple[str, str | Secret]] = []
    for text in pairs:
        key, sep, value = text.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise ConfigError(f"{text!r} is not key=value")
        secret = any(word in key.lower() for word in secret_words)
        out.append((key, Secret(value, f"setting {key}") if secret else value))
    return tuple(out)


ENV_CHROMIUM = "WHYLAKE_CHROMIUM"
ENV_API_KEYS = "WHYLAKE_API_KEYS"


def chromium_path(option: str | None = None) -> str | None:
    """The headless browser that prints letters: --chromium, WHYLAKE_CHROMIUM, /usr/bin/chromium."""
    for given in (option, os.environ.get(ENV_CHROMIUM)):
        if given:
            if not Path(given).is_file():
                raise ConfigError(f"Chromium {given!r} is not a file")
            return given
    default = Path("/usr/bin/chromium")
    return str(default) if default.is_file() else None


def api_keys_path(option: Path | None) -> Path:
    """--keys, else WHYLAKE_API_KEYS; never a default, so a server cannot start open by mistake."""
    given = option or (Path(os.environ[ENV_API_KEYS]) if os.environ.get(ENV_API_KEYS) else None)
    if given is None:
        raise ConfigError(
            f"give --keys keys.yaml (or {ENV_API_KEYS}); create one with "
            "`whylake keys add --tenant T --keys keys.yaml`"
        )
    return given


def explanation_policies(path: Path | None) -> ExplanationPolicies:
    """--explanation-policy, else the shipped schemas/policies/explanation.yaml."""
    from whylake.transforms.explanation_plan import (
        default_explanation_policy_file,
        load_explanation_policies,
    )

    return load_explanation_policies(path or default_explanation_policy_file())
