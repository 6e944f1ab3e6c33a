"""The explainer settings: everything that changes the numbers of an explanation."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from whylake.schemas.errors import ConfigError


@dataclass(frozen=True)
class ExplainConfig:
    """Every setting that changes the numbers of an explanation (hashed into its id)."""

    ig_steps: int = 50  # the first step count; doubled per row until converged
    ig_rule: str = "gauss_legendre"
    # Every recorded IG attribution is within this fraction of its row's largest attribution
    # (estimated as |IG_2n - IG_n|, the `ig_convergence` column), up to ig_max_steps.
    ig_tolerance: float = 0.005
    ig_max_steps: int = 3200
    stability_baselines: int = 4
    stability_top_k: int = 5
    shap: bool = True
    shap_background: int = 100
    counterfactuals: bool = True
    counterfactuals_per_query: int = 3
    seed: int = 0
    max_relative_completeness_error: float = 0.05
    # Model kinds other than torch (hashed only into their own rows' config hash, so the ids
    # of torch rows written before model kinds existed stay the same).
    agnostic_background: int = 32
    agnostic_permutations: int = 16
    text_max_length: int = 256

    def __post_init__(self) -> None:
        if self.ig_steps < 2:
            raise ConfigError(f"ig_steps must be at least 2, got {self.ig_steps}")
        if not 0 < self.ig_tolerance < 1:
            raise ConfigError(f"ig_tolerance must be in (0, 1), got {self.ig_tolerance}")
        if self.ig_max_steps < 2 * self.ig_steps:
            raise ConfigError(
                f"ig_max_steps ({self.ig_max_steps}) must be at least twice ig_steps "
                f"({self.ig_steps})"
            )
        if self.stability_baselines < 1:
            raise ConfigError("stability_baselines must be at least 1")
        if not 0 < self.max_relative_completeness_error < 1:
            raise ConfigError("max_relative_completeness_error must be in (0, 1)")
        if self.agnostic_background < 1 or self.agnostic_permutations < 2:
            raise ConfigError("agnostic_background >= 1 and agnostic_permutations >= 2 needed")
        if self.text_max_length < 8:
            raise ConfigError("text_max_length must be at least 8 tokens")

    def canonical(self) -> str:
        fields = {k: v for k, v in asdict(self).items() if k not in _KIND_FIELDS}
        return json.dumps(fields, sort_keys=True, separators=(",", ":"))

    def digest(self) -> str:
        return hashlib.sha256(self.canonical().encode()).hexdigest()

    def digest_for(self, model_kind: str) -> str:
        """The config hash of a model kind's rows: torch rows keep :meth:`digest`."""
        if model_kind == "torch":
            return self.digest()
        extra = {k: getattr(self, k) for k in sorted(_KIND_FIELDS)}
        text = self.canonical() + json.dumps({"kind": model_kind, **extra}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()


_KIND_FIELDS = frozenset({"agnostic_background", "agnostic_permutations", "text_max_length"})
