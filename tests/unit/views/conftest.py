"""The views read reconstructed records: reuse the lake tests' catalog and row fixtures."""

from tests.unit.lake.conftest import commit_rows, lake_catalog, make_row

__all__ = ["commit_rows", "lake_catalog", "make_row"]
