"""Input file systems: globs through pyarrow's file systems, credentials kept as secrets."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from whylake.jobs.options import storage_config
from whylake.lake.catalog import CatalogConfig
from whylake.lake.storage import StorageConfig
from whylake.schemas.errors import ConfigError
from whylake.schemas.secrets import Secret


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for name in ("a/x.jsonl", "a/b/y.jsonl", "a/b/c/z.parquet", "top.jsonl", "a/notes.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("{}\n")
    return tmp_path


def test_globs_match_as_the_shell_does(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    storage = StorageConfig()
    assert storage.expand(str(tree / "a/*.jsonl")) == [str(tree / "a/x.jsonl")]
    # `**` spans any number of folders, zero included; `*` stays in one.
    assert storage.expand(str(tree / "**/*.jsonl")) == [
        str(tree / p) for p in ("a/b/y.jsonl", "a/x.jsonl", "top.jsonl")
    ]
    assert storage.expand(str(tree / "a/b/?/*.parquet")) == [str(tree / "a/b/c/z.parquet")]
    assert storage.expand(f"file://{tree}/top.jsonl") == [str(tree / "top.jsonl")]
    assert storage.expand(str(tree / "missing.jsonl")) == []
    assert storage.expand(str(tree / "a")) == []  # a folder is not a file
    monkeypatch.chdir(tree)
    assert storage.expand("a/*.jsonl") == [str(tree / "a/x.jsonl")]


def test_credentials_are_secrets_and_survive_pickling() -> None:
    storage = StorageConfig.of(
        {
            "s3.endpoint": "http://127.0.0.1:1",
            "s3.access-key-id": "AK",
            "s3.secret-access-key": "hunter2",
            "s3.region": "x",
        }
    )
    described = storage.describe()
    assert described["s3.endpoint"] == "http://127.0.0.1:1"
    assert "hunter2" not in repr(described) and "hunter2" not in repr(storage)
    storage.filesystem("s3://bucket/key")  # builds (and caches) a file system
    again = pickle.loads(pickle.dumps(storage))
    assert again == storage


def test_only_file_system_properties_are_accepted() -> None:
    with pytest.raises(ConfigError, match="not a file-system setting"):
        StorageConfig((("uri", "http://catalog"),))


def test_inputs_default_to_the_catalogs_storage_settings() -> None:
    catalog = CatalogConfig.of(
        "whylake",
        {
            "type": "rest",
            "uri": "http://127.0.0.1:8181",
            "token": "t0k",
            "s3.endpoint": "http://127.0.0.1:8333",
            "s3.access-key-id": "AK",
            "s3.secret-access-key": "SK",
        },
    )
    storage = storage_config(catalog, ["s3.region=eu-west-1", "s3.endpoint=http://other:9000"])
    props = dict(storage.properties)
    assert set(props) == {"s3.endpoint", "s3.access-key-id", "s3.secret-access-key", "s3.region"}
    assert props["s3.endpoint"] == "http://other:9000"  # an option overrides the catalog's
    assert isinstance(props["s3.secret-access-key"], Secret)
    assert isinstance(props["s3.access-key-id"], Secret)
    assert "SK" not in repr(storage.describe())
