"""Counterfactuals: small, constrained, re-scored input changes that move a score past a threshold.

Wachter, Mittelstadt & Russell 2017 (MAD-scaled L1 distance); the gradient path takes linearised
L1-minimal steps (as SparseFool, Modas et al. 2019, does for adversarial examples); the
model-agnostic path samples sparse growing spheres (Laugel et al. 2018); diversity and post-hoc
sparsity follow DiCE (Mothilal et al. 2020).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from transforms.explainers.device import as_rows, check_eval_mode, forward_scalar, resolve_device

DESIRED_OUTCOMES = ("flip", "above", "below")
METHODS = ("gradient", "search")
FOUND = "found"
NOT_FOUND = "not_found"
ALREADY_MET = "already_met"
STATUSES = (FOUND, NOT_FOUND, ALREADY_MET)

# Binary-search halvings when shrinking a valid counterfactual back towards its query: 2**-12 of
# the change is far below any feature's meaningful resolution.
_SHRINK_STEPS = 12
# Logit slack below which a candidate counts as sitting on the boundary (nothing left to shrink).
_SLACK = 1e-3
# Stands in for an unbounded feature's room (in MAD units) so cumulative sums stay finite.
_MAX_ROOM = 1e6
# Search path: first sphere radius (MAD-scaled L1) and its growth per round.
_FIRST_RADIUS = 0.25
_RADIUS_GROWTH = 1.5
# Gradient path: each diverse slot but the first drops this share of the features at random,
# so the k counterfactuals of one query are pushed onto different feature sets.
_SLOT_DROPOUT = 0.5
# Linear steps aim this far past the target: ReLU kinks make the linear model optimistic.
_OVERSHOOT = 0.05
# Rows x reference rows x features per plausibility chunk (bounds cdist's working memory).
_CDIST_CHUNK = 1 << 24


def _frozen(value: object, dtype: type, name: str, d: int) -> np.ndarray:
    arr: np.ndarray = np.array(value, dtype=dtype, copy=True)
    if arr.shape != (d,):
        raise ValueError(f"{name} must have shape ({d},), got {arr.shape}")
    arr.flags.writeable = False
    return arr


@dataclass(frozen=True, eq=False)
class CounterfactualSpec:
    """What a counterfactual may change, within which limits, and how its distance is measured.

    Arrays are per feature, in the model's column order. ``lower`` / ``upper`` may be infinite
    (unbounded); a query's own value is always allowed even when it lies outside them.
    ``scale`` divides each feature's change in the L1 distance (the median absolute deviation,
    Wachter et al. 2017). Columns in a ``categorical_groups`` entry are one one-hot feature: a
    counterfactual switches the hot column; a column whose ``upper`` is below 1 is never switched
    on. ``monotone`` +1 lets a feature only increase, -1 only decrease, 0 either way.
    """

    feature_names: tuple[str, ...]
    lower: np.ndarray
    upper: np.ndarray
    immutable: np.ndarray
    integer: np.ndarray
    scale: np.ndarray
    categorical_groups: tuple[tuple[int, ...], ...] = ()
    monotone: np.ndarray | None = None

    def __post_init__(self) -> None:
        names = tuple(self.feature_names)
        if not names or not all(isinstance(n, str) and n for n in names):
            raise ValueError("feature_names must be a non-empty tuple of non-empty strings")
        if len(set(names)) != len(names):
            dupes = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"feature_names has duplicates: {dupes}")
        d = len(names)
        lower = _frozen(self.lower, np.float64, "lower", d)
        upper = _frozen(self.upper, np.float64, "upper", d)
        if np.isnan(lower).any() or np.isnan(upper).any():
            raise ValueError("lower and upper must not be NaN (use -inf / inf for unbounded)")
        bad = np.flatnonzero(lower > upper)
        if bad.size:
            j = int(bad[0])
            raise ValueError(f"feature {names[j]!r}: lower {lower[j]} > upper {upper[j]}")
        immutable = _frozen(self.immutable, np.bool_, "immutable", d)
        integer = _frozen(self.integer, np.bool_, "integer", d)
        scale = _frozen(self.scale, np.float64, "scale", d)
        bad = np.flatnonzero(~np.isfinite(scale) | (scale <= 0))
        if bad.size:
            j = int(bad[0])
            raise ValueError(
                f"feature {names[j]!r}: scale must be finite and positive, got {scale[j]} "
                "(spec_from_training falls back to the std, then 1, where the MAD is 0)"
            )
        monotone = _frozen(
            np.zeros(d, np.int8) if self.monotone is None else self.monotone, np.int8, "monotone", d
        )
        if not np.isin(monotone, (-1, 0, 1)).all():
            raise ValueError(f"monotone values must be -1, 0 or 1, got {sorted(set(monotone))}")
        groups = tuple(tuple(int(j) for j in g) for g in self.categorical_groups)
        seen: set[int] = set()
        for g in groups:
            if len(g) < 2:
                raise ValueError(f"categorical group {g} needs at least two one-hot columns")
            if any(j < 0 or j >= d for j in g):
                raise ValueError(f"categorical group {g} has a column outside 0..{d - 1}")
            if seen.intersection(g) or len(set(g)) != len(g):
                raise ValueError(f"categorical group {g} shares a column with another group")
            seen.update(g)
            if len({bool(immutable[j]) for j in g}) > 1:
                raise ValueError(
                    f"categorical group {[names[j] for j in g]} is partly immutable: mark all of "
                    "its columns or none"
                )
            if monotone[list(g)].any():
                raise ValueError(f"categorical group {[names[j] for j in g]} cannot be monotone")
        for name, value in (
            ("feature_names", names),
            ("lower", lower),
            ("upper", upper),
            ("immutable", immutable),
            ("integer", integer),
            ("scale", scale),
            ("categorical_groups", groups),
            ("monotone", monotone),
        ):
            object.__setattr__(self, name, value)

    @property
    def n_features(self) -> int:
        """Number of model input columns."""
        return len(self.feature_names)


@dataclass(frozen=True)
class CounterfactualConfig:
    """How counterfactuals are searched for; every field goes into the explainer's config hash.

    ``desired``: "flip" crosses ``threshold`` from whichever side the query is on, "above" /
    "below" ask for a score strictly above / below it. ``margin`` (score units) is how far past
    the threshold a candidate must land while searching, so re-scoring it in another batch (other
    float rounding) cannot turn it invalid. ``max_steps`` bounds gradient steps or search rounds.
    ``oversample`` candidates are generated per requested counterfactual and the most proximal
    mutually distinct ones kept; two that change the same features must differ by at least
    ``diversity`` (MAD-scaled L1). ``method`` "gradient" needs a differentiable model; "search"
    only calls it. ``search_fallback`` hands queries the gradient path leaves without a valid
    counterfactual to the search. ``search_samples`` is per query per round of the search.
    """

    threshold: float = 0.5
    desired: str = "flip"
    n_counterfactuals: int = 3
    method: str = "gradient"
    max_steps: int = 100
    seed: int = 0
    margin: float = 1e-3
    oversample: int = 3
    search_samples: int = 64
    diversity: float = 0.1
    search_fallback: bool = True

    def __post_init__(self) -> None:
        if self.desired not in DESIRED_OUTCOMES:
            raise ValueError(f"desired {self.desired!r} is not one of {DESIRED_OUTCOMES}")
        if self.method not in METHODS:
            raise ValueError(f"method {self.method!r} is not one of {METHODS}")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must lie in (0, 1), got {self.threshold}")
        if not self.margin > 0.0:
            raise ValueError(f"margin must be positive, got {self.margin}")
        if not 0.0 < self.threshold - self.margin < self.threshold + self.margin < 1.0:
            raise ValueError(
                f"threshold {self.threshold} +/- margin {self.margin} must stay inside (0, 1)"
            )
        for name in ("n_counterfactuals", "max_steps", "oversample", "search_samples"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if not self.diversity >= 0.0:
            raise ValueError(f"diversity must be non-negative, got {self.diversity}")


@dataclass(frozen=True, eq=False)
class Counterfactual:
    """One counterfactual, re-scored by the model, with its quality measured.

    ``proximity`` is the MAD-scaled L1 distance to the query; ``sparsity`` counts changed features
    (a one-hot group counts once); ``plausibility`` is the MAD-scaled L1 distance to the nearest
    reference row of the target class (NaN when the reference has none); ``changes`` lists
    ``(feature, from, to)`` for every changed column, largest scaled change first.
    """

    values: np.ndarray
    score: float
    valid: bool
    proximity: float
    sparsity: int
    plausibility: float
    changes: tuple[tuple[str, float, float], ...]

    def __post_init__(self) -> None:
        values = np.array(self.values, dtype=np.float64, copy=True)
        if values.ndim != 1:
            raise ValueError(f"values must be one row (d,), got shape {values.shape}")
        values.flags.writeable = False
        object.__setattr__(self, "values", values)
        if not (math.isfinite(self.proximity) and self.proximity >= 0):
            raise ValueError(f"proximity must be finite and non-negative, got {self.proximity}")
        if self.sparsity < 0:
            raise ValueError(f"sparsity must be non-negative, got {self.sparsity}")


@dataclass(frozen=True)
class CounterfactualResult:
    """The counterfactuals found for one query, or why there are none.

    ``status``: "found" (at least one valid counterfactual), "not_found" (none within the budget
    and constraints; never an invalid one in its place) or "already_met" (the query's score
    already satisfies ``desired`` = "above" / "below").
    """

    status: str
    counterfactuals: tuple[Counterfactual, ...]
    query_score: float
    message: str

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status {self.status!r} is not one of {STATUSES}")
        if (self.status == FOUND) != bool(self.counterfactuals):
            raise ValueError(f"status {self.status!r} with {len(self.counterfactuals)} results")
        if not all(cf.valid for cf in self.counterfactuals):
            raise ValueError("an invalid counterfactual must never be reported")


def spec_from_training(
    feature_names: Sequence[str],
    training_rows: np.ndarray,
    *,
    immutable: Iterable[str] = (),
    integer: Iterable[str] = (),
    categorical_groups: Iterable[Iterable[str]] = (),
    monotone: Mapping[str, int] | None = None,
) -> CounterfactualSpec:
    """A spec whose bounds are the training range and whose scale is each feature's MAD.

    Where a feature's MAD is 0 (one-hot and other mostly-constant columns) its standard deviation
    is used instead, and 1 where that is 0 too. Tighter or wider bounds from a model card can be
    set afterwards with ``dataclasses.replace``.

    Raises:
        ValueError: an unknown feature name, or training rows of the wrong shape.
    """
    names = tuple(feature_names)
    rows = as_rows(training_rows, "training_rows", len(names))
    index = {n: j for j, n in enumerate(names)}

    def columns(selected: Iterable[str], what: str) -> list[int]:
        unknown = [n for n in selected if n not in index]
        if unknown:
            raise ValueError(f"{what} names unknown features {unknown}; known: {list(names)}")
        return [index[n] for n in selected]

    d = len(names)
    immutable_mask = np.zeros(d, np.bool_)
    immutable_mask[columns(list(immutable), "immutable")] = True
    integer_mask = np.zeros(d, np.bool_)
    integer_mask[columns(list(integer), "integer")] = True
    monotone_arr = np.zeros(d, np.int8)
    if monotone:
        monotone_arr[columns(list(monotone), "monotone")] = [monotone[n] for n in monotone]
    groups = tuple(tuple(columns(list(g), "categorical_groups")) for g in categorical_groups)
    median = np.median(rows, axis=0)
    scale = np.median(np.abs(rows - median), axis=0)
    std = rows.std(axis=0)
    scale = np.where(scale > 0, scale, np.where(std > 0, std, 1.0))
    return CounterfactualSpec(
        feature_names=names,
        lower=rows.min(axis=0),
        upper=rows.max(axis=0),
        immutable=immutable_mask,
        integer=integer_mask,
        scale=scale,
        categorical_groups=groups,
        monotone=monotone_arr,
    )


class _Constraints:
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


def _query_generators(x0: np.ndarray, seed: int, method: str) -> list[torch.Generator]:
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


def _logit(p: torch.Tensor) -> torch.Tensor:
    p = p.clamp(1e-7, 1.0 - 1e-7)
    return torch.log(p) - torch.log1p(-p)


class _Search:
    """Shared state of one batch: queries, their targets, the model and the constraints."""

    def __init__(
        self,
        model: object,
        x0: torch.Tensor,
        sign: torch.Tensor,
        cons: _Constraints,
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
    ) -> _Search:
        """The same search over some of its queries (repeats allowed), optionally banning items."""
        sub_ban = self.ban[rows] if ban is None else self.ban[rows] | ban
        return _Search(
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

    # -- gradient path -------------------------------------------------------------------------

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
        tau = sign * _logit(cfg.threshold + sign * cfg.margin)
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
            u = sign * _logit(p)
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

    # -- model-agnostic path -------------------------------------------------------------------

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

    # -- post-processing shared by both paths --------------------------------------------------

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
        u = sign * _logit(self.scores(xc))
        cost = ((xc - x0).abs() / cons.scale).masked_fill(~changed, math.inf)
        # One batched pass: every row with each changed column undone alone.
        r, j = torch.nonzero(changed, as_tuple=True)
        undone = xc[r].clone()
        undone[torch.arange(r.numel(), device=xc.device), j] = x0[r, j]
        drop = torch.zeros_like(xc)
        drop[r, j] = u[r] - sign[r] * _logit(self.scores(undone))
        efficiency = torch.where(changed, drop / cost, math.inf)
        order = torch.argsort(efficiency, dim=1, stable=True)
        # Logit to spare above threshold + margin; once ~0 no change can shrink any further.
        tau = sign * _logit(self.config.threshold + sign * self.config.margin)
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
                kept = torch.where(ok, sign[sub] * _logit(p) - tau[sub], kept)
            final = xc[sub].clone()
            final[at, col] = base + high * (start - base)
            xc[sub] = cons.project(final, x0[sub], lo[sub], hi[sub])
            slack[sub] = kept
        return xc


def _candidates(
    search: _Search, gens: list[torch.Generator]
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


def _diversify(
    search: _Search,
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
        _query_generators(queries[o : o + 1], config.seed, f"{config.method}:ban{t}")[0]
        for o, t in zip(owners, tags, strict=True)
    ]
    sub_x, sub_found, _ = _candidates(sub, gens)
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
    redone = _select_diverse(
        x_new[again], found_new[again], search.x0[again], cons, k, config.diversity
    )
    for qi, p in zip(lacking, redone, strict=True):
        picks[qi] = p
    return x_new, found_new, picks


def _select_diverse(
    x: torch.Tensor,
    found: torch.Tensor,
    x0: torch.Tensor,
    cons: _Constraints,
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


def evaluate_counterfactuals(
    model: object,
    queries: np.ndarray,
    candidates: np.ndarray,
    spec: CounterfactualSpec,
    config: CounterfactualConfig,
    *,
    reference_rows: np.ndarray,
    reference_scores: np.ndarray,
    device: torch.device | str | None = None,
) -> list[Counterfactual]:
    """Re-score candidate counterfactuals (row i for query i) and measure them the same way.

    Any counterfactual generator's output can be measured with it, so comparisons share one
    definition of validity (strictly past the threshold, on the side ``config.desired`` asks),
    proximity, sparsity and plausibility.
    """
    dev = resolve_device(model, None if device is None else torch.device(device))
    check_eval_mode(model)
    d = spec.n_features
    q = as_rows(queries, "queries", d)
    c = as_rows(candidates, "candidates", d)
    if q.shape != c.shape:
        raise ValueError(f"queries {q.shape} and candidates {c.shape} must pair row by row")
    cons = _Constraints(spec, dev)
    x0 = torch.as_tensor(q, dtype=torch.float32, device=dev)
    x = torch.as_tensor(c, dtype=torch.float32, device=dev)
    with torch.no_grad():
        p0 = forward_scalar(model, x0).float()
    sign = _target_sign(p0, config)
    return _measure(model, x, x0, sign, cons, spec, config, reference_rows, reference_scores, q, c)


def _target_sign(p0: torch.Tensor, config: CounterfactualConfig) -> torch.Tensor:
    """+1 where the score must end above the threshold, -1 where below."""
    if config.desired == "above":
        return torch.ones_like(p0)
    if config.desired == "below":
        return -torch.ones_like(p0)
    return torch.where(p0 >= config.threshold, -1.0, 1.0)


def _measure(
    model: object,
    x: torch.Tensor,
    x0: torch.Tensor,
    sign: torch.Tensor,
    cons: _Constraints,
    spec: CounterfactualSpec,
    config: CounterfactualConfig,
    reference_rows: np.ndarray,
    reference_scores: np.ndarray,
    query_exact: np.ndarray,
    candidate_exact: np.ndarray,
) -> list[Counterfactual]:
    """Score, validity, proximity, sparsity, plausibility and changes for rows of x against x0.

    The model sees float32 (x, x0); what a column "changed" means is decided there. Reported
    values are ``candidate_exact`` where a column changed and ``query_exact`` (the caller's own
    float64 input) where it did not, so an unchanged feature reads back exactly as given.
    """
    ref = as_rows(reference_rows, "reference_rows", spec.n_features)
    ref_scores = np.asarray(reference_scores, dtype=np.float64).reshape(-1)
    if ref_scores.shape != (ref.shape[0],):
        raise ValueError(
            f"reference_scores has {ref_scores.size} values for {ref.shape[0]} reference rows"
        )
    if x.shape[0] == 0:
        return []
    with torch.no_grad():
        p = forward_scalar(model, x).float()
    valid = sign * (p - config.threshold) > 0
    proximity = cons.distance(x, x0)
    changed = cons.changed_items(x, x0)
    sparsity = changed.sum(1)
    plausibility = torch.full((x.shape[0],), math.nan, device=x.device)
    ref_t = torch.as_tensor(ref, dtype=torch.float32, device=x.device) / cons.scale
    ref_side = torch.as_tensor(ref_scores, device=x.device) - config.threshold
    for side in (1.0, -1.0):
        rows = torch.nonzero(sign == side).squeeze(1)
        pool = ref_t[ref_side * side > 0]
        if rows.numel() == 0 or pool.shape[0] == 0:
            continue
        step = max(1, _CDIST_CHUNK // max(1, pool.shape[0] * spec.n_features))
        for start in range(0, rows.numel(), step):
            part = rows[start : start + step]
            dist = torch.cdist(x[part] / cons.scale, pool, p=1.0)
            plausibility[part] = dist.min(dim=1).values
    names = spec.feature_names
    moved_t = x != x0
    # Changed columns first, largest scaled change first; one sort for all rows.
    key = ((x - x0).abs() / cons.scale).masked_fill(~moved_t, -1.0)
    order = torch.argsort(key, dim=1, descending=True, stable=True).cpu().numpy()
    moved = moved_t.cpu().numpy()
    n_moved = moved.sum(1).tolist()
    x0s = np.asarray(query_exact, dtype=np.float64)
    xs = np.where(moved, np.asarray(candidate_exact, dtype=np.float64), x0s)
    x0l, xl = x0s.tolist(), xs.tolist()
    out = []
    for i, (score, ok, prox, sp, plaus) in enumerate(
        zip(
            p.tolist(),
            valid.tolist(),
            proximity.tolist(),
            sparsity.tolist(),
            plausibility.tolist(),
            strict=True,
        )
    ):
        cols = order[i, : n_moved[i]].tolist()
        changes = tuple((names[j], x0l[i][j], xl[i][j]) for j in cols)
        out.append(
            Counterfactual(
                values=xs[i],
                score=score,
                valid=ok,
                proximity=prox,
                sparsity=int(sp),
                plausibility=plaus,
                changes=changes,
            )
        )
    return out


def generate_counterfactuals(
    model: object,
    inputs: np.ndarray,
    spec: CounterfactualSpec,
    config: CounterfactualConfig,
    *,
    reference_rows: np.ndarray,
    reference_scores: np.ndarray,
    device: torch.device | str | None = None,
) -> list[CounterfactualResult]:
    """Diverse, constrained counterfactuals for each input row, every one re-scored and measured.

    Args:
        model: torch callable mapping float32 (n, d) raw inputs to (n,) or (n, 1) scores; in eval
            mode; differentiable unless ``config.method == "search"``.
        inputs: (n, d) queries in the model's raw units.
        spec: constraints and distance scale (see :func:`spec_from_training`).
        config: target, budget, seed and method.
        reference_rows: training rows, for plausibility (distance to the nearest target-class row).
        reference_scores: their scores (or 0/1 labels), thresholded at ``config.threshold``.
        device: where to run; by default the model's device, else CUDA when present.

    Returns:
        One result per input row, in order.

    Raises:
        ValueError: inputs of the wrong shape, non-finite, or with a one-hot group not one-hot.
    """
    dev = resolve_device(model, None if device is None else torch.device(device))
    check_eval_mode(model)
    d = spec.n_features
    rows = as_rows(inputs, "inputs", d)
    for g in spec.categorical_groups:
        block = rows[:, list(g)]
        bad = np.flatnonzero(~(np.isin(block, (0.0, 1.0)).all(1) & (block.sum(1) == 1)))
        if bad.size:
            raise ValueError(
                f"inputs row {int(bad[0])}: categorical group {[spec.feature_names[j] for j in g]} "
                f"is not one-hot ({block[bad[0]].tolist()})"
            )
    rows32 = rows.astype(np.float32)
    cons = _Constraints(spec, dev)
    x0_all = torch.as_tensor(rows32, device=dev)
    with torch.no_grad():
        p0_all = forward_scalar(model, x0_all).float()
    sign_all = _target_sign(p0_all, config)
    met = (sign_all * (p0_all - config.threshold) > 0).tolist()
    query_scores = p0_all.tolist()
    todo = [i for i in range(rows.shape[0]) if not met[i]]
    results: list[CounterfactualResult | None] = [None] * rows.shape[0]
    for i in range(rows.shape[0]):
        if met[i]:
            results[i] = CounterfactualResult(
                status=ALREADY_MET,
                counterfactuals=(),
                query_score=query_scores[i],
                message=f"the score already lies {config.desired} {config.threshold}",
            )
    if todo:
        idx = torch.as_tensor(todo, device=dev)
        search = _Search(model, x0_all[idx], sign_all[idx], cons, config)
        gens = _query_generators(rows32[todo], config.seed, config.method)
        x, found, rescued = _candidates(search, gens)
        picks = _select_diverse(
            x, found, search.x0, cons, config.n_counterfactuals, config.diversity
        )
        x, found, picks = _diversify(search, rows32[todo], x, found, picks)
        flat_q = [qi for qi, p in enumerate(picks) for _ in p]
        flat_c = [c for p in picks for c in p]
        chosen = x[flat_q, flat_c] if flat_q else x.new_zeros((0, d))
        owner = torch.as_tensor(flat_q, dtype=torch.long, device=dev)
        owner_rows = np.asarray(todo, dtype=np.int64)[np.asarray(flat_q, dtype=np.int64)]
        measured = _measure(
            model,
            chosen,
            search.x0[owner],
            search.sign[owner],
            cons,
            spec,
            config,
            reference_rows,
            reference_scores,
            rows[owner_rows],
            chosen.cpu().double().numpy(),
        )
        movable = search.movable().tolist()
        was_rescued = rescued.tolist()
        if config.method == "search":
            budget = f"{config.max_steps} search rounds"
        elif config.search_fallback:
            budget = f"{config.max_steps} gradient steps and {config.max_steps} search rounds"
        else:
            budget = f"{config.max_steps} gradient steps (search fallback off)"
        at = 0
        for qi, i in enumerate(todo):
            mine = measured[at : at + len(picks[qi])]
            at += len(picks[qi])
            # Defence in depth: the margin makes this impossible, but an invalid one never leaves.
            kept = tuple(cf for cf in mine if cf.valid)
            if kept:
                message = f"{len(kept)} of {config.n_counterfactuals} requested"
                if len(kept) < config.n_counterfactuals:
                    message += " (no further distinct valid counterfactual found)"
                if was_rescued[qi]:
                    message += "; found by the gradient-free search after gradient steps stalled"
                results[i] = CounterfactualResult(FOUND, kept, query_scores[i], message)
            else:
                why = (
                    f"no valid counterfactual within {budget}"
                    if movable[qi]
                    else "every feature is immutable or pinned at a bound: nothing can change"
                )
                results[i] = CounterfactualResult(NOT_FOUND, (), query_scores[i], why)
    return [r for r in results if r is not None]
