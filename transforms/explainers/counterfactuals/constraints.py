"""The spec as device tensors: boxes, one-hot groups, distances and changed items."""

from __future__ import annotations

import math

import numpy as np
import torch

from whylake.transforms.explainers.counterfactuals.spec import CounterfactualSpec


class Constraints:
    """The spec as device tensors, plus the item view: each free column and each one-hot group."""

    def __init__(self, spec: CounterfactualSpec, device: torch.device) -> None:
        d = spec.n_features
        self.d = d
        self.n_groups = len(spec.categorical_groups)
        self.n_items = d + self.n_groups
        in_group = np.zeros(d, np.bool_)
        for g in spec.categorical_groups:
            in_group[list(g)] = True

        def t(a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
            return torch.tensor(np.asarray(a), dtype=dtype, device=device)

        self.lower = t(spec.lower, torch.float32)
        self.upper = t(spec.upper, torch.float32)
        self.scale = t(spec.scale, torch.float32)
        # Never None after the spec's __post_init__; the check keeps the type checker informed.
        monotone = np.zeros(d) if spec.monotone is None else spec.monotone
        self.monotone = t(monotone, torch.float32)
        self.in_group = t(in_group, torch.bool)
        self.free = t(~in_group & ~spec.immutable, torch.bool)
        self.integer = t(spec.integer & ~in_group, torch.bool)
        width = max((len(g) for g in spec.categorical_groups), default=1)
        members = np.zeros((self.n_groups, width), np.int64)
        member_ok = np.zeros((self.n_groups, width), np.bool_)
        for gi, g in enumerate(spec.categorical_groups):
            members[gi, : len(g)] = g
            member_ok[gi, : len(g)] = True
        self.members = t(members, torch.long)
        self.member_ok = t(member_ok, torch.bool)
        # A column may be switched on only where its bounds allow the value 1.
        self.member_target = self.member_ok & (self.upper[self.members] >= 1.0)
        self.group_free = t(
            np.array([not spec.immutable[g[0]] for g in spec.categorical_groups], np.bool_),
            torch.bool,
        )
        # Rows of this table are the columns an item owns; reverting an item restores them.
        table = np.zeros((self.n_items, d), np.bool_)
        table[np.arange(d), np.arange(d)] = True
        for gi, g in enumerate(spec.categorical_groups):
            table[d + gi, list(g)] = True
        self.item_columns = t(table, torch.bool)

    def box(self, x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-row limits of the free columns; fixed columns are pinned to the query."""
        lo = torch.minimum(self.lower, x0)
        hi = torch.maximum(self.upper, x0)
        lo = torch.where(self.monotone > 0, x0, lo)
        hi = torch.where(self.monotone < 0, x0, hi)
        lo = torch.where(self.free, lo, x0)
        hi = torch.where(self.free, hi, x0)
        return lo, hi

    def hot(self, x: torch.Tensor) -> torch.Tensor:
        """The hot position inside each group, (n, G)."""
        vals = x[:, self.members].masked_fill(~self.member_ok, -math.inf)
        return vals.argmax(dim=-1)

    def project(
        self, x: torch.Tensor, x0: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor
    ) -> torch.Tensor:
        """Clamp free columns into their box, round integer ones away from the query.

        One-hot columns are left as given (only group switches move them); every other fixed
        column is pinned to the query.
        """
        x = torch.where(self.free, torch.clamp(x, lo, hi), torch.where(self.in_group, x, x0))
        if bool(self.integer.any()):
            # Rounding away from the query keeps at least the planned change; where that leaves
            # the box, round towards it instead, and keep the query's value if neither fits.
            away = torch.where(x > x0, torch.ceil(x), torch.floor(x))
            toward = torch.where(x > x0, torch.floor(x), torch.ceil(x))
            fits_away = (away >= lo) & (away <= hi)
            fits_toward = (toward >= lo) & (toward <= hi)
            rounded = torch.where(fits_away, away, torch.where(fits_toward, toward, x0))
            rounded = torch.where(x == x0, x0, rounded)
            x = torch.where(self.integer, rounded, x)
        return x

    def distance(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """MAD-scaled L1 distance per row; a one-hot switch costs both columns' changes."""
        return ((x - x0).abs() / self.scale).sum(dim=-1)

    def changed_items(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """(n, items) bool: which free columns and which groups differ from the query."""
        diff = x != x0
        cols = diff & ~self.in_group
        if self.n_groups == 0:
            return cols
        groups = diff[:, self.members].logical_and(self.member_ok).any(dim=-1)
        return torch.cat([cols, groups], dim=1)
