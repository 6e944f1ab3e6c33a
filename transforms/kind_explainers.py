"""The right explainer for each model kind: one function per family, chosen by the card's kind.

- torch (differentiable): Integrated Gradients (the hand-written chain, autograd otherwise),
  stability across baselines, DeepLIFT / expected-gradients SHAP, gradient counterfactuals;
- xgboost, lightgbm: exact TreeSHAP through the booster (GPUTreeShap on cuda), in the raw
  margin, and the gradient-free counterfactual search on the probability;
- sklearn (any estimator or pipeline): model-agnostic Shapley values (exact where it fits,
  else antithetic permutations with a standard error), the gradient-free search;
- hf-text: token Integrated Gradients on the input embeddings.

Worker side, no Beam: the explain stage's ModelBank calls :func:`explain_group`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from whylake.registry.kinds import kind_for, to_score
from whylake.registry.store import LoadedModel
from whylake.transforms.explainers.config import ExplainConfig
from whylake.transforms.explainers.model_calls import NumpyModel
from whylake.transforms.explanation_plan import RowPlan
from whylake.transforms.explanation_records import Computed
from whylake.transforms.sampling.policy import SamplingPolicies

Row = dict[str, Any]


@dataclass(frozen=True)
class ExplainContext:
    """What every family needs from the worker: settings, policies and the device."""

    config: ExplainConfig
    policies: SamplingPolicies
    device: torch.device
    # The explanation policy's plan for these rows (all share it); None: the sampling policy's
    # counterfactuals_for alone decides, as before explanation policies.
    plan: RowPlan | None = None


class KindModel:
    """A loaded model of a numpy kind (scikit-learn) as the explainers call it."""

    def __init__(self, loaded: LoadedModel, device: torch.device | None = None) -> None:
        self.loaded = loaded
        self._kind = kind_for(loaded.card.kind)
        self.device = device or torch.device("cpu")

    def predict_rows(self, rows: np.ndarray) -> np.ndarray:
        return self._kind.predict(self.loaded.model, rows, self.loaded.card)


def prepare(loaded: LoadedModel, device: torch.device) -> Any:
    """The object the kind's explainers call, on the worker's device, built once per model."""
    card = loaded.card
    if card.kind == "torch":
        return loaded.model.to(device)
    if card.kind in ("xgboost", "lightgbm"):
        from whylake.transforms.explainers.tree_shap import TreeEnsemble

        return TreeEnsemble(loaded.model, card.kind, card.feature_names, device)
    if card.kind == "hf-text":
        from whylake.transforms.explainers.token_ig import TextClassifier

        return TextClassifier(loaded.model.model.to(device), loaded.model.tokenizer)
    return KindModel(loaded)  # scikit-learn runs on the CPU


def explain_group(
    loaded: LoadedModel, prepared: Any, rows: list[Row], x: np.ndarray, ctx: ExplainContext
) -> Computed:
    """Explain one model's rows with its kind's family (the dispatch the explain stage runs)."""
    family = _FAMILIES[loaded.card.kind]
    return family(loaded, prepared, rows, x, ctx)


def _differentiable(
    loaded: LoadedModel, module: Any, rows: list[Row], x: np.ndarray, ctx: ExplainContext
) -> Computed:
    from whylake.transforms.explainers.integrated_gradients import (
        converged_integrated_gradients,
    )
    from whylake.transforms.explainers.stability import attribution_stability

    card, cfg = loaded.card, ctx.config
    baseline = np.asarray(card.baseline, dtype=np.float64)
    # Steps raised per row until the attributions have converged (ExplainConfig.ig_tolerance).
    converged = converged_integrated_gradients(
        module,
        x,
        baseline,
        steps=cfg.ig_steps,
        tolerance=cfg.ig_tolerance,
        max_steps=cfg.ig_max_steps,
        device=ctx.device,
        rule=cfg.ig_rule,
    )
    ig = converged.result
    stability = attribution_stability(
        module,
        x,
        _stability_baselines(loaded, baseline, cfg),
        steps=cfg.ig_steps,
        top_k=cfg.stability_top_k,
        device=ctx.device,
    )
    shap = None
    if cfg.shap:
        from whylake.transforms.explainers.shap_values import shap_attributions

        background = loaded.reference_rows[: cfg.shap_background]
        shap = shap_attributions(
            module, x, background, kind="auto", seed=cfg.seed, device=ctx.device
        )
    counterfactuals = _counterfactuals(loaded, rows, x, ctx, module, "gradient")
    return Computed(
        ig,
        stability,
        shap,
        counterfactuals,
        explainer_kind="integrated_gradients",
        scores=ig.prediction,
        counterfactual_method="gradient",
        ig_steps=converged.steps,
        ig_convergence=converged.convergence,
    )


def _trees(
    loaded: LoadedModel, trees: Any, rows: list[Row], x: np.ndarray, ctx: ExplainContext
) -> Computed:
    from whylake.transforms.explainers.tree_shap import tree_shap

    result = tree_shap(trees, x)
    link = loaded.card.score_link
    scorer = NumpyModel(trees, output=lambda m: to_score(m, link), device=trees.device)
    counterfactuals = _counterfactuals(loaded, rows, x, ctx, scorer, "search")
    return Computed(
        result,
        None,
        None,
        counterfactuals,
        explainer_kind="tree_shap",
        scores=to_score(result.prediction, link),
        counterfactual_method="search",
    )


def _agnostic(
    loaded: LoadedModel, model: Any, rows: list[Row], x: np.ndarray, ctx: ExplainContext
) -> Computed:
    from whylake.transforms.explainers.agnostic_shap import agnostic_shapley

    cfg = ctx.config
    # The reference rows are a seeded sample of the training data already: the background is
    # their first rows, so an auditor can rebuild it from reference.npz alone.
    background = loaded.reference_rows[: cfg.agnostic_background]
    result = agnostic_shapley(
        model, x, background, permutations=cfg.agnostic_permutations, seed=cfg.seed
    )
    scorer = NumpyModel(model, device=model.device)
    counterfactuals = _counterfactuals(loaded, rows, x, ctx, scorer, "search")
    return Computed(
        result,
        None,
        None,
        counterfactuals,
        explainer_kind=result.method,
        scores=result.prediction,
        counterfactual_method="search",
    )


def _text(
    loaded: LoadedModel, model: Any, rows: list[Row], x: np.ndarray, ctx: ExplainContext
) -> Computed:
    from whylake.transforms.explainers.token_ig import converged_token_integrated_gradients

    cfg = ctx.config
    model.max_length = cfg.text_max_length
    texts = [str(row.get("text") or "") for row in rows]
    # Steps raised per text until converged, as for tabular IG (ExplainConfig.ig_tolerance).
    converged = converged_token_integrated_gradients(
        model,
        texts,
        class_index=loaded.card.class_index or 0,
        steps=cfg.ig_steps,
        tolerance=cfg.ig_tolerance,
        max_steps=cfg.ig_max_steps,
        rule=cfg.ig_rule,
    )
    tokens = converged.result
    return Computed(
        None,
        None,
        None,
        {},
        explainer_kind="token_integrated_gradients",
        scores=tokens.probability,
        tokens=tokens,
        ig_steps=converged.steps,
        ig_convergence=converged.convergence,
    )


def _stability_baselines(
    loaded: LoadedModel, baseline: np.ndarray, cfg: ExplainConfig
) -> np.ndarray:
    """The card's baseline plus seeded reference rows: how much does the choice matter?"""
    ref = loaded.reference_rows
    rng = np.random.default_rng(cfg.seed)
    picks = rng.choice(len(ref), size=min(cfg.stability_baselines, len(ref)), replace=False)
    return np.vstack([baseline[None, :], np.median(ref, axis=0)[None, :], ref[picks]])


def _counterfactuals(
    loaded: LoadedModel,
    rows: list[Row],
    x: np.ndarray,
    ctx: ExplainContext,
    scorer: Any,
    method: str,
) -> dict[int, tuple[str, list[Row] | None]]:
    """Counterfactuals for the rows whose plan (without one, tenant policy) asks for them."""
    if not ctx.config.counterfactuals:
        return {}
    wanted = [
        i
        for i, row in enumerate(rows)
        if ctx.plan is not None  # the plan already decided: its config says counterfactuals
        or ctx.policies.policy_for(row["tenant_id"]).wants_counterfactuals(
            row["sampling_reason"], row.get("flags")
        )
    ]
    if not wanted:
        return {}
    from whylake.transforms.counterfactual_records import counterfactuals_for_rows

    immutable = ctx.plan.constraints.immutable if ctx.plan is not None else ()
    return counterfactuals_for_rows(
        loaded,
        x,
        wanted,
        ctx.config,
        ctx.device,
        scorer=scorer,
        method=method,
        immutable=immutable,
    )


_Family = Callable[[LoadedModel, Any, list[Row], np.ndarray, ExplainContext], Computed]
_FAMILIES: dict[str, _Family] = {
    "torch": _differentiable,
    "xgboost": _trees,
    "lightgbm": _trees,
    "sklearn": _agnostic,
    "hf-text": _text,
}
