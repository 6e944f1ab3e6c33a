"""Diverse counterfactuals: candidates from either path, a second round that bans used routes.

Diversity follows DiCE (Mothilal et al. 2020)."""

from __future__ import annotations

import math

import numpy as np
import torch

from whylake.transforms.explainers.counterfactuals.constraints import Constraints
from whylake.transforms.explainers.counterfactuals.search import Search, query_generators


def candidates(
    search: Search, gens: list[torch.Generator]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Refined candidates (q, m, d), which are valid (q, m), which queries the search rescued."""
    config = search.config
    rescued = torch.zeros(search.x0.shape[0], dtype=torch.bool, device=search.x0.device)
    if config.method == "search":
        x, found = search.search_candidates(gens)
        return search.refine(x, found), found, rescued
    x, found = search.gradient_candidates(gens)
    if config.search_fallback:
        # Gradient steps stall at local optima of the score (and on flat, saturated regions);
        # the gradient-free search gets the queries they left with nothing.
        stalled = torch.nonzero(~found.any(dim=1)).squeeze(1)
        if stalled.numel():
            sub = search.subset(stalled)
            sub_x, sub_found = sub.search_candidates([gens[i] for i in stalled.tolist()])
            x[stalled], found[stalled] = sub_x, sub_found
            rescued[stalled] = sub_found.any(dim=1)
    return search.refine(x, found), found, rescued


def diversify(
    search: Search,
    queries: np.ndarray,
    x: torch.Tensor,
    found: torch.Tensor,
    picks: list[list[int]],
) -> tuple[torch.Tensor, torch.Tensor, list[list[int]]]:
    """A second round for queries with fewer than k distinct counterfactuals.

    Each new run bans one feature the chosen counterfactuals change (and one bans them all),
    so what comes back takes another route: "and if age cannot change?".
    """
    config, cons = search.config, search.cons
    k = config.n_counterfactuals
    lacking = [qi for qi, p in enumerate(picks) if 0 < len(p) < k]
    if not lacking:
        return x, found, picks
    q, m, d = x.shape
    owners: list[int] = []
    bans: list[torch.Tensor] = []
    tags: list[int] = []
    for qi in lacking:
        used = cons.changed_items(x[qi, picks[qi]], search.x0[qi].expand(len(picks[qi]), d))
        union = used.any(dim=0)
        items = torch.nonzero(union).squeeze(1).tolist()
        masks = [
            torch.zeros_like(union).index_fill_(0, torch.tensor([j], device=x.device), True)
            for j in items
        ]
        if len(items) > 1:
            masks.append(union)
        for tag, mask in enumerate(masks[:m]):
            owners.append(qi)
            bans.append(mask)
            tags.append(tag)
    owner = torch.as_tensor(owners, device=x.device)
    sub = search.subset(owner, ban=torch.stack(bans), slots=config.oversample)
    gens = [
        query_generators(queries[o : o + 1], config.seed, f"{config.method}:ban{t}")[0]
        for o, t in zip(owners, tags, strict=True)
    ]
    sub_x, sub_found, _ = candidates(sub, gens)
    # Append each query's new candidates after its old ones, padding with not-found slots.
    per_query: dict[int, list[int]] = {}
    for v, o in enumerate(owners):
        per_query.setdefault(o, []).append(v)
    extra = max(len(v) for v in per_query.values()) * config.oversample
    x_new = torch.cat([x, search.x0[:, None].expand(q, extra, d)], dim=1).clone()
    found_new = torch.cat([found, found.new_zeros(q, extra)], dim=1)
    for o, vs in per_query.items():
        block = sub_x[vs].reshape(-1, d)
        x_new[o, m : m + block.shape[0]] = block
        found_new[o, m : m + block.shape[0]] = sub_found[vs].reshape(-1)
    again = torch.as_tensor(lacking, device=x.device)
    redone = select_diverse(
        x_new[again], found_new[again], search.x0[again], cons, k, config.diversity
    )
    for qi, p in zip(lacking, redone, strict=True):
        picks[qi] = p
    return x_new, found_new, picks


def select_diverse(
    x: torch.Tensor,
    found: torch.Tensor,
    x0: torch.Tensor,
    cons: Constraints,
    k: int,
    diversity: float,
) -> list[list[int]]:
    """Per query, up to k candidate indices: most proximal first, each distinct from the others.

    A first pass takes only candidates whose changed features differ from every one chosen; a
    second fills up with ones that change the same features but lie ``diversity`` apart.
    """
    q, m, d = x.shape
    x0 = x0[:, None].expand(q, m, d)
    cost = cons.distance(x, x0).masked_fill(~found, math.inf)
    changed = cons.changed_items(x.reshape(q * m, d), x0.reshape(q * m, d)).reshape(q, m, -1)
    same_set = (changed[:, :, None] == changed[:, None]).all(-1)
    apart = ((x[:, :, None] - x[:, None]).abs() / cons.scale).sum(-1) > diversity
    order = torch.argsort(cost, dim=1, stable=True).tolist()
    finite = torch.isfinite(cost).tolist()
    same_l, apart_l = same_set.tolist(), apart.tolist()
    chosen: list[list[int]] = []
    for i in range(q):
        picks: list[int] = []
        for strict in (True, False):
            for c in order[i]:
                if len(picks) == k or not finite[i][c]:
                    break
                if c in picks:
                    continue
                if all(not same_l[i][c][p] or (not strict and apart_l[i][c][p]) for p in picks):
                    picks.append(c)
        chosen.append(picks)
    return chosen
