"""`whylake review add/list`: a person's decision on an explanation, appended, never edited."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from whylake.jobs.output import console

app = typer.Typer(
    help="Human reviews of explanations (append-only; reviewers stored hashed).",
    no_args_is_help=True,
)

Home = Annotated[Path | None, typer.Option("--home", help="Embedded catalog folder")]


def _catalog(home: Path | None) -> Any:
    from whylake.jobs.options import catalog_config
    from whylake.lake.catalog import ensure_tables, open_catalog

    catalog = open_catalog(catalog_config(home))
    ensure_tables(catalog)
    return catalog


@app.command("add")
def add(
    tenant: Annotated[str, typer.Option(help="The tenant that owns the request")],
    request_id: Annotated[str, typer.Option(help="The request reviewed")],
    reviewer: Annotated[str, typer.Option(help="Who reviews (stored only as a keyed hash)")],
    decision: Annotated[str, typer.Option(help="acknowledge, confirm, override or escalate")],
    reason: Annotated[str, typer.Option(help="Why, in words")],
    explanation_id: Annotated[
        str | None, typer.Option(help="Which explanation (default: the request's latest)")
    ] = None,
    hash_key_file: Annotated[
        Path | None, typer.Option(help="The hash key file (default: $WHYLAKE_HASH_KEY)")
    ] = None,
    home: Home = None,
) -> None:
    """Record a review of a request's explanation."""
    from whylake.jobs.options import hash_key
    from whylake.lake.reviews import ReviewRequest, add_review

    row = add_review(
        _catalog(home),
        ReviewRequest(tenant, request_id, reviewer, decision, reason, explanation_id),
        hash_key(hash_key_file),
    )
    console.print(
        f"review {row['review_id'][:16]} recorded: {row['decision']} of explanation "
        f"{row['explanation_id'][:16]} (reviewer {row['reviewer_hash'][:12]}, hashed)",
        highlight=False,
    )


@app.command("list")
def list_(
    tenant: Annotated[str, typer.Option(help="The tenant whose reviews to list")],
    request_id: Annotated[str | None, typer.Option(help="Only this request")] = None,
    as_of: Annotated[str | None, typer.Option(help="The reviews as they stood then")] = None,
    output: Annotated[str, typer.Option(help="table or json")] = "table",
    home: Home = None,
) -> None:
    """List reviews, oldest first."""
    from rich.table import Table

    from whylake.lake.reconstruct import jsonable, parse_as_of
    from whylake.lake.reviews import list_reviews

    rows = list_reviews(
        _catalog(home), tenant, request_id, as_of=parse_as_of(as_of) if as_of else None
    )
    if output == "json":
        typer.echo(json.dumps(jsonable(rows), indent=2, sort_keys=True))
        return
    table = Table(title=f"reviews of {tenant}")
    for col in ("reviewed_at", "request_id", "explanation", "decision", "reason", "reviewer"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["reviewed_at"].isoformat(timespec="seconds"),
            r["request_id"],
            r["explanation_id"][:16],
            r["decision"],
            r["reason"],
            r["reviewer_hash"][:12],
        )
    console.print(table)
