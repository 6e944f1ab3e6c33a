"""Bring your own model, end to end: every kind registered through the CLI (one from the real
MLflow server started by infra/), a batch over each, and a recorded attribution of each kind
recomputed with the kind's own library alone (the boosters, shap, captum), as the README shows.
"""

from __future__ import annotations

import json
import os
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tests.integration.conftest import TEST_HASH_KEY
from tests.unit.model_kinds import (
    Trained,
    sklearn_pipeline,
    tabular,
    train_lightgbm,
    train_sklearn,
    train_text,
    train_torch,
    train_xgboost,
)
from whylake.jobs.cli import app
from whylake.lake.catalog import EXPLANATIONS, CatalogConfig, open_catalog
from whylake.registry.registration import score_rows
from whylake.registry.store import ModelRegistry

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]
MLFLOW = os.environ.get(
    "WHYLAKE_MLFLOW_TRACKING_URI",
    f"http://127.0.0.1:{os.environ.get('WHYLAKE_MLFLOW_PORT', '5055')}",
)
TENANT = "acme"
DAY = datetime(2026, 11, 21, 12, tzinfo=UTC)


def _mlflow_up() -> None:
    try:
        with urllib.request.urlopen(f"{MLFLOW}/health", timeout=5) as response:
            assert response.status == 200
    except OSError as exc:
        pytest.fail(f"no MLflow server at {MLFLOW} ({exc}): run `infra/services.sh up mlflow`")


def _cli(*args: str) -> str:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def _log_to_mlflow(name: str) -> str:
    """An sklearn pipeline logged and registered in the MLflow model registry (cloudpickle)."""
    import mlflow

    mlflow.set_tracking_uri(MLFLOW)
    mlflow.set_registry_uri(MLFLOW)
    frame = tabular()
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            sklearn_pipeline(),
            name="model",
            registered_model_name=name,
            pip_requirements=["scikit-learn==1.9.1"],  # skip dependency inference: faster
            input_example=frame.drop(columns="label").iloc[:2],
        )
    return str(info.registered_model_version)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five kinds registered through `whylake models register`, and one batch over them."""
    _mlflow_up()
    tmp = tmp_path_factory.mktemp("kinds")
    home = tmp / "home"
    trained: dict[str, Trained] = {}
    for model_id, train in (
        ("credit-gbm", train_xgboost),
        ("credit-lgbm", train_lightgbm),
        ("credit-pipeline", train_sklearn),
        ("credit-nn", train_torch),
        ("reviews", train_text),
    ):
        t = train(tmp / model_id) if (tmp / model_id).mkdir() is None else None
        assert t is not None
        trained[model_id] = t
        sample = tmp / f"{model_id}.parquet"
        t.sample.to_parquet(sample)
        _cli(
            "models", "register", "--home", str(home), "--tenant", TENANT,
            "--model-id", model_id, "--version", "1", "--kind", t.kind,
            "--artifact", str(t.artifact), "--train-sample", str(sample),
            "--target", t.target,
        )  # fmt: skip
    name = f"credit-mlflow-{os.getpid()}"
    version = _log_to_mlflow(name)
    sample = tmp / "credit-gbm.parquet"
    out = _cli(
        "models", "register", "--home", str(home), "--tenant", TENANT,
        "--from", f"mlflow:models:/{name}/{version}", "--tracking-uri", MLFLOW,
        "--model-id", "credit-mlflow", "--version", "1", "--train-sample", str(sample),
        "--target", "label", "--immutable", "age",
    )  # fmt: skip
    assert "sklearn" in out
    listed = _cli("models", "list", "--home", str(home), "--tenant", TENANT)
    for model_id in (*trained, "credit-mlflow"):
        assert model_id in listed
    _write_records(home, tmp / "records.jsonl")
    os.environ.setdefault("WHYLAKE_HASH_KEY", TEST_HASH_KEY.reveal())
    _cli(
        "batch", "--input", str(tmp / "records.jsonl"), "--home", str(home),
        "--hash-key-file", str(_key_file(tmp)),
    )  # fmt: skip
    return home


def _key_file(tmp: Path) -> Path:
    path = tmp / "hash.key"
    path.write_text(TEST_HASH_KEY.reveal())
    return path


def _write_records(home: Path, path: Path) -> None:
    """20 inference records per model, scored by the registered model itself."""
    reg = ModelRegistry(home / "models")
    lines = []
    for tenant, model_id, version in reg.versions():
        loaded = reg.load(tenant, model_id, version)
        card = loaded.card
        texts = list(loaded.reference_texts[:20]) if card.is_text else None
        x = loaded.reference_rows[:20]
        scores = score_rows(loaded.model, card, x, texts or ())
        for i in range(20):
            record = {
                "tenant_id": tenant,
                "request_id": f"{model_id}-{i}",
                "event_ts": DAY.isoformat(),
                "model_id": model_id,
                "model_version": version,
                "features": {}
                if card.is_text
                else dict(zip(card.feature_names, x[i].tolist(), strict=True)),
                "score": float(scores[i]),
                # flagged: always explained, and with counterfactuals
                "flags": ["flagged"] if i < 3 else None,
                "confidence": 0.5,
            }
            if texts:
                record["text"] = texts[i]
            lines.append(json.dumps({k: v for k, v in record.items() if v is not None}))
    path.write_text("\n".join(lines) + "\n")


def _records(home: Path) -> dict[str, list[dict]]:
    catalog = open_catalog(CatalogConfig.embedded(home))
    rows = catalog.load_table(EXPLANATIONS).scan().to_arrow().to_pylist()
    out: dict[str, list[dict]] = {}
    for row in rows:
        out.setdefault(row["model_id"], []).append(row)
    return out


def _x(record: dict) -> np.ndarray:
    return np.array([[a["input_value"] for a in record["attributions"]]])


def _values(record: dict) -> np.ndarray:
    return np.array([a["value"] for a in record["attributions"]])


def test_every_kind_is_explained_with_its_explainer(home: Path) -> None:
    records = _records(home)
    want = {
        "credit-gbm": ("xgboost", "tree_shap", "log_odds"),
        "credit-lgbm": ("lightgbm", "tree_shap", "log_odds"),
        "credit-pipeline": ("sklearn", "exact_shapley", "probability"),
        "credit-mlflow": ("sklearn", "exact_shapley", "probability"),
        "credit-nn": ("torch", "integrated_gradients", "score"),
        "reviews": ("hf-text", "token_integrated_gradients", "logit"),
    }
    for model_id, (kind, explainer, output) in want.items():
        rows = records[model_id]
        assert len(rows) == 20, model_id
        for r in rows:
            assert (r["model_kind"], r["explainer_kind"], r["explained_output"]) == (
                kind,
                explainer,
                output,
            )
            assert r["score_drift"] < 1e-4, (model_id, r["score_drift"])
            assert json.loads(r["explainer_versions"])["whylake"]
            assert len(r["explainer_config_hash"]) == 64
    assert records["credit-mlflow"][0]["model_source"].startswith("mlflow:models:/credit-mlflow")
    # Counterfactuals: the gradient search for the torch model, gradient-free for the others,
    # each re-scored (validity is the model's own score on it).
    for model_id in ("credit-gbm", "credit-pipeline", "credit-nn"):
        found = [r for r in records[model_id] if r["counterfactual_status"] == "found"]
        assert found, model_id
        method = "gradient" if model_id == "credit-nn" else "search"
        assert all(r["counterfactual_method"] == method for r in found)
        assert all(cf["valid"] for r in found for cf in r["counterfactuals"])


def test_tree_attributions_recompute_with_the_booster_alone(home: Path) -> None:
    import lightgbm
    import xgboost

    records = _records(home)
    folder = home / "models" / TENANT
    booster = xgboost.Booster(model_file=str(folder / "credit-gbm/1/model.json"))
    for r in records["credit-gbm"][:5]:
        names = [a["feature"] for a in r["attributions"]]
        contrib = booster.predict(xgboost.DMatrix(_x(r), feature_names=names), pred_contribs=True)
        np.testing.assert_allclose(_values(r), contrib[0, :-1], atol=1e-6)
        assert r["base_value"] == pytest.approx(float(contrib[0, -1]), abs=1e-6)
    lgbm = lightgbm.Booster(model_file=str(folder / "credit-lgbm/1/model.txt"))
    for r in records["credit-lgbm"][:5]:
        contrib = lgbm.predict(_x(r), pred_contrib=True)
        np.testing.assert_allclose(_values(r), contrib[0, :-1], atol=1e-6)


@pytest.mark.parametrize("model_id", ["credit-pipeline", "credit-mlflow"])
def test_agnostic_attributions_recompute_with_shap_alone(home: Path, model_id: str) -> None:
    import shap
    import skops.io

    records = _records(home)
    folder = home / "models" / TENANT / model_id / "1"
    model = skops.io.load(
        folder / "model.skops", trusted=skops.io.get_untrusted_types(file=folder / "model.skops")
    )
    config = json.loads(records[model_id][0]["explainer_config"])
    background = np.load(folder / "reference.npz")["rows"][: config["method"]["background_rows"]]
    names = [a["feature"] for a in records[model_id][0]["attributions"]]

    def f(rows: np.ndarray) -> np.ndarray:
        import pandas as pd

        return model.predict_proba(pd.DataFrame(rows, columns=names))[:, 1]

    masker = shap.maskers.Independent(background, max_samples=len(background))
    explainer = shap.explainers.Exact(f, masker)
    for r in records[model_id][:3]:
        reference = explainer(_x(r)).values[0]
        np.testing.assert_allclose(_values(r), reference, atol=1e-8)


def test_torch_attributions_recompute_with_captum_alone(home: Path) -> None:
    from captum.attr import IntegratedGradients

    records = _records(home)
    module = torch.jit.load(str(home / "models" / TENANT / "credit-nn/1/model.pt")).double()
    for r in records["credit-nn"][:3]:
        x = torch.tensor(_x(r), dtype=torch.float64)
        b = torch.tensor([[a["baseline_value"] for a in r["attributions"]]], dtype=torch.float64)
        ig = IntegratedGradients(module).attribute(
            x, baselines=b, n_steps=r["ig_steps"], method="gausslegendre"
        )
        got = _values(r)
        np.testing.assert_allclose(got, ig[0].numpy(), atol=1e-3 * np.abs(got).max())


def test_token_attributions_recompute_with_captum_alone(home: Path) -> None:
    from captum.attr import LayerIntegratedGradients
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    records = _records(home)
    folder = home / "models" / TENANT / "reviews/1/checkpoint"
    model = AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    for r in records["reviews"][:3]:
        enc = tokenizer(r["input_text"], return_tensors="pt", return_special_tokens_mask=True)
        special = enc["special_tokens_mask"][0].bool()
        ids = enc["input_ids"]
        baseline = torch.where(special, ids, tokenizer.pad_token_id)
        lig = LayerIntegratedGradients(
            lambda i: model(input_ids=i).logits[:, 1], model.get_input_embeddings()
        )
        # The order the record's numbers are from: steps doubled until converged.
        assert r["ig_convergence"] <= 0.005 and r["ig_steps"] >= 200
        attr = lig.attribute(ids, baselines=baseline, n_steps=r["ig_steps"], method="gausslegendre")
        reference = attr.sum(-1)[0][~special].detach().numpy()
        got = np.array([t["value"] for t in r["token_attributions"]])
        np.testing.assert_allclose(got, reference, atol=1e-4 * np.abs(reference).max())
        for t in r["token_attributions"]:
            assert r["input_text"][t["start"] : t["end"]] == t["token"]


def test_a_record_of_another_tenant_cannot_use_acmes_model(home: Path, tmp_path: Path) -> None:
    reg = ModelRegistry(home / "models")
    with pytest.raises(Exception, match="no model"):
        reg.card("globex", "credit-gbm", "1")
