"""`whylake keys add`: a new API key for one tenant; only its sha256 is written to keys.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from whylake.jobs.output import console

app = typer.Typer(help="API keys of `whylake serve` (stored as sha256 only).", no_args_is_help=True)


@app.command("add")
def add(
    tenant: Annotated[str, typer.Option(help="The tenant the key may read")],
    keys: Annotated[Path, typer.Option(help="The keys file (created if missing)")],
    max_tier: Annotated[int, typer.Option(min=1, max=4, help="Highest tier the key may read")] = 4,
    label: Annotated[str, typer.Option(help="Who holds it, for the operators")] = "",
) -> None:
    """Create a key, store its sha256 in --keys and print the key once (it is not kept)."""
    from whylake.api.keys import add_key

    key = add_key(keys, tenant, max_tier=max_tier, label=label)
    console.print(
        f"key for {tenant} (tiers 1-{max_tier}); shown once, store it now:", highlight=False
    )
    typer.echo(key)
