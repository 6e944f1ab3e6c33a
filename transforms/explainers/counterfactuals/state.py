"""The shared state of one batch's search: queries, targets, the model and the constraints."""

from __future__ import annotations

import hashlib
from typing import Self

import numpy as np
import torch

from whylake.transforms.explainers.counterfactuals.constraints import Constraints
from whylake.transforms.explainers.counterfactuals.spec import CounterfactualConfig
from whylake.transforms.explainers.model_calls import forward_scalar


def query_generators(x0: np.ndarray, seed: int, method: str) -> list[torch.Generator]:
    """One generator per query, keyed by (seed, method, the query's bytes).

    A query's random stream thus does not depend on which other rows share its batch, so a
    replay in another batch finds the same counterfactuals (up to float rounding).
    """
    gens = []
    prefix = f"whylake-cf:{seed}:{method}:".encode()
    for row in np.ascontiguousarray(x0, dtype=np.float32):
        digest = hashlib.sha256(prefix + row.tobytes()).digest()
        gen = torch.Generator(device="cpu")
        gen.manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
        gens.append(gen)
    return gens


def logit(p: torch.Tensor) -> torch.Tensor:
    p = p.clamp(1e-7, 1.0 - 1e-7)
    return torch.log(p) - torch.log1p(-p)


class SearchState:
    """Shared state of one batch: queries, their targets, the model and the constraints."""

    def __init__(
        self,
        model: object,
        x0: torch.Tensor,
        sign: torch.Tensor,
        cons: Constraints,
        config: CounterfactualConfig,
        ban: torch.Tensor | None = None,
        slots: int | None = None,
    ) -> None:
        self.model = model
        self.x0 = x0
        self.sign = sign
        self.cons = cons
        self.config = config
        self.lo, self.hi = cons.box(x0)
        # Items a query may not change in this run (the diversity round bans used routes).
        self.ban = (
            ban
            if ban is not None
            else torch.zeros(x0.shape[0], cons.n_items, dtype=torch.bool, device=x0.device)
        )
        self.slots = slots if slots is not None else config.n_counterfactuals * config.oversample

    def subset(
        self, rows: torch.Tensor, ban: torch.Tensor | None = None, slots: int | None = None
    ) -> Self:
        """The same search over some of its queries (repeats allowed), optionally banning items."""
        sub_ban = self.ban[rows] if ban is None else self.ban[rows] | ban
        return type(self)(
            self.model,
            self.x0[rows],
            self.sign[rows],
            self.cons,
            self.config,
            sub_ban,
            self.slots if slots is None else slots,
        )

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return forward_scalar(self.model, x).float()

    def accepts(self, p: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
        return sign * (p - self.config.threshold) >= self.config.margin

    def movable(self) -> torch.Tensor:
        """(q,) whether a query has any free column with room or any switchable group."""
        room = (self.hi > self.lo).any(dim=1)
        if self.cons.n_groups:
            room = room | (self.cons.group_free & self.cons.member_target.sum(1).ge(2)).any()
        return room
