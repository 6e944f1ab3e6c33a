"""Files on local disks and object stores (s3://, gs://, abfs://) through pyarrow's file systems."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property

import pyarrow.fs as pafs
from fsspec.implementations.arrow import ArrowFSWrapper
from pyiceberg.io.pyarrow import PyArrowFileIO

from whylake.schemas.errors import ConfigError
from whylake.schemas.secrets import Secret

# The prefixes of pyiceberg's FileIO properties (s3.endpoint, gcs.project-id, adls.account-name,
# client.region, hdfs.host, ...): the same names configure the catalog's warehouse and inputs.
STORAGE_PREFIXES = ("s3.", "gcs.", "adls.", "client.", "hdfs.", "oss.")
_SECRET_PROPERTY = re.compile(r"secret|password|token|credential|access-key|session|sas", re.I)
_GLOB = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class StorageConfig:
    """How to reach the files a job reads: pyiceberg FileIO properties, credentials as Secrets.

    Resolved once on the launcher (`whylake.jobs.options.storage_config`); a worker builds its
    file system from exactly these properties, never from its own environment's settings
    beyond what pyarrow itself reads when a property is absent (e.g. instance credentials).
    """

    properties: tuple[tuple[str, str | Secret], ...] = ()

    def __post_init__(self) -> None:
        keys = [k for k, _ in self.properties]
        if len(set(keys)) != len(keys):
            raise ConfigError(f"a storage property is given twice in {keys}")
        for key in keys:
            if not key.startswith(STORAGE_PREFIXES):
                raise ConfigError(
                    f"storage property {key!r} is not a file-system setting; use one of the "
                    f"prefixes {', '.join(STORAGE_PREFIXES)} (pyiceberg's FileIO names)"
                )

    @classmethod
    def of(cls, properties: Mapping[str, str]) -> StorageConfig:
        """From plain properties, wrapping credentials as secrets."""
        held: list[tuple[str, str | Secret]] = []
        for key, value in sorted(properties.items()):
            text = str(value)
            secret = _SECRET_PROPERTY.search(key) and text
            held.append((key, Secret(text, f"storage property {key}") if secret else text))
        return cls(tuple(held))

    def describe(self) -> dict[str, str]:
        """The properties with every secret masked, for manifests and logs."""
        return {k: repr(v) if isinstance(v, Secret) else v for k, v in self.properties}

    def _revealed(self) -> dict[str, str]:
        return {k: v.reveal() if isinstance(v, Secret) else v for k, v in self.properties}

    def __getstate__(self) -> dict[str, object]:
        # The file systems are built again where the config lands (a worker), not pickled.
        return {"properties": self.properties}

    def __setstate__(self, state: dict[str, object]) -> None:
        object.__setattr__(self, "properties", state["properties"])

    @cached_property
    def _io(self) -> PyArrowFileIO:
        return PyArrowFileIO(self._revealed())

    def filesystem(self, uri: str) -> tuple[pafs.FileSystem, str]:
        """The pyarrow file system holding `uri` and the path of `uri` within it.

        pyiceberg's own FileIO builds it, so inputs and the warehouse read the same settings
        (endpoint, region, credentials, path-style addressing) the same way.
        """
        scheme, netloc, path = PyArrowFileIO.parse_location(uri, self._io.properties)
        return self._io.fs_by_scheme(scheme, netloc), path

    def expand(self, pattern: str) -> list[str]:
        """The files `pattern` names (`*`, `?`, `[..]`, `**` across folders), as URIs, sorted.

        A pattern without glob characters names one file. Local patterns may be relative.
        """
        scheme, _, _ = PyArrowFileIO.parse_location(pattern, self._io.properties)
        local = scheme == "file"
        if local:
            pattern = os.path.abspath(pattern.removeprefix("file://"))
        fs, path = self.filesystem(pattern)
        if not _GLOB.search(path):
            info = fs.get_file_info(path)
            return [pattern] if info.type == pafs.FileType.File else []
        # fsspec's glob (the one s3fs and gcsfs use) over the pyarrow file system: `**` spans
        # folders, `*` stays within one; only the folders below the pattern's fixed prefix are
        # listed.
        wrapper = ArrowFSWrapper(fs)
        found = [p for p in wrapper.glob(path) if wrapper.isfile(p)]
        prefix = "" if local else f"{scheme}://"
        return sorted(prefix + p for p in found)
