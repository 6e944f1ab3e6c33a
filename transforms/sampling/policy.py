"""Per-tenant sampling policies (always-explain rules, sampler, weight, budget) from YAML."""

from __future__ import annotations

import datetime
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import yaml

from whylake.schemas.errors import ConfigError

SAMPLERS: tuple[str, ...] = ("priority", "reservoir")
WEIGHTS: tuple[str, ...] = ("uniform", "uncertainty", "risk")

LOW_CONFIDENCE_REASON = "always:low_confidence"
HIGH_RISK_REASON = "always:high_risk"
NOT_ALWAYS = ""

_TOP_LEVEL_KEYS = ("version", "seed", "defaults", "tenants")
_TENANT_KEYS = (
    "sampler",
    "weight",
    "budget_per_day",
    "weight_floor",
    "always_explain",
    "counterfactuals_for",
)
_ALWAYS_KEYS = ("flags", "confidence_below", "risk_above")


def flag_reason(flag: str) -> str:
    """The sampling reason of a record explained because it carries `flag`."""
    return f"always:{flag}"


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _names(value: object, what: str) -> tuple[str, ...]:
    """A tuple of non-empty strings from a list or tuple, or a ValueError naming `what`."""
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise ConfigError(f"{what} must be a list of names, got {value!r}")
    for name in value:
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{what} must hold non-empty strings, got {name!r} in {value!r}")
    return tuple(value)


@dataclass(frozen=True)
class AlwaysExplainRules:
    """Records explained whatever the budget: named flags, low confidence, high risk."""

    flags: tuple[str, ...] = ()
    confidence_below: float | None = None
    risk_above: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "flags", _names(self.flags, "always_explain.flags"))
        if self.confidence_below is not None:
            value = self.confidence_below
            if not _is_number(value) or not 0.0 <= value <= 1.0:
                raise ConfigError(
                    f"always_explain.confidence_below must be a number in [0, 1] or null, "
                    f"got {value!r}"
                )
            object.__setattr__(self, "confidence_below", float(value))
        if self.risk_above is not None:
            value = self.risk_above
            if not _is_number(value) or not math.isfinite(value):
                raise ConfigError(
                    f"always_explain.risk_above must be a finite number or null, got {value!r}"
                )
            object.__setattr__(self, "risk_above", float(value))

    def reasons(
        self,
        has_flag: Callable[[str], npt.NDArray[np.bool_]],
        confidence: npt.NDArray[np.float64],
        risk: npt.NDArray[np.float64],
    ) -> npt.NDArray[np.object_]:
        """Per record, the reason of the first rule that fires, or "" when none does."""
        reasons = np.full(len(confidence), NOT_ALWAYS, dtype=object)
        # The rule order is the policy's order, so a record's reason does not depend on the
        # order its producer listed the flags in.
        open_ = np.ones(len(confidence), dtype=bool)
        for flag in self.flags:
            hit = has_flag(flag) & open_
            reasons[hit] = flag_reason(flag)
            open_ &= ~hit
        # NaN (a missing value) compares False: a record without a confidence is not "low".
        with np.errstate(invalid="ignore"):
            if self.confidence_below is not None:
                hit = (confidence < self.confidence_below) & open_
                reasons[hit] = LOW_CONFIDENCE_REASON
                open_ &= ~hit
            if self.risk_above is not None:
                hit = (risk > self.risk_above) & open_
                reasons[hit] = HIGH_RISK_REASON
        return reasons


@dataclass(frozen=True)
class TenantPolicy:
    """How one tenant's records are sampled; `version` and `seed` are shared by every tenant."""

    version: str
    seed: int
    sampler: str = "priority"
    weight: str = "uncertainty"
    budget_per_day: int = 200
    weight_floor: float = 1e-3
    always_explain: AlwaysExplainRules = AlwaysExplainRules()
    counterfactuals_for: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.version, str) or not self.version.strip():
            raise ConfigError(f"version must be a non-empty string, got {self.version!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"sampler must be one of {list(SAMPLERS)}, got {self.sampler!r}")
        if self.weight not in WEIGHTS:
            raise ConfigError(f"weight must be one of {list(WEIGHTS)}, got {self.weight!r}")
        budget = self.budget_per_day
        if not isinstance(budget, int) or isinstance(budget, bool) or budget < 1:
            raise ConfigError(f"budget_per_day must be a positive integer, got {budget!r}")
        floor = self.weight_floor
        if not _is_number(floor) or not 0.0 < floor <= 1.0:
            raise ConfigError(f"weight_floor must be a number in (0, 1], got {floor!r}")
        object.__setattr__(self, "weight_floor", float(floor))
        if not isinstance(self.always_explain, AlwaysExplainRules):
            raise ConfigError(
                f"always_explain must be an AlwaysExplainRules, got {self.always_explain!r}"
            )
        object.__setattr__(
            self, "counterfactuals_for", _names(self.counterfactuals_for, "counterfactuals_for")
        )

    @property
    def label(self) -> str:
        """What a sampled row records as its `sampling_policy`, e.g. "2026-11-01/priority"."""
        return f"{self.version}/{self.sampler}"

    @property
    def effective_weight(self) -> str:
        """The weight the sampler uses: the reservoir is priority sampling with w = 1."""
        return "uniform" if self.sampler == "reservoir" else self.weight

    def wants_counterfactuals(self, sampling_reason: str, flags: list[str] | None = None) -> bool:
        """Whether a sampled row gets counterfactuals: its reason or one of its flags is listed."""
        wanted = set(self.counterfactuals_for)
        reason = sampling_reason.removeprefix("always:")
        return reason in wanted or any(f in wanted for f in flags or ())


@dataclass(frozen=True)
class SamplingPolicies:
    """Every tenant's policy: the defaults plus per-tenant overrides, one version and seed."""

    version: str
    seed: int
    defaults: TenantPolicy
    # Excluded from the hash (a dict is unhashable); equality still compares it.
    tenants: Mapping[str, TenantPolicy] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tenants", dict(self.tenants))
        for name, policy in (("defaults", self.defaults), *self.tenants.items()):
            if not isinstance(name, str) or not name:
                raise ConfigError(f"tenant names must be non-empty strings, got {name!r}")
            if not isinstance(policy, TenantPolicy):
                raise ConfigError(f"policy of {name!r} must be a TenantPolicy, got {policy!r}")
            # One seed for all tenants: a request is hashed once per batch, and a policy
            # version names one consistent set of rules.
            if (policy.version, policy.seed) != (self.version, self.seed):
                raise ConfigError(
                    f"policy of {name!r} has version/seed {policy.version!r}/{policy.seed!r}, "
                    f"expected the file's {self.version!r}/{self.seed!r}"
                )

    def policy_for(self, tenant_id: str) -> TenantPolicy:
        """The tenant's policy; tenants without an override get the defaults."""
        return self.tenants.get(tenant_id, self.defaults)


def _check_keys(mapping: object, allowed: tuple[str, ...], where: str) -> Mapping[str, Any]:
    if not isinstance(mapping, Mapping):
        raise ConfigError(f"{where} must be a mapping, got {mapping!r}")
    unknown = sorted(str(k) for k in mapping if k not in allowed)
    if unknown:
        raise ConfigError(f"{where} has unknown keys {unknown}; allowed keys are {list(allowed)}")
    return mapping


def _tenant_policy(
    version: str, seed: int, base: Mapping[str, Any], override: Mapping[str, Any]
) -> TenantPolicy:
    """Overlay `override` on `base` (always_explain key by key) and build the policy."""
    merged = {**base, **override}
    always = {
        **_check_keys(base.get("always_explain") or {}, _ALWAYS_KEYS, "always_explain"),
        **_check_keys(override.get("always_explain") or {}, _ALWAYS_KEYS, "always_explain"),
    }
    merged["always_explain"] = AlwaysExplainRules(**always)
    return TenantPolicy(version=version, seed=seed, **merged)


def parse_policies(document: object, *, source: str = "policy document") -> SamplingPolicies:
    """Build policies from a parsed YAML document; errors name the source, tenant and value.

    Raises:
        ValueError: a key is unknown or missing, or a value is out of range.
    """
    doc = _check_keys(document, _TOP_LEVEL_KEYS, source)
    for key in ("version", "seed"):
        if key not in doc:
            raise ConfigError(f"{source}: missing required key {key!r}")
    version = doc["version"]
    if isinstance(version, datetime.date):
        # YAML reads an unquoted 2026-11-01 as a date; the text the author wrote is meant.
        version = version.isoformat()
    seed = doc["seed"]
    if not isinstance(version, str) or not version.strip():
        raise ConfigError(f"{source}: version must be a non-empty string, got {version!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"{source}: seed must be a non-negative integer, got {seed!r}")
    defaults = _check_keys(doc.get("defaults") or {}, _TENANT_KEYS, f"{source}: defaults")
    tenants = doc.get("tenants") or {}
    if not isinstance(tenants, Mapping):
        raise ConfigError(f"{source}: tenants must be a mapping of tenant id to overrides")
    try:
        default_policy = _tenant_policy(version, seed, defaults, {})
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{source}: defaults: {err}") from err
    policies = {}
    for tenant, override in tenants.items():
        where = f"tenants.{tenant}"
        if not isinstance(tenant, str) or not tenant:
            raise ConfigError(f"{source}: tenant ids must be non-empty strings, got {tenant!r}")
        # A bare `tenant:` line (null) lists the tenant with the defaults.
        override = _check_keys(override or {}, _TENANT_KEYS, f"{source}: {where}")
        try:
            policies[tenant] = _tenant_policy(version, seed, defaults, override)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{source}: {where}: {err}") from err
    return SamplingPolicies(version=version, seed=seed, defaults=default_policy, tenants=policies)


def default_policy_file() -> Path:
    """The policy file shipped inside the package (whylake/schemas/policies/default.yaml)."""
    return Path(str(files("whylake.schemas").joinpath("policies", "default.yaml")))


def load_policies(path: str | os.PathLike[str]) -> SamplingPolicies:
    """Read and validate a policy YAML file (see schemas/policies/default.yaml)."""
    with open(path, encoding="utf-8") as handle:
        try:
            document = yaml.safe_load(handle)
        except yaml.YAMLError as err:
            raise ConfigError(f"{os.fspath(path)}: not valid YAML: {err}") from err
    return parse_policies(document, source=os.fspath(path))
