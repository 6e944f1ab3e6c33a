"""The model-agnostic path: sparse growing spheres around each query (Laugel et al. 2018)."""

from __future__ import annotations

import math

import torch

from whylake.transforms.explainers.counterfactuals.state import SearchState

# Search path: first sphere radius (MAD-scaled L1) and its growth per round.
_FIRST_RADIUS = 0.25
_RADIUS_GROWTH = 1.5


class SphereSearch(SearchState):
    """Candidates by sampling growing spheres; needs no gradient."""

    def search_candidates(self, gens: list[torch.Generator]) -> tuple[torch.Tensor, torch.Tensor]:
        """Sparse growing spheres: random few-feature moves at growing MAD-L1 radius, batched."""
        cons, cfg = self.cons, self.config
        q, d = self.x0.shape
        m = self.slots
        s_count = cfg.search_samples
        device = self.x0.device
        best_x = self.x0[:, None].expand(q, m, d).clone()
        best_cost = torch.full((q, m), math.inf, device=device)
        first_hit = torch.full((q,), -1, dtype=torch.long, device=device)
        up = (self.hi > self.x0) & cons.free
        down = (self.lo < self.x0) & cons.free
        col_ok = up | down
        if cons.n_groups:
            hot0 = cons.hot(self.x0)
            n_targets = (
                cons.member_target.sum(1)[None] - cons.member_target.gather(1, hot0.T).T.long()
            )
            group_ok = cons.group_free[None] & (n_targets > 0)
            item_ok = torch.cat([col_ok, group_ok], dim=1)
        else:
            item_ok = col_ok
        item_ok = item_ok & ~self.ban
        n_ok = item_ok.sum(1)
        active = n_ok > 0
        width = cons.members.shape[1]
        per_sample = 2 + cons.n_items + 2 * d + cons.n_groups * width
        for r in range(cfg.max_steps):
            idx = torch.nonzero(active).squeeze(1)
            if idx.numel() == 0:
                break
            u = torch.stack([torch.rand((s_count, per_sample), generator=gens[i]) for i in idx])
            u = u.to(device)
            na = idx.numel()
            x0 = self.x0[idx, None].expand(na, s_count, d)
            lo, hi = self.lo[idx, None], self.hi[idx, None]
            # How many items to move: 1 .. min(available, r + 1), growing with the radius.
            top = torch.clamp(n_ok[idx], max=r + 1)[:, None]
            s = 1 + (u[..., 0] * top).floor().clamp(max=top - 1)
            keys = u[..., 2 : 2 + cons.n_items].masked_fill(~item_ok[idx, None], -1.0)
            kth = torch.sort(keys, dim=-1, descending=True).values.gather(
                2, (s.long() - 1)[..., None]
            )
            chosen = (keys >= kth) & (keys >= 0)
            off = 2 + cons.n_items
            u_dir, u_len = u[..., off : off + d], u[..., off + d : off + 2 * d]
            can_up, can_down = up[idx, None], down[idx, None]
            direction = torch.where(
                can_up & can_down,
                torch.where(u_dir < 0.5, 1.0, -1.0),
                torch.where(can_up, 1.0, -1.0),
            )
            lo_r = _FIRST_RADIUS * _RADIUS_GROWTH**r
            radius = lo_r * (1.0 + (_RADIUS_GROWTH - 1.0) * u[..., 1:2])
            share = -torch.log1p(-u_len.clamp(max=1 - 1e-7)) * chosen[..., :d]
            share = share / share.sum(-1, keepdim=True).clamp(min=1e-12)
            x = x0 + direction * radius * share * cons.scale
            x = cons.project(x.reshape(-1, d), x0.reshape(-1, d), *self._flat(lo, hi, s_count))
            if cons.n_groups:
                x = self._random_switch(x, chosen[..., d:], u[..., off + 2 * d :], na * s_count)
            p = self.scores(x).reshape(na, s_count)
            ok = self.accepts(p, self.sign[idx, None])
            cost = torch.where(
                ok, cons.distance(x, x0.reshape(-1, d)).reshape(na, s_count), math.inf
            )
            all_cost = torch.cat([best_cost[idx], cost], dim=1)
            all_x = torch.cat([best_x[idx], x.reshape(na, s_count, d)], dim=1)
            # Keep the cheapest candidate of each changed-feature set first, so the buffer
            # holds different routes to the target rather than m copies of one.
            repeat = self._repeats(all_x, all_cost, self.x0[idx])
            ranked = torch.where(repeat & torch.isfinite(all_cost), all_cost + 1e9, all_cost)
            _, keep = torch.topk(ranked, m, dim=1, largest=False, sorted=True)
            best_cost[idx] = all_cost.gather(1, keep)
            best_x[idx] = all_x.gather(1, keep[..., None].expand(-1, -1, d))
            finite = torch.isfinite(best_cost[idx])
            distinct = (finite & ~repeat.gather(1, keep)).sum(1)
            first_hit[idx] = torch.where((first_hit[idx] < 0) & finite.any(1), r, first_hit[idx])
            # Done with k different routes, or with a full buffer two rounds after the first hit.
            done = (distinct >= min(cfg.n_counterfactuals, m)) | (
                finite.all(1) & (r - first_hit[idx] >= 2) & (first_hit[idx] >= 0)
            )
            active[idx] = ~done
        return best_x, torch.isfinite(best_cost)

    def _repeats(self, x: torch.Tensor, cost: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """(q, L) True where a cheaper candidate of the same query changes the same items."""
        q, n, d = x.shape
        changed = self.cons.changed_items(x.reshape(q * n, d), x0.repeat_interleave(n, 0))
        signature = changed.double() @ self._item_keys(x.device)
        signature = signature.reshape(q, n)
        order = torch.argsort(cost, dim=1, stable=True)
        rank = torch.empty_like(order).scatter_(
            1, order, torch.arange(n, device=x.device).expand(q, n)
        )
        same = signature[:, :, None] == signature[:, None, :]
        earlier = rank[:, None, :] < rank[:, :, None]
        return (same & earlier).any(dim=2)

    def _item_keys(self, device: torch.device) -> torch.Tensor:
        # Fixed random weights: two different item sets collide with probability ~0.
        gen = torch.Generator().manual_seed(0x5EED)
        return torch.rand(self.cons.n_items, generator=gen, dtype=torch.float64).to(device)

    def _flat(
        self, lo: torch.Tensor, hi: torch.Tensor, s: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        d = self.cons.d
        return lo.expand(-1, s, d).reshape(-1, d), hi.expand(-1, s, d).reshape(-1, d)

    def _random_switch(
        self, x: torch.Tensor, chosen: torch.Tensor, u: torch.Tensor, n: int
    ) -> torch.Tensor:
        """Switch each chosen group to a random allowed column other than its hot one."""
        cons = self.cons
        chosen = chosen.reshape(n, cons.n_groups)
        keys = u.reshape(n, cons.n_groups, -1)
        hot = cons.hot(x)
        is_hot = torch.arange(cons.members.shape[1], device=x.device)[None, None] == hot[..., None]
        keys = keys.masked_fill(~cons.member_target[None] | is_hot, -1.0)
        target = keys.argmax(dim=2)
        switch = chosen & (keys.max(dim=2).values >= 0)
        cols = cons.members[None].expand(n, -1, -1)
        on = cols.gather(2, target[..., None]).squeeze(2)
        off = cols.gather(2, hot[..., None]).squeeze(2)
        r, g = torch.nonzero(switch, as_tuple=True)
        x = x.clone()
        x[r, off[r, g]] = 0.0
        x[r, on[r, g]] = 1.0
        return x
