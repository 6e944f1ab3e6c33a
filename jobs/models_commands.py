"""`whylake models register | list | show`: bring your own model, of any supported kind."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from whylake.jobs.output import console
from whylake.schemas.errors import ConfigError

app = typer.Typer(
    help="The model registry: register torch, scikit-learn, XGBoost, LightGBM, Hugging Face "
    "text and MLflow models; list them; show a card.",
    no_args_is_help=True,
)

Home = Annotated[
    Path | None, typer.Option("--home", help="whylake home (the registry is <home>/models)")
]
Registry = Annotated[
    Path | None, typer.Option(help="Model registry folder (default <home>/models)")
]


def _registry(registry: Path | None, home: Path | None):  # type: ignore[no-untyped-def]
    from whylake.jobs.options import registry_root
    from whylake.registry.store import ModelRegistry

    return ModelRegistry(registry_root(registry, home))


@app.command()
def register(
    train_sample: Annotated[
        Path,
        typer.Option(help="Parquet or CSV of training rows: the card is inferred from it"),
    ],
    tenant: Annotated[str, typer.Option(help="The tenant that owns the model")],
    model_id: Annotated[
        str | None, typer.Option(help="Model id (default: the MLflow model's name)")
    ] = None,
    version: Annotated[
        str | None, typer.Option(help="Version (default: the MLflow version)")
    ] = None,
    kind: Annotated[
        str | None, typer.Option(help="torch, sklearn, xgboost, lightgbm or hf-text")
    ] = None,
    artifact: Annotated[
        Path | None,
        typer.Option(help="model.pt / .skops / .joblib / model.json / model.txt / a folder"),
    ] = None,
    from_: Annotated[
        str | None, typer.Option("--from", help="mlflow:models:/<name>/<version>")
    ] = None,
    tracking_uri: Annotated[
        str | None,
        typer.Option(help="MLflow tracking server (default $MLFLOW_TRACKING_URI)"),
    ] = None,
    target: Annotated[
        str | None, typer.Option(help="The label / target column of the training sample")
    ] = None,
    immutable: Annotated[
        str | None, typer.Option(help="Comma-separated features counterfactuals never change")
    ] = None,
    output_name: Annotated[
        str | None, typer.Option(help="What the score means, e.g. p_default")
    ] = None,
    output_description: Annotated[str | None, typer.Option(help="... in a sentence")] = None,
    threshold: Annotated[
        float | None, typer.Option(help="Decision threshold on the logged score")
    ] = None,
    text_column: Annotated[str, typer.Option(help="Text models: the text column")] = "text",
    registry: Registry = None,
    home: Home = None,
) -> None:
    """Register a model version: detect its format, infer its card, store it immutably."""
    from whylake.jobs import options
    from whylake.registry.card_inference import read_sample
    from whylake.registry.registration import Registration, register_model

    reg = _registry(registry, home)
    sample = read_sample(str(train_sample))
    with tempfile.TemporaryDirectory() as tmp:
        source = None
        if from_ is not None:
            if artifact is not None or kind is not None:
                raise ConfigError("--from names the model: give no --artifact or --kind with it")
            from whylake.registry.kinds.mlflow import fetch

            fetched = fetch(from_, options.mlflow_tracking_uri(tracking_uri), Path(tmp))
            kind, artifact, source = fetched.kind, fetched.artifact, fetched.source
            model_id, version = model_id or fetched.name, version or fetched.version
        if kind is None or artifact is None or model_id is None or version is None:
            raise ConfigError(
                "give --kind, --artifact, --model-id and --version (or --from mlflow:models:/...)"
            )
        card = register_model(
            reg,
            Registration(
                tenant_id=tenant,
                model_id=model_id,
                model_version=version,
                kind=kind,
                artifact=artifact,
                sample=sample,
                target=target,
                immutable=tuple(s.strip() for s in (immutable or "").split(",") if s.strip()),
                output_name=output_name,
                output_description=output_description,
                decision_threshold=threshold,
                source=source,
                text_column=text_column,
            ),
        )
    console.print(
        f"registered {card.tenant_id}/{card.model_id}/{card.model_version} ({card.kind}, "
        f"{card.architecture}; explains {card.explained_output}) sha256 {card.artifact_sha256}",
        highlight=False,
    )


@app.command("list")
def list_models(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's models")] = None,
    registry: Registry = None,
    home: Home = None,
) -> None:
    """Every registered model version (tenant, id, version, kind, sha256)."""
    from whylake.schemas.ids import check_tenant

    reg = _registry(registry, home)
    if tenant is not None:
        check_tenant(tenant)
    table = Table(title=f"models in {reg.root}")
    for column in ("tenant", "model", "version", "kind", "architecture", "explains", "sha256"):
        table.add_column(column)
    for t, m, v in reg.versions():
        if tenant is not None and t != tenant:
            continue
        card = reg.card(t, m, v)
        table.add_row(
            t,
            m,
            v,
            card.kind,
            card.architecture or "-",
            card.explained_output,
            card.artifact_sha256[:16] + "…",
        )
    console.print(table)


@app.command()
def show(
    tenant: Annotated[str, typer.Option(help="The tenant that owns the model")],
    model_id: Annotated[str, typer.Option(help="Model id")],
    version: Annotated[str, typer.Option(help="Version")],
    registry: Registry = None,
    home: Home = None,
) -> None:
    """Print a version's model card as JSON."""
    card = _registry(registry, home).card(tenant, model_id, version)
    typer.echo(json.dumps(json.loads(card.to_json()), indent=2, sort_keys=True))
