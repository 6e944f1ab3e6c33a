"""The explainer settings: everything that changes the numbers of an explanation."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from whylake.schemas.errors import ConfigError


@dataclass(frozen=True)
class ExplainConfig:
    """Every setting that changes the numbers of an explanation (hashed into its id)."""

    ig_steps: int = 50
    ig_rule: str = "gauss_legendre"
    stability_baselines: int = 4
    stability_top_k: int = 5
    shap: bool = True
    shap_background: int = 100
    counterfactuals: bool = True
    counterfactuals_per_query: int = 3
    seed: int = 0
    max_relative_completeness_error: float = 0.05

    def __post_init__(self) -> None:
        if self.ig_steps < 2:
            raise ConfigError(f"ig_steps must be at least 2, got {self.ig_steps}")
        if self.stability_baselines < 1:
            raise ConfigError("stability_baselines must be at least 1")
        if not 0 < self.max_relative_completeness_error < 1:
            raise ConfigError("max_relative_completeness_error must be in (0, 1)")

    def canonical(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    def digest(self) -> str:
        return hashlib.sha256(self.canonical().encode()).hexdigest()
