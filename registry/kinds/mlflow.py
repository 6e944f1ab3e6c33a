"""MLflow models by registry URI: fetched from the tracking server, stored in their kind's format.

MLflow is where a model comes from, not a format: `models:/<name>/<version>` is downloaded with
the MLflow client, its MLmodel file says which flavor it is, and the flavor's files are handed to
the matching kind (an XGBoost or LightGBM booster, a scikit-learn model converted to skops).
The card records the URI, the registry's run id and the tracking server, and the sha256 of the
downloaded folder (the same MLflow version registered again is a no-op).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from whylake.schemas.errors import MlflowSourceError, UnsupportedArtifactError

_URI = re.compile(r"^mlflow:models:/(?P<name>[^/]+)/(?P<version>[0-9]+)$")
# MLflow flavor -> whylake kind, in the order they are tried.
_FLAVORS = ("xgboost", "lightgbm", "sklearn")


@dataclass(frozen=True)
class MlflowModel:
    """A registered MLflow model version, downloaded and mapped to a whylake kind."""

    kind: str
    artifact: Path  # the file or folder to register under that kind
    source: str  # mlflow:models:/name/version (run ..., server ...)
    folder: Path  # the whole downloaded model folder (its sha256 is the source's)
    name: str
    version: str


def parse_uri(uri: str) -> tuple[str, str]:
    """(name, version) of `mlflow:models:/<name>/<version>`."""
    match = _URI.fullmatch(uri)
    if match is None:
        raise MlflowSourceError(
            f"--from {uri!r}: give an MLflow registry URI, mlflow:models:/<name>/<version>"
        )
    return match["name"], match["version"]


def fetch(uri: str, tracking_uri: str, dest: Path) -> MlflowModel:
    """Download `uri` from the MLflow registry at `tracking_uri` into `dest`.

    Raises:
        MlflowSourceError: the server is unreachable, or has no such model version.
        UnsupportedArtifactError: the model's flavor is none whylake can load.
    """
    from mlflow import MlflowClient
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    name, version = parse_uri(uri)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        model_version = client.get_model_version(name, version)
        download_uri = client.get_model_version_download_uri(name, version)
        folder = Path(
            download_artifacts(
                artifact_uri=download_uri, dst_path=str(dest), tracking_uri=tracking_uri
            )
        )
    except MlflowException as exc:
        raise MlflowSourceError(
            f"MLflow at {tracking_uri} could not give {name} version {version}: "
            f"{str(exc).splitlines()[0]}"
        ) from exc
    except OSError as exc:
        raise MlflowSourceError(f"MLflow at {tracking_uri} is unreachable: {exc}") from exc
    flavors = _flavors(folder)
    kind, artifact = _artifact(folder, flavors, dest)
    run = model_version.run_id or "-"
    source = f"mlflow:models:/{name}/{version} (run {run}, server {tracking_uri})"
    return MlflowModel(kind, artifact, source, folder, name, version)


def _flavors(folder: Path) -> dict[str, Any]:
    mlmodel = folder / "MLmodel"
    if not mlmodel.is_file():
        raise UnsupportedArtifactError(f"{folder} has no MLmodel file: not an MLflow model")
    flavors: dict[str, Any] = yaml.safe_load(mlmodel.read_text()).get("flavors", {})
    return flavors


def _artifact(folder: Path, flavors: dict[str, Any], dest: Path) -> tuple[str, Path]:
    """The whylake kind and the file it registers, from the first flavor whylake knows."""
    if "xgboost" in flavors:
        # MLflow saves boosters as model.<format> (xgb/ubj/json): re-saved as JSON, the format
        # the xgboost kind stores, with XGBoost itself.
        import xgboost

        booster = xgboost.Booster()
        booster.load_model(str(folder / flavors["xgboost"]["data"]))
        path = dest / "model.json"
        booster.save_model(str(path))
        return "xgboost", path
    if "lightgbm" in flavors:
        return "lightgbm", folder / flavors["lightgbm"]["data"]
    if "sklearn" in flavors:
        flavor = flavors["sklearn"]
        path = folder / flavor["pickled_model"]
        fmt = flavor.get("serialization_format", "cloudpickle")
        if fmt == "skops" or path.suffix == ".skops":
            return "sklearn", path
        # A (cloud)pickle: opened once, here, by the registrant, and converted to skops.
        renamed = dest / "model.joblib"
        renamed.write_bytes(path.read_bytes())
        return "sklearn", renamed
    raise UnsupportedArtifactError(
        f"MLflow model flavors {sorted(flavors)}: whylake loads {list(_FLAVORS)} from MLflow "
        "(torch and text models: register their TorchScript / save_pretrained folder directly)"
    )
