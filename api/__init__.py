"""The tenant-scoped HTTP API and the auditor page (`whylake serve`)."""
