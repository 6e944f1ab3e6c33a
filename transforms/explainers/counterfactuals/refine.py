"""Post-processing shared by both paths: revert needless changes, shrink towards the query."""

from __future__ import annotations

import math

import torch

from whylake.transforms.explainers.counterfactuals.state import SearchState, logit

# Binary-search halvings when shrinking a valid counterfactual back towards its query: 2**-12 of
# the change is far below any feature's meaningful resolution.
_SHRINK_STEPS = 12
# Logit slack below which a candidate counts as sitting on the boundary (nothing left to shrink).
_SLACK = 1e-3


class Refinement(SearchState):
    """Make valid candidates sparser and closer, never invalid (DiCE's post-hoc sparsity)."""

    def refine(self, x: torch.Tensor, found: torch.Tensor) -> torch.Tensor:
        """Revert every change not needed, then shrink the rest, least efficient change first.

        Every move only replaces a candidate by one that still clears threshold + margin, so a
        found candidate stays found (post-hoc sparsity as in DiCE, Mothilal et al. 2020).
        Model-agnostic: it needs scores only, never gradients.
        """
        q, m, d = x.shape
        owner = torch.arange(q, device=x.device).repeat_interleave(m)
        rows = torch.nonzero(found.reshape(-1)).squeeze(1)
        if rows.numel() == 0:
            return x
        flat = x.reshape(q * m, d).clone()
        xc, x0, sign = flat[rows], self.x0[owner[rows]], self.sign[owner[rows]]
        lo, hi = self.lo[owner[rows]], self.hi[owner[rows]]
        xc = self._revert(xc, x0, sign)
        xc = self._shrink(xc, x0, lo, hi, sign)
        # Defence in depth: a refined row that no longer clears the margin (it cannot, barring
        # a model that is not a function of its input) falls back to its unrefined self.
        ok = self.accepts(self.scores(xc), sign)
        flat[rows] = torch.where(ok[:, None], xc, flat[rows])
        return flat.reshape(q, m, d)

    def _item_cost(self, xc: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """(n, items) MAD-scaled cost of each changed item, inf where unchanged."""
        cons = self.cons
        per_col = (xc - x0).abs() / cons.scale
        if cons.n_groups:
            groups = (per_col[:, None, :] * cons.item_columns[None, cons.d :]).sum(-1)
            per_col = torch.cat([per_col.masked_fill(cons.in_group, 0.0), groups], dim=1)
        return per_col.masked_fill(~cons.changed_items(xc, x0), math.inf)

    def _revert(self, xc: torch.Tensor, x0: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
        """Try restoring each changed item to the query's value, cheapest first; keep if valid."""
        cons = self.cons
        cost = self._item_cost(xc, x0)
        order = torch.argsort(cost, dim=1, stable=True)
        n_changed = torch.isfinite(cost).sum(1)
        for t in range(int(n_changed.max())):
            sub = torch.nonzero(n_changed > t).squeeze(1)
            item = order[sub, t]
            proposal = torch.where(cons.item_columns[item], x0[sub], xc[sub])
            ok = self.accepts(self.scores(proposal), sign[sub])
            xc[sub[ok]] = proposal[ok]
        return xc

    def _shrink(
        self,
        xc: torch.Tensor,
        x0: torch.Tensor,
        lo: torch.Tensor,
        hi: torch.Tensor,
        sign: torch.Tensor,
    ) -> torch.Tensor:
        """Binary-search each changed free column towards the query, least logit per MAD first.

        The logit each change buys is measured by undoing it alone; shrinking the least
        efficient first is what an L1-optimal solution of the locally linear model would do.
        """
        cons = self.cons
        n, d = xc.shape
        changed = (xc != x0) & cons.free
        n_changed = changed.sum(1)
        if int(n_changed.max()) == 0:
            return xc
        u = sign * logit(self.scores(xc))
        cost = ((xc - x0).abs() / cons.scale).masked_fill(~changed, math.inf)
        # One batched pass: every row with each changed column undone alone.
        r, j = torch.nonzero(changed, as_tuple=True)
        undone = xc[r].clone()
        undone[torch.arange(r.numel(), device=xc.device), j] = x0[r, j]
        drop = torch.zeros_like(xc)
        drop[r, j] = u[r] - sign[r] * logit(self.scores(undone))
        efficiency = torch.where(changed, drop / cost, math.inf)
        order = torch.argsort(efficiency, dim=1, stable=True)
        # Logit to spare above threshold + margin; once ~0 no change can shrink any further.
        tau = sign * logit(self.config.threshold + sign * self.config.margin)
        slack = u - tau
        for t in range(int(n_changed.max())):
            sub = torch.nonzero((n_changed > t) & (slack > _SLACK)).squeeze(1)
            if sub.numel() == 0:
                break
            col = order[sub, t]
            at = torch.arange(sub.numel(), device=xc.device)
            start, base = xc[sub, col], x0[sub, col]
            low = torch.zeros(sub.numel(), device=xc.device)
            high = torch.ones(sub.numel(), device=xc.device)
            kept = slack[sub]
            for _ in range(_SHRINK_STEPS):
                mid = (low + high) / 2
                proposal = xc[sub].clone()
                proposal[at, col] = base + mid * (start - base)
                proposal = cons.project(proposal, x0[sub], lo[sub], hi[sub])
                p = self.scores(proposal)
                ok = self.accepts(p, sign[sub])
                high = torch.where(ok, mid, high)
                low = torch.where(ok, low, mid)
                kept = torch.where(ok, sign[sub] * logit(p) - tau[sub], kept)
            final = xc[sub].clone()
            final[at, col] = base + high * (start - base)
            xc[sub] = cons.project(final, x0[sub], lo[sub], hi[sub])
            slack[sub] = kept
        return xc
