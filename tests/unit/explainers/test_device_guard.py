"""Every explainer reaches every model kind through the placement helper, on the CPU.

Each kind is wrapped so that an input not placed by `model_calls` raises; every explainer of
the kind runs through the wrapper. On a GPU the same helper moves inputs to `cuda`.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.unit.explainers.device_guard import (
    DeviceMismatchError,
    GuardedModule,
    GuardedRows,
    GuardedText,
)
from tests.unit.model_kinds import TRAINERS
from whylake.registry.registration import Registration, register_model
from whylake.registry.store import LoadedModel, ModelRegistry
from whylake.transforms.explainers.agnostic_shap import agnostic_shapley
from whylake.transforms.explainers.config import ExplainConfig
from whylake.transforms.explainers.counterfactuals import (
    CounterfactualConfig,
    generate_counterfactuals,
    spec_from_training,
)
from whylake.transforms.explainers.integrated_gradients import integrated_gradients
from whylake.transforms.explainers.model_calls import NumpyModel, forward_scalar
from whylake.transforms.explainers.shap_values import shap_attributions
from whylake.transforms.explainers.stability import attribution_stability
from whylake.transforms.explainers.token_ig import token_integrated_gradients
from whylake.transforms.explainers.tree_shap import tree_shap
from whylake.transforms.kind_explainers import prepare

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, LoadedModel]:
    tmp = tmp_path_factory.mktemp("kinds")
    reg = ModelRegistry(tmp / "models")
    out = {}
    for kind, train in TRAINERS.items():
        trained = train(tmp)
        card = register_model(
            reg,
            Registration(
                tenant_id="acme",
                model_id=f"m-{kind.replace('-', '')}",
                model_version="1",
                kind=kind,
                artifact=trained.artifact,
                sample=trained.sample,
                target=trained.target,
            ),
        )
        out[kind] = reg.load("acme", card.model_id, "1")
    return out


def _rows(model: LoadedModel, n: int = 6) -> np.ndarray:
    return model.reference_rows[:n]


def _search_config(model: LoadedModel) -> CounterfactualConfig:
    return CounterfactualConfig(method="search", max_steps=20, n_counterfactuals=1)


def test_the_guard_refuses_a_call_that_bypasses_the_helper(loaded: dict[str, LoadedModel]) -> None:
    guarded = GuardedModule(prepare(loaded["torch"], CPU))
    x = torch.as_tensor(_rows(loaded["torch"]), dtype=torch.float32)
    with pytest.raises(DeviceMismatchError):
        guarded(x)  # the bug this guards against: a tensor fed straight to the model
    assert forward_scalar(guarded, x).shape == (x.shape[0],)


def test_torch_explainers_go_through_the_helper(loaded: dict[str, LoadedModel]) -> None:
    model = loaded["torch"]
    guarded = GuardedModule(prepare(model, CPU))
    x = _rows(model)
    baseline = np.asarray(model.card.baseline)
    ig = integrated_gradients(guarded, x, baseline, steps=16)
    assert ig.config["engine"] == "autograd"  # the guard is no TorchScript graph
    assert ig.error.max() < 1e-3
    shap = shap_attributions(guarded, x, model.reference_rows[:8], steps=16)
    # Expected gradients by quadrature: additive up to the quadrature error.
    assert np.all(shap.error <= 0.1 * np.abs(shap.values).sum(axis=1) + 1e-6)
    bases = np.vstack([baseline, model.reference_rows[:2]])
    assert attribution_stability(guarded, x, bases, steps=8).shape == (len(x),)
    spec = spec_from_training(model.card.feature_names, model.reference_rows)
    for method in ("gradient", "search"):
        results = generate_counterfactuals(
            guarded,
            x,
            spec,
            CounterfactualConfig(method=method, max_steps=20, n_counterfactuals=1),
            reference_rows=model.reference_rows,
            reference_scores=model.reference_scores,
        )
        assert len(results) == len(x)


@pytest.mark.parametrize("kind", ["xgboost", "lightgbm"])
def test_tree_explainers_go_through_the_helper(loaded: dict[str, LoadedModel], kind: str) -> None:
    model = loaded[kind]
    guarded = GuardedRows(prepare(model, CPU))
    x = _rows(model)
    result = tree_shap(guarded, x)
    assert result.error.max() < 1e-5
    scorer = GuardedModule(NumpyModel(guarded, output=lambda m: 1 / (1 + np.exp(-m))))
    results = generate_counterfactuals(
        scorer,
        x,
        spec_from_training(model.card.feature_names, model.reference_rows),
        _search_config(model),
        reference_rows=model.reference_rows,
        reference_scores=model.reference_scores,
    )
    assert {r.status for r in results} <= {"found", "not_found"}


def test_the_agnostic_explainer_goes_through_the_helper(loaded: dict[str, LoadedModel]) -> None:
    model = loaded["sklearn"]
    guarded = GuardedRows(prepare(model, CPU))
    x = _rows(model)
    result = agnostic_shapley(guarded, x, model.reference_rows[:8])
    assert result.error.max() < 1e-9
    sampled = agnostic_shapley(guarded, x, model.reference_rows[:8], exact_budget=1)
    assert sampled.std_error is not None and sampled.error.max() < 1e-9
    results = generate_counterfactuals(
        GuardedModule(NumpyModel(guarded)),
        x,
        spec_from_training(model.card.feature_names, model.reference_rows),
        _search_config(model),
        reference_rows=model.reference_rows,
        reference_scores=model.reference_scores,
    )
    assert len(results) == len(x)


def test_token_attributions_go_through_the_helper(loaded: dict[str, LoadedModel]) -> None:
    model = loaded["hf-text"]
    guarded = GuardedText(prepare(model, CPU))
    texts = list(model.reference_texts[:4])
    result = token_integrated_gradients(guarded, texts, class_index=1, steps=16)
    assert result.error.max() < 1e-2 * max(1.0, float(np.abs(result.prediction).max()))


def test_the_whole_explain_stage_runs_through_the_guard(
    loaded: dict[str, LoadedModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The model bank's own dispatch, with every prepared model wrapped in its guard."""
    from whylake.transforms import kind_explainers
    from whylake.transforms.explainers.counterfactuals import generate as generate_module

    wrap = {"torch": GuardedModule, "hf-text": GuardedText}
    policies = _policies()
    ctx = kind_explainers.ExplainContext(ExplainConfig(ig_steps=8), policies, CPU)
    real_numpy_model = kind_explainers.NumpyModel
    monkeypatch.setattr(
        kind_explainers,
        "NumpyModel",
        lambda *a, **k: GuardedModule(real_numpy_model(*a, **k)),
    )
    assert generate_module  # the counterfactual search is part of each family below
    for kind, model in loaded.items():
        prepared = wrap.get(kind, GuardedRows)(prepare(model, CPU))
        n = 4
        rows = [
            {
                "tenant_id": "acme",
                "sampling_reason": "always:flagged",
                "flags": ["flagged"],
                "text": t,
            }
            for t in (model.reference_texts[:n] or [None] * n)
        ]
        x = model.reference_rows[:n] if not model.card.is_text else np.zeros((n, 0))
        computed = kind_explainers.explain_group(model, prepared, rows, x, ctx)
        assert computed.scores is not None and computed.scores.shape == (n,)
        if not model.card.is_text:
            assert computed.counterfactuals, kind


def _policies():  # type: ignore[no-untyped-def]
    from whylake.transforms.sampling.policy import default_policy_file, load_policies

    return load_policies(default_policy_file())
