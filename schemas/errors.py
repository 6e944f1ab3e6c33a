"""Domain exceptions of whylake, one line each on what went wrong."""

from __future__ import annotations


class WhylakeError(Exception):
    """Base of every whylake error."""


class ModelNotFoundError(WhylakeError):
    """The registry has no such tenant / model / version."""


class RegistryIntegrityError(WhylakeError):
    """A registered artifact does not match the sha256 its model card records."""


class RegistryScopeError(WhylakeError):
    """A model lookup left its tenant's registry folder or found another tenant's card."""


class InvalidRecordError(WhylakeError):
    """An inference record breaks its data contract."""


class ExplanationCheckError(WhylakeError):
    """An explanation failed its output checks (finiteness, completeness, schema)."""


class TenantScopeError(WhylakeError):
    """A query tried to leave the tenant it is scoped to."""


class QueryLimitError(WhylakeError):
    """A tenant query ran past its time, memory or result-size limit and was stopped."""


class SnapshotNotFoundError(WhylakeError):
    """No snapshot exists at the requested id or time."""


class RecordNotFoundError(WhylakeError):
    """No explanation record matches the request at the requested point in time."""


class CommitRetriesExhaustedError(WhylakeError):
    """An Iceberg commit kept conflicting with other writers after every retry."""


class TableSchemaMismatchError(WhylakeError):
    """Rows to append name a column the table lacks, or lack one it requires."""


class CommitProtocolError(WhylakeError):
    """A commit landed on another snapshot than the one its keys were checked against."""


class HistoryIncompleteError(WhylakeError):
    """Snapshots were expired before whylake recorded their commits: that past is unknown."""


class RetentionError(WhylakeError):
    """A maintenance step would remove history inside the compliance retention horizon."""


class FailpointTriggered(WhylakeError):
    """A failpoint armed with the `raise` action was reached (a testing tool)."""


class InputNotFoundError(WhylakeError):
    """An input path or glob matched no file."""


class DuckDBExtensionError(WhylakeError):
    """DuckDB's iceberg/avro extensions could not be loaded from their PyPI packages."""


class ConfigError(WhylakeError, ValueError):
    """A setting is missing or out of range; the message names it and what to do."""


class InvalidIdError(WhylakeError, ValueError):
    """An identifier (tenant, model, version, request) breaks its grammar."""


class SecretNotConfiguredError(ConfigError):
    """A secret the run needs (e.g. the user-id hash key) is not configured."""


class UnsupportedArtifactError(WhylakeError, ValueError):
    """A model artifact is not in a format its kind can load, or holds what it must not."""


class MlflowSourceError(WhylakeError):
    """A model could not be fetched from the MLflow tracking server or its registry."""


class LetterRenderError(WhylakeError):
    """The browser that prints explanation letters to PDF failed or is missing."""


class ApiKeysError(ConfigError):
    """The API keys file is missing, malformed, or holds a key in plain text."""
