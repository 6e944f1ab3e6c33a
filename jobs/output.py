"""How the command line prints: Arrow results as a table, JSON or CSV; one console."""

from __future__ import annotations

import csv
import json
import sys

import pyarrow as pa
from rich.console import Console
from rich.table import Table

console = Console()
OUTPUTS = ("table", "json", "csv")


def print_arrow(result: pa.Table, output: str = "table") -> None:
    """Print a query result in the chosen format (json and csv go to stdout as data)."""
    if output not in OUTPUTS:
        raise ValueError(f"--output must be one of {OUTPUTS}, got {output!r}")
    rows = result.to_pylist()
    if output == "json":
        sys.stdout.write(json.dumps(rows, default=str, indent=2) + "\n")
        return
    if output == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=result.column_names)
        writer.writeheader()
        writer.writerows(rows)
        return
    table = Table()
    for name in result.column_names:
        table.add_column(name)
    for row in rows:
        table.add_row(*(str(row[c]) for c in result.column_names))
    console.print(table)
