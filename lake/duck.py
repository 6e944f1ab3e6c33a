"""DuckDB connections with the Iceberg extension loaded offline from its PyPI packages."""

from __future__ import annotations

import importlib
from pathlib import Path

import duckdb

from whylake.schemas.errors import DuckDBExtensionError

# The extension binaries are built for one DuckDB release and refuse any other; these are the
# pins in pyproject.toml (shared/NOTES.md: the extension server cannot be reached from here).
DUCKDB_VERSION = "1.5.5"
_PACKAGES = {
    # iceberg reads manifests and manifest lists with avro, so avro must be loaded first.
    "avro": "duckdb_extension_avro",
    "iceberg": "duckdb_extension_iceberg",
}
_REQUIREMENT = (
    f"duckdb=={DUCKDB_VERSION} duckdb-extension-iceberg=={DUCKDB_VERSION} "
    f"duckdb-extension-avro=={DUCKDB_VERSION}"
)


def extension_path(name: str) -> Path:
    """The extension file shipped by the PyPI package for the running DuckDB version."""
    package = _PACKAGES[name]
    try:
        module = importlib.import_module(package)
    except ImportError as exc:
        raise DuckDBExtensionError(
            f"the DuckDB {name} extension package {package!r} is not installed; "
            f"install {_REQUIREMENT}"
        ) from exc
    roots = [Path(p) for p in module.__path__]
    found = [
        r / "extensions" / f"v{duckdb.__version__}" / f"{name}.duckdb_extension" for r in roots
    ]
    for path in found:
        if path.is_file():
            return path
    shipped = sorted(str(p.relative_to(r)) for r in roots for p in r.glob("extensions/*/*"))
    raise DuckDBExtensionError(
        f"{package} has no {name} extension for duckdb {duckdb.__version__} (it ships {shipped}); "
        f"install matching versions: {_REQUIREMENT}"
    )


def load_extensions(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """Load avro and iceberg into `con` from the installed packages, never from the network."""
    for name in _PACKAGES:
        path = extension_path(name)
        try:
            con.execute(f"LOAD '{sql_string(str(path))}'")
        except duckdb.Error as exc:
            raise DuckDBExtensionError(
                f"DuckDB {duckdb.__version__} could not load {path}: {exc}; "
                f"install matching versions: {_REQUIREMENT}"
            ) from exc
    return con


def connect(database: str = ":memory:") -> duckdb.DuckDBPyConnection:
    """A DuckDB connection that can read Iceberg tables (iceberg_scan, iceberg_snapshots, ...).

    Raises:
        DuckDBExtensionError: the extension packages are missing or built for another DuckDB.
    """
    # No autoinstall: a missing extension must fail here with the pins to install, not try
    # the unreachable extension server first.
    con = duckdb.connect(database, config={"autoinstall_known_extensions": False})
    try:
        return load_extensions(con)
    except BaseException:
        con.close()
        raise


def sql_string(text: str) -> str:
    return text.replace("'", "''")
