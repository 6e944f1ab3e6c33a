"""The kinds' explainers agree with the libraries of the field: shap, the boosters, captum."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.unit.model_kinds import train_lightgbm, train_sklearn, train_text, train_xgboost
from whylake.registry.kinds import kind_for
from whylake.transforms.explainers.agnostic_shap import agnostic_shapley
from whylake.transforms.explainers.exact_shapley import exact_shapley
from whylake.transforms.explainers.token_ig import TextClassifier, token_integrated_gradients
from whylake.transforms.explainers.tree_shap import TreeEnsemble, tree_shap
from whylake.transforms.kind_explainers import KindModel


@pytest.mark.parametrize("train", [train_xgboost, train_lightgbm], ids=["xgboost", "lightgbm"])
def test_tree_shap_equals_shaps_tree_explainer_in_the_margin(tmp_path, train) -> None:  # type: ignore[no-untyped-def]
    import shap

    trained = train(tmp_path)
    kind = kind_for(trained.kind)
    booster = kind.load(trained.artifact, kind.detect(trained.artifact))
    names = tuple(c for c in trained.sample.columns if c != "label")
    x = trained.sample[list(names)].to_numpy(np.float64)[:50]
    ours = tree_shap(TreeEnsemble(booster, trained.kind, names), x)
    reference = shap.TreeExplainer(booster).shap_values(x)
    np.testing.assert_allclose(ours.values, reference, atol=1e-6)
    assert ours.error.max() < 1e-5  # additive in the raw margin (log-odds)
    assert ours.config["output"] == "raw margin"


def test_agnostic_shapley_is_exact_where_it_enumerates(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.unit.model_kinds import features
    from whylake.registry.registration import Registration, register_model
    from whylake.registry.store import ModelRegistry

    trained = train_sklearn(tmp_path)
    reg = ModelRegistry(tmp_path / "models")
    card = register_model(
        reg,
        Registration(
            tenant_id="acme",
            model_id="p",
            model_version="1",
            kind="sklearn",
            artifact=trained.artifact,
            sample=trained.sample,
            target="label",
        ),
    )
    model = KindModel(reg.load("acme", "p", "1"))
    x = trained.sample[features(trained.sample)].to_numpy(np.float64)[:10]
    bg = x[-8:]
    exact = agnostic_shapley(model, x, bg)
    assert exact.method == "exact_shapley"
    np.testing.assert_allclose(exact.values, exact_shapley(model.predict_rows, x, bg), atol=1e-12)
    sampled = agnostic_shapley(model, x, bg, permutations=64, exact_budget=1)
    assert sampled.method == "permutation_shapley"
    assert sampled.error.max() < 1e-9  # every permutation adds up exactly
    assert sampled.std_error is not None
    gap = np.abs(sampled.values - exact.values).max(axis=1)
    # The reported standard error bounds the distance to the exact values (4 sigma).
    assert np.all(gap <= 4 * sampled.std_error + 1e-12), (gap, sampled.std_error)
    assert card.explained_output == "probability"


def test_sampled_values_do_not_depend_on_the_batch(tmp_path) -> None:  # type: ignore[no-untyped-def]
    class Quadratic:
        def predict_rows(self, rows: np.ndarray) -> np.ndarray:
            return rows[:, 0] * rows[:, 1] + np.sin(rows).sum(axis=1)

    rng = np.random.default_rng(0)
    x, bg = rng.normal(size=(6, 14)), rng.normal(size=(5, 14))
    whole = agnostic_shapley(Quadratic(), x, bg, permutations=8)
    alone = agnostic_shapley(Quadratic(), x[3:4], bg, permutations=8)
    np.testing.assert_allclose(whole.values[3], alone.values[0], atol=1e-12)


def test_token_ig_agrees_with_captums_layer_integrated_gradients(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from captum.attr import LayerIntegratedGradients

    from whylake.registry.kinds.hf_text import HFTextKind

    trained = train_text(tmp_path)
    text_model = HFTextKind().load(trained.artifact, "hf-save-pretrained")
    model = TextClassifier(text_model.model, text_model.tokenizer)
    texts = list(trained.sample["text"][:6])
    ours = token_integrated_gradients(model, texts, class_index=1, steps=32)
    hf = text_model.model
    embeddings = hf.get_input_embeddings()
    for i, text in enumerate(texts):
        enc = model.encode([text])
        ids = torch.as_tensor(enc["input_ids"])
        base = torch.as_tensor(enc["baseline_ids"])

        def forward(input_ids: torch.Tensor) -> torch.Tensor:
            return hf(input_ids=input_ids).logits[:, 1]

        lig = LayerIntegratedGradients(forward, embeddings)
        attr = lig.attribute(ids, baselines=base, n_steps=32, method="gausslegendre")
        reference = attr.sum(-1)[0].detach().double().numpy()
        special = np.asarray(enc["special"][0], dtype=bool)
        got = np.array([t["value"] for t in ours.tokens[i]])
        scale = np.abs(reference).max()
        np.testing.assert_allclose(got, reference[~special], atol=1e-4 * scale)
        # Offsets point at the token in the text.
        for t in ours.tokens[i]:
            assert text[t["start"] : t["end"]] == t["token"]
    assert ours.error.max() < 1e-2 * np.abs(ours.prediction - ours.base_value).max()


def test_converged_token_ig_is_within_the_tolerance_of_a_4096_step_midpoint_reference(  # type: ignore[no-untyped-def]
    tmp_path,
) -> None:
    from captum.attr import LayerIntegratedGradients

    from whylake.registry.kinds.hf_text import HFTextKind
    from whylake.transforms.explainers.token_ig import converged_token_integrated_gradients

    trained = train_text(tmp_path)
    text_model = HFTextKind().load(trained.artifact, "hf-save-pretrained")
    model = TextClassifier(text_model.model, text_model.tokenizer)
    texts = list(trained.sample["text"][:4])
    converged = converged_token_integrated_gradients(model, texts, class_index=1, steps=8)
    # The reference: another copy of the checkpoint, another rule (midpoint), with captum.
    hf = HFTextKind().load(trained.artifact, "hf-save-pretrained").model.eval()
    for i, text in enumerate(texts):
        enc = model.encode([text])
        ids = torch.as_tensor(enc["input_ids"])
        base = torch.as_tensor(enc["baseline_ids"])
        lig = LayerIntegratedGradients(
            lambda t: hf(input_ids=t).logits[:, 1], hf.get_input_embeddings()
        )
        attr = lig.attribute(
            ids, baselines=base, n_steps=4096, method="riemann_middle", internal_batch_size=512
        )
        reference = attr.sum(-1)[0].detach().numpy()[~np.asarray(enc["special"][0], dtype=bool)]
        got = np.array([t["value"] for t in converged.result.tokens[i]])
        assert np.abs(got - reference).max() <= 0.005 * np.abs(reference).max()
        assert converged.convergence[i] <= 0.005
        # Recomputable from the step count alone.
        again = token_integrated_gradients(
            model, [text], class_index=1, steps=int(converged.steps[i])
        )
        np.testing.assert_allclose([t["value"] for t in again.tokens[0]], got, rtol=1e-5, atol=1e-7)
    assert converged.steps.min() >= 32  # at least two doublings from 8
