"""The gradient path: linearised L1-minimal steps, a fractional knapsack per step.

As SparseFool (Modas et al. 2019) does for adversarial examples; Wachter et al. 2017's
MAD-scaled L1 is the cost."""

from __future__ import annotations

import math

import torch

from whylake.transforms.explainers.counterfactuals.state import SearchState, logit
from whylake.transforms.explainers.model_calls import forward_scalar

# Stands in for an unbounded feature's room (in MAD units) so cumulative sums stay finite.
_MAX_ROOM = 1e6
# Gradient path: each diverse slot but the first drops this share of the features at random,
# so the k counterfactuals of one query are pushed onto different feature sets.
_SLOT_DROPOUT = 0.5
# Linear steps aim this far past the target: ReLU kinks make the linear model optimistic.
_OVERSHOOT = 0.05


class GradientSteps(SearchState):
    """Candidates by gradient steps from each query."""

    def gradient_candidates(self, gens: list[torch.Generator]) -> tuple[torch.Tensor, torch.Tensor]:
        """Linearised L1-minimal steps (a fractional knapsack per step), m slots per query."""
        cons, cfg = self.cons, self.config
        q, d = self.x0.shape
        m = self.slots
        device = self.x0.device
        # Slot 0 minimises the plain MAD-scaled L1; the others see randomly re-weighted costs
        # and dropped features, the cheap route to diverse feature sets.
        draws = torch.stack([torch.rand((m, 2, cons.n_items), generator=g) for g in gens])
        weights = torch.exp(0.75 * (2.0 * draws[:, :, 0] - 1.0))
        weights = torch.where(draws[:, :, 1] < _SLOT_DROPOUT, math.inf, weights)
        weights[:, 0] = 1.0
        weights = weights.to(device).masked_fill(self.ban[:, None], math.inf)
        weights = weights.reshape(q * m, cons.n_items)
        owner = torch.arange(q, device=device).repeat_interleave(m)
        x0, lo, hi, sign = self.x0[owner], self.lo[owner], self.hi[owner], self.sign[owner]
        tau = sign * logit(cfg.threshold + sign * cfg.margin)
        x = x0.clone()
        # All slots of a query start at the query: one evaluation per query, then broadcast.
        u_q, grad_q, ok_q = self._evaluate(self.x0, self.sign)
        u, grad, found = u_q[owner], grad_q[owner], ok_q[owner]
        alive = torch.ones(q * m, dtype=torch.bool, device=device)
        # Backtracking: each row aims at a share ``eta`` of its remaining gap; a step that does
        # not raise the signed logit is refused and the share halved (ReLU kinks make the linear
        # model wrong far from the point it was taken at), a step that does doubles it again.
        eta = torch.ones(q * m, device=device)
        for _ in range(cfg.max_steps):
            rows = torch.nonzero(alive & ~found).squeeze(1)
            if rows.numel() == 0:
                break
            xr = x[rows]
            new = self._knapsack_step(
                xr,
                x0[rows],
                lo[rows],
                hi[rows],
                grad[rows],
                (tau - u)[rows] * eta[rows],
                weights[rows],
            )
            stuck = (new == xr).all(dim=1) | ~torch.isfinite(new).all(dim=1)
            alive[rows[stuck]] = False
            rows, new = rows[~stuck], new[~stuck]
            if rows.numel() == 0:
                continue
            u_new, grad_new, ok = self._evaluate(new, sign[rows])
            better = ok | (u_new > u[rows])
            took = rows[better]
            x[took], u[took], grad[took] = new[better], u_new[better], grad_new[better]
            found[rows[ok]] = True
            eta[took] = torch.clamp(eta[took] * 2.0, max=1.0)
            refused = rows[~better]
            eta[refused] = eta[refused] / 2.0
            alive[refused[eta[refused] < 1.0 / 1024]] = False
        return x.reshape(q, m, d), found.reshape(q, m)

    def _evaluate(
        self, x: torch.Tensor, sign: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Signed logit, its input gradient and acceptance at rows x."""
        xa = x.detach().requires_grad_(True)
        with torch.enable_grad():
            p = forward_scalar(self.model, xa).float()
            u = sign * logit(p)
            if u.requires_grad:
                (grad,) = torch.autograd.grad(u.sum(), xa, allow_unused=True)
            else:
                grad = None
        # A score built from non-differentiable ops has no gradient: every row then stalls at
        # once and, with search_fallback, goes to the gradient-free search.
        if grad is None:
            grad = torch.zeros_like(xa)
        return u.detach(), grad.detach(), self.accepts(p.detach(), sign)

    def _knapsack_step(
        self,
        x: torch.Tensor,
        x0: torch.Tensor,
        lo: torch.Tensor,
        hi: torch.Tensor,
        grad: torch.Tensor,
        gap: torch.Tensor,
        weights: torch.Tensor,
    ) -> torch.Tensor:
        """One step: the cheapest (cost-weighted) changes whose linearised gain closes ``gap``."""
        cons = self.cons
        d = cons.d
        need = gap.clamp(min=0) * (1.0 + _OVERSHOOT) + 1e-4
        gain = grad * cons.scale  # logit gain per MAD unit
        room = torch.where(gain > 0, hi - x, x - lo) / cons.scale
        room = room.clamp(0.0, _MAX_ROOM)
        usable = cons.free & (room > 0) & (gain != 0) & torch.isfinite(gain)
        abs_gain = torch.where(usable, gain.abs(), torch.zeros_like(gain))
        ratio = abs_gain / weights[:, :d]
        cap = abs_gain * room
        if cons.n_groups:
            hot = cons.hot(x)
            g_members = grad[:, cons.members]
            g_hot = g_members.gather(2, hot[:, :, None])
            switch_gain = g_members - g_hot
            # Switching costs the MAD-scaled change of both columns: the new and the old hot one.
            inv = (1.0 / cons.scale[cons.members])[None].expand(x.shape[0], -1, -1)
            cost = inv + inv.gather(2, hot[:, :, None])
            is_hot = (
                torch.arange(cons.members.shape[1], device=x.device)[None, None] == hot[..., None]
            )
            allowed = cons.member_target[None] & ~is_hot & cons.group_free[None, :, None]
            switch_ratio = torch.where(allowed & (switch_gain > 0), switch_gain / cost, 0.0)
            best_ratio, best = switch_ratio.max(dim=2)
            best_gain = switch_gain.gather(2, best[..., None]).squeeze(2)
            best_ratio = best_ratio / weights[:, d:]
            ratio = torch.cat([ratio, best_ratio], dim=1)
            cap = torch.cat([cap, torch.where(best_ratio > 0, best_gain, 0.0)], dim=1)
        ratio = torch.nan_to_num(ratio, nan=0.0)
        order = torch.argsort(ratio, dim=1, descending=True, stable=True)
        cap_sorted = torch.where(ratio.gather(1, order) > 0, cap.gather(1, order), 0.0)
        before = torch.cumsum(cap_sorted, dim=1) - cap_sorted
        take = torch.minimum((need[:, None] - before).clamp(min=0.0), cap_sorted)
        # A group switch is all or nothing: its whole gain is taken once any of it is needed.
        take = torch.where((order >= d) & (take > 0), cap_sorted, take)
        taken = torch.zeros_like(take).scatter(1, order, take)
        step = torch.where(abs_gain > 0, taken[:, :d] / abs_gain.clamp(min=1e-30), 0.0)
        new = x + torch.sign(gain) * step * cons.scale
        if cons.n_groups:
            switch = taken[:, d:] > 0
            cols = cons.members[None].expand(x.shape[0], -1, -1)
            on = cols.gather(2, best[..., None]).squeeze(2)
            off = cols.gather(2, hot[..., None]).squeeze(2)
            r, g = torch.nonzero(switch, as_tuple=True)
            new[r, off[r, g]] = 0.0
            new[r, on[r, g]] = 1.0
        return self.cons.project(new, x0, lo, hi)
