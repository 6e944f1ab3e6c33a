"""The lakehouse audit store: Iceberg tables, idempotent commits, DuckDB audits, time travel."""
