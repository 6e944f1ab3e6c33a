"""Token attributions of a text classifier: Integrated Gradients on its input embeddings.

Sundararajan et al. 2017, on the embedding layer as captum's LayerIntegratedGradients does it:
the path runs from the embeddings of a baseline text (every token but the special ones replaced
by the padding token) to the text's own, through the model's ``inputs_embeds`` entry. Rows are
sorted by length and batched rows x steps per pass, so a pass pads only to its own longest text;
each token keeps its character offsets so a report can highlight the text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from whylake.transforms.explainers.integrated_gradients import (
    quadrature,
    relative_change,
    settled,
)
from whylake.transforms.explainers.model_calls import place

# Token positions (rows x steps x length) per pass: keeps a pass's activations in memory
# bounds on the CPU; a GPU takes 16x more.
_TOKENS_PER_PASS = 1 << 15
_CUDA_SCALE = 16


class TextClassifier:
    """A Hugging Face sequence classifier and its fast tokenizer, as the explainers call it."""

    def __init__(self, model: Any, tokenizer: Any, max_length: int = 256) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length

    @property
    def device(self) -> torch.device:
        return torch.device(next(self.model.parameters()).device)

    def place_input(self, x: torch.Tensor) -> torch.Tensor:
        return x if x.device == self.device else x.to(self.device)

    def encode(self, texts: list[str]) -> dict[str, Any]:
        """Token ids, offsets and the baseline ids of each text (unpadded lists)."""
        enc = self.tokenizer(
            texts,
            truncation=True,
            max_length=self.max_length,
            return_offsets_mapping=True,
            return_special_tokens_mask=True,
        )
        pad = self.tokenizer.pad_token_id
        baselines = [
            [t if special else pad for t, special in zip(ids, mask, strict=True)]
            for ids, mask in zip(enc["input_ids"], enc["special_tokens_mask"], strict=True)
        ]
        return {
            "input_ids": enc["input_ids"],
            "offsets": enc["offset_mapping"],
            "special": enc["special_tokens_mask"],
            "baseline_ids": baselines,
        }

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """The input embeddings of token ids ``(n, L)`` -> ``(n, L, h)``."""
        layer = self.model.get_input_embeddings()
        out: torch.Tensor = layer(ids)
        return out

    def logits(self, embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Class logits ``(n, classes)`` from input embeddings."""
        out: torch.Tensor = self.model(inputs_embeds=embeds, attention_mask=mask).logits
        return out


@dataclass(frozen=True)
class TokenAttributions:
    """Per row: tokens with ids, character offsets and attributions, and the fidelity figures."""

    tokens: list[list[dict[str, Any]]]
    prediction: np.ndarray  # the explained logit
    base_value: np.ndarray  # the logit of the baseline text
    error: np.ndarray  # |sum of token attributions - (prediction - base_value)|
    probability: np.ndarray  # p(class) of the text (the logged score's units)
    config: dict[str, object]


def token_integrated_gradients(
    model: TextClassifier,
    texts: list[str],
    *,
    class_index: int,
    steps: int = 50,
    rule: str = "gauss_legendre",
) -> TokenAttributions:
    """IG of ``class_index``'s logit with respect to each token's input embedding."""
    if not texts:
        raise ValueError("no texts to explain")
    enc = model.encode(texts)
    n = len(texts)
    nodes, weights = quadrature(rule, steps)
    dev = model.device
    budget = _TOKENS_PER_PASS * (_CUDA_SCALE if dev.type == "cuda" else 1)
    lengths = np.array([len(ids) for ids in enc["input_ids"]])
    order = np.argsort(-lengths, kind="stable")  # longest first: the first pass sizes memory
    values: list[np.ndarray | None] = [None] * n
    prediction, base = np.empty(n), np.empty(n)
    probability = np.empty(n)
    alphas = torch.as_tensor(nodes, dtype=torch.float32)
    w = torch.as_tensor(weights, dtype=torch.float32)
    start = 0
    while start < n:
        length = int(lengths[order[start]])
        rows = max(1, budget // (steps * length))
        picked = order[start : start + rows]
        block = _explain_block(model, enc, picked, length, alphas, w, class_index)
        for j, i in enumerate(picked):
            values[i] = block["values"][j, : lengths[i]]
        prediction[picked] = block["prediction"]
        base[picked] = block["base"]
        probability[picked] = block["probability"]
        start += len(picked)
    tokens = []
    for i in range(n):
        row_values = values[i]
        assert row_values is not None
        ids = enc["input_ids"][i]
        names = model.tokenizer.convert_ids_to_tokens(ids)
        tokens.append(
            [
                {
                    "token": str(name),
                    "value": float(v),
                    "start": int(s),
                    "end": int(e),
                    "token_id": int(t),
                }
                for name, v, (s, e), t, special in zip(
                    names, row_values, enc["offsets"][i], ids, enc["special"][i], strict=True
                )
                if not special
            ]
        )
    # Special tokens are the same in the text and the baseline, so their attribution is 0 up
    # to rounding; the error is judged on every token the model saw.
    totals = np.array([float(np.sum(v)) for v in values if v is not None])
    error = np.abs(totals - (prediction - base))
    config: dict[str, object] = {
        "steps": steps,
        "rule": rule,
        "layer": "input embeddings",
        "baseline": "pad tokens, special tokens kept",
        "class_index": class_index,
        "device": dev.type,
    }
    return TokenAttributions(tokens, prediction, base, error, probability, config)


def _explain_block(
    model: TextClassifier,
    enc: dict[str, Any],
    picked: np.ndarray,
    length: int,
    alphas: torch.Tensor,
    w: torch.Tensor,
    class_index: int,
) -> dict[str, np.ndarray]:
    r, steps = len(picked), alphas.shape[0]
    pad = model.tokenizer.pad_token_id
    ids = torch.full((r, length), pad, dtype=torch.long)
    base_ids = torch.full((r, length), pad, dtype=torch.long)
    mask = torch.zeros((r, length), dtype=torch.long)
    for j, i in enumerate(picked):
        k = len(enc["input_ids"][i])
        ids[j, :k] = torch.as_tensor(enc["input_ids"][i])
        base_ids[j, :k] = torch.as_tensor(enc["baseline_ids"][i])
        mask[j, :k] = 1
    with torch.no_grad():
        e = model.embed(place(model, ids))
        b = model.embed(place(model, base_ids))
        mask_d = place(model, mask)
        ends = model.logits(place(model, torch.cat([e, b])), place(model, torch.cat([mask_d] * 2)))
        p = torch.softmax(ends[:r].double(), dim=-1)[:, class_index]
    a = place(model, alphas)[None, :, None, None]
    path = (b[:, None] + a * (e - b)[:, None]).reshape(r * steps, length, -1)
    path = path.detach().requires_grad_(True)
    with torch.enable_grad():
        out = model.logits(place(model, path), place(model, mask.repeat_interleave(steps, dim=0)))
        (grad,) = torch.autograd.grad(out[:, class_index].sum(), path)
    mean_grad = torch.einsum("s,rslh->rlh", place(model, w), grad.reshape(r, steps, length, -1))
    values = ((e - b) * mean_grad).sum(-1)
    return {
        "values": values.detach().to("cpu", torch.float64).numpy(),
        "prediction": ends[:r, class_index].to("cpu", torch.float64).numpy(),
        "base": ends[r:, class_index].to("cpu", torch.float64).numpy(),
        "probability": p.cpu().numpy(),
    }


@dataclass(frozen=True)
class ConvergedTokenAttributions:
    """Token IG whose step count was doubled per text until its attributions stopped moving.

    ``result`` holds each text's token attributions at ``steps[i]`` (the rule of that order:
    recomputable from the text, the baseline rule and the step count alone); ``convergence[i]``
    is max over tokens |IG_steps - IG_steps/2| / max |IG_steps| for it.
    """

    result: TokenAttributions
    steps: np.ndarray  # (n,) int64
    convergence: np.ndarray  # (n,) float64


def converged_token_integrated_gradients(
    model: TextClassifier,
    texts: list[str],
    *,
    class_index: int,
    steps: int = 50,
    tolerance: float = 0.005,
    max_steps: int = 3200,
    rule: str = "gauss_legendre",
) -> ConvergedTokenAttributions:
    """Token IG with the steps doubled per text until converged, as the tabular IG does
    (`integrated_gradients.converged_integrated_gradients`: the same acceptance rule); only the
    texts still moving are recomputed."""
    if not 0 < tolerance < 1:
        raise ValueError(f"tolerance must be in (0, 1), got {tolerance}")
    if max_steps < 2 * steps:
        raise ValueError(f"max_steps ({max_steps}) must be at least twice steps ({steps})")
    first = token_integrated_gradients(
        model, texts, class_index=class_index, steps=steps, rule=rule
    )
    n = len(texts)
    tokens, error = list(first.tokens), np.array(first.error, dtype=np.float64)
    previous = [_token_values(row) for row in first.tokens]
    used = np.zeros(n, dtype=np.int64)
    convergence = np.zeros(n, dtype=np.float64)
    before = np.full(n, np.inf)
    active = np.arange(n)
    current = steps
    while active.size:
        current *= 2
        finer = token_integrated_gradients(
            model, [texts[i] for i in active], class_index=class_index, steps=current, rule=rule
        )
        values = [_token_values(row) for row in finer.tokens]
        figure = np.array(
            [
                float(relative_change(v[None, :], previous[i][None, :])[0]) if v.size else 0.0
                for v, i in zip(values, active, strict=True)
            ]
        )
        done = settled(figure, before[active], tolerance) | (2 * current > max_steps)
        for j, i in enumerate(active):
            if done[j]:
                tokens[i], error[i] = finer.tokens[j], finer.error[j]
                used[i], convergence[i] = current, figure[j]
            else:
                previous[i], before[i] = values[j], figure[j]
        active = active[~done]
    config: dict[str, object] = {
        **first.config,
        "adaptive": "steps doubled per text until the last two doublings moved max |IG| by at "
        "most tolerance / 2 and tolerance",
        "tolerance": tolerance,
        "max_steps": max_steps,
    }
    result = TokenAttributions(
        tokens, first.prediction, first.base_value, error, first.probability, config
    )
    return ConvergedTokenAttributions(result, used, convergence)


def _token_values(row: list[dict[str, Any]]) -> np.ndarray:
    return np.array([t["value"] for t in row], dtype=np.float64)
