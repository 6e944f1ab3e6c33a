"""`whylake policy show`: a tenant's effective policy in canonical form, and its hash."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Sampling and explanation policies.", no_args_is_help=True)


@app.command("show")
def show(
    tenant: Annotated[str, typer.Option(help="The tenant whose effective policy to show")],
    policy: Annotated[Path | None, typer.Option(help="Sampling policy YAML")] = None,
    explanation_policy: Annotated[Path | None, typer.Option(help="Explanation policy YAML")] = None,
) -> None:
    """Print the canonical form rows are hashed by, and the policy_hash they record."""
    from whylake.jobs.options import explanation_policies
    from whylake.transforms.explanation_plan import effective_policy, policy_hash
    from whylake.transforms.sampling.policy import default_policy_file, load_policies

    sampling = load_policies(policy or default_policy_file()).policy_for(tenant)
    explanation = explanation_policies(explanation_policy).policy_for(tenant)
    document = effective_policy(sampling, explanation)
    typer.echo(json.dumps(document, indent=2, sort_keys=True))
    typer.echo(f"policy_hash {policy_hash(sampling, explanation)}")
