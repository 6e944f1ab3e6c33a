"""Per-tenant explanation policies: what runs how deep, review thresholds, templates (YAML)."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from whylake.schemas.errors import ConfigError

ROUTES: tuple[str, ...] = ("auto", "confirm", "person")

_TOP_KEYS = ("defaults", "tenants")
_TENANT_KEYS = (
    "explainers",
    "trust_tiers",
    "escalate",
    "counterfactuals",
    "review",
    "templates",
    "contest",
)
_ESCALATE_KEYS = ("flags", "risk_above", "explainers")
_TEMPLATE_KEYS = ("version", "languages")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _unit(value: object, what: str) -> float | None:
    """A number in [0, 1] or None."""
    if value is None:
        return None
    if not _is_number(value) or not 0.0 <= float(value) <= 1.0:  # type: ignore[arg-type]
        raise ConfigError(f"{what} must be a number in [0, 1] or null, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def _names(value: object, what: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise ConfigError(f"{what} must be a list of names, got {value!r}")
    for name in value:
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{what} must hold non-empty strings, got {name!r}")
    return tuple(value)


def _mapping(value: object, allowed: tuple[str, ...], where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a mapping, got {value!r}")
    unknown = sorted(str(k) for k in value if k not in allowed)
    if unknown:
        raise ConfigError(f"{where} has unknown keys {unknown}; allowed keys are {list(allowed)}")
    return value


@dataclass(frozen=True)
class ExplainerDepth:
    """Which explainers run and how deep; None leaves the job's own setting."""

    ig_steps: int | None = None
    shap: bool | None = None
    counterfactuals: bool | None = None

    def __post_init__(self) -> None:
        steps = self.ig_steps
        if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool)):
            raise ConfigError(f"ig_steps must be an integer or null, got {steps!r}")
        if steps is not None and not 2 <= steps <= 4096:
            raise ConfigError(f"ig_steps must be in [2, 4096], got {steps}")
        for name in ("shap", "counterfactuals"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, bool):
                raise ConfigError(f"{name} must be true, false or null, got {value!r}")

    def over(self, base: ExplainerDepth) -> ExplainerDepth:
        """This depth's settings where it gives them, `base`'s elsewhere."""
        return ExplainerDepth(
            *(
                getattr(base, f.name) if getattr(self, f.name) is None else getattr(self, f.name)
                for f in fields(self)
            )
        )

    @classmethod
    def parse(cls, value: object, where: str) -> ExplainerDepth:
        doc = _mapping(value, tuple(f.name for f in fields(cls)), where)
        return cls(**doc)


@dataclass(frozen=True)
class EscalationRule:
    """Records that get the deeper treatment: one of these flags, or a risk above the bar."""

    flags: tuple[str, ...] = ()
    risk_above: float | None = None
    explainers: ExplainerDepth = ExplainerDepth()

    def __post_init__(self) -> None:
        object.__setattr__(self, "flags", _names(self.flags, "escalate.flags"))
        object.__setattr__(self, "risk_above", _unit(self.risk_above, "escalate.risk_above"))

    def applies(self, flags: tuple[str, ...], risk: float | None) -> bool:
        """Whether a record with these flags and this risk score is escalated."""
        if any(f in self.flags for f in flags):
            return True
        return self.risk_above is not None and risk is not None and risk > self.risk_above


@dataclass(frozen=True)
class CounterfactualConstraints:
    """What a counterfactual shown to a person may change, on top of the model card's limits."""

    per_query: int = 3
    immutable: tuple[str, ...] = ()  # features never changed (e.g. age), besides the card's
    max_features_changed: int | None = None  # longer ones are not actionable advice

    def __post_init__(self) -> None:
        if not isinstance(self.per_query, int) or not 1 <= self.per_query <= 10:
            raise ConfigError(f"counterfactuals.per_query must be in [1, 10], got {self.per_query}")
        object.__setattr__(
            self, "immutable", tuple(sorted(_names(self.immutable, "counterfactuals.immutable")))
        )
        limit = self.max_features_changed
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise ConfigError(
                f"counterfactuals.max_features_changed must be a positive integer or null, "
                f"got {limit!r}"
            )


@dataclass(frozen=True)
class ReviewThresholds:
    """When a person looks at a decision: auto, confirm (a person confirms) or person (decides).

    Low confidence or high risk moves a record up; so does explainers disagreeing (agreement
    below ``min_agreement``), as a person would re-check when two instruments disagree, and a
    producer input hash that does not match the input whylake explained.
    """

    confirm_below_confidence: float | None = 0.75
    person_below_confidence: float | None = 0.55
    confirm_above_risk: float | None = 0.8
    person_above_risk: float | None = 0.95
    min_agreement: float | None = 0.5
    agreement_top_k: int = 5
    person_flags: tuple[str, ...] = ("disputed",)
    person_on_input_hash_mismatch: bool = True

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name.endswith(("_confidence", "_risk")):
                object.__setattr__(self, f.name, _unit(getattr(self, f.name), f"review.{f.name}"))
        if self.min_agreement is not None:
            value = self.min_agreement
            if not _is_number(value) or not -1.0 <= value <= 1.0:
                raise ConfigError(f"review.min_agreement must be in [-1, 1] or null, got {value!r}")
            object.__setattr__(self, "min_agreement", float(value))
        k = self.agreement_top_k
        if not isinstance(k, int) or isinstance(k, bool) or k < 2:
            raise ConfigError(f"review.agreement_top_k must be an integer >= 2, got {k!r}")
        object.__setattr__(self, "person_flags", _names(self.person_flags, "review.person_flags"))
        if not isinstance(self.person_on_input_hash_mismatch, bool):
            raise ConfigError("review.person_on_input_hash_mismatch must be true or false")
        pairs = (
            (self.person_below_confidence, self.confirm_below_confidence, "confidence"),
            (self.confirm_above_risk, self.person_above_risk, "risk"),
        )
        for low, high, what in pairs:
            if low is not None and high is not None and low > high:
                raise ConfigError(
                    f"review thresholds on {what} are inverted: the person threshold must be "
                    f"stricter than the confirm threshold ({low} > {high})"
                )


@dataclass(frozen=True)
class TemplateChoice:
    """Which versioned template set words the views, and in which languages."""

    version: str = "v2"
    languages: tuple[str, ...] = ("en",)

    def __post_init__(self) -> None:
        if not isinstance(self.version, str) or not self.version.strip():
            raise ConfigError(f"templates.version must be a non-empty string: {self.version!r}")
        object.__setattr__(self, "languages", _names(self.languages, "templates.languages"))
        if not self.languages:
            raise ConfigError("templates.languages must name at least one language")


DEFAULT_CONTEST = (
    "You may ask for this decision to be reviewed by a person. Reply to the organisation that "
    "made it within 30 days and quote the reference on this page."
)


@dataclass(frozen=True)
class TenantExplanationPolicy:
    """One tenant's explanation policy, defaults filled in and validated."""

    explainers: ExplainerDepth = ExplainerDepth()
    trust_tiers: Mapping[str, ExplainerDepth] = field(default_factory=dict, hash=False)
    escalate: EscalationRule = EscalationRule()
    counterfactuals: CounterfactualConstraints = CounterfactualConstraints()
    review: ReviewThresholds = ReviewThresholds()
    templates: TemplateChoice = TemplateChoice()
    contest: str = DEFAULT_CONTEST

    def __post_init__(self) -> None:
        object.__setattr__(self, "trust_tiers", dict(self.trust_tiers))
        if not isinstance(self.contest, str) or not self.contest.strip():
            raise ConfigError("contest must say, in words, how a person contests a decision")

    def canonical(self) -> dict[str, Any]:
        """Every setting as plain JSON types, keys sorted by json.dumps."""
        doc = asdict(self)
        doc["trust_tiers"] = {k: asdict(v) for k, v in sorted(self.trust_tiers.items())}
        return doc


@dataclass(frozen=True)
class ExplanationPolicies:
    """Every tenant's explanation policy: the defaults plus per-tenant overrides."""

    defaults: TenantExplanationPolicy = TenantExplanationPolicy()
    tenants: Mapping[str, TenantExplanationPolicy] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tenants", dict(self.tenants))

    def policy_for(self, tenant_id: str) -> TenantExplanationPolicy:
        """The tenant's policy; tenants without an override get the defaults."""
        return self.tenants.get(tenant_id, self.defaults)


def canonical_json(document: object) -> str:
    """The canonical form a policy hash is taken of: sorted keys, no spaces, UTF-8."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def content_hash(document: object) -> str:
    """sha256 of the canonical JSON of `document`."""
    return hashlib.sha256(canonical_json(document).encode()).hexdigest()


def _tenant_policy(
    base: TenantExplanationPolicy, doc: Mapping[str, Any], where: str
) -> TenantExplanationPolicy:
    """Overlay one mapping (the defaults, or a tenant's overrides) on `base`, section by section."""
    doc = _mapping(doc, _TENANT_KEYS, where)
    out = base
    if "explainers" in doc:
        depth = ExplainerDepth.parse(doc["explainers"], f"{where}.explainers")
        out = replace(out, explainers=depth.over(base.explainers))
    if "trust_tiers" in doc:
        tiers_doc = doc["trust_tiers"] or {}
        if not isinstance(tiers_doc, Mapping):
            raise ConfigError(f"{where}.trust_tiers must map a trust tier to explainer settings")
        tiers = dict(base.trust_tiers)
        for tier, depth_doc in tiers_doc.items():
            if not isinstance(tier, str) or not tier:
                raise ConfigError(f"{where}.trust_tiers: tier names must be strings: {tier!r}")
            tiers[tier] = ExplainerDepth.parse(depth_doc, f"{where}.trust_tiers.{tier}")
        out = replace(out, trust_tiers=tiers)
    if "escalate" in doc:
        esc = _mapping(doc["escalate"], _ESCALATE_KEYS, f"{where}.escalate")
        merged: dict[str, Any] = {**asdict(base.escalate), **esc}
        merged["explainers"] = (
            ExplainerDepth.parse(esc["explainers"], f"{where}.escalate.explainers")
            if "explainers" in esc
            else base.escalate.explainers
        )
        out = replace(out, escalate=EscalationRule(**merged))
    sections: tuple[tuple[str, type[Any]], ...] = (
        ("counterfactuals", CounterfactualConstraints),
        ("review", ReviewThresholds),
        ("templates", TemplateChoice),
    )
    for name, kind in sections:
        if name in doc:
            allowed = tuple(f.name for f in fields(kind))
            section = _mapping(doc[name], allowed, f"{where}.{name}")
            out = replace(out, **{name: kind(**{**asdict(getattr(base, name)), **section})})
    if "contest" in doc:
        out = replace(out, contest=doc["contest"])
    return out


def parse_explanation_policies(
    document: object, *, source: str = "explanation policy"
) -> ExplanationPolicies:
    """Build policies from a parsed YAML document; errors name the source, tenant and value.

    Raises:
        ConfigError: a key is unknown, or a value is of the wrong type or out of range.
    """
    if document is None:
        document = {}
    doc = _mapping(document, _TOP_KEYS, source)
    try:
        defaults = _tenant_policy(TenantExplanationPolicy(), doc.get("defaults") or {}, "defaults")
        tenants_doc = doc.get("tenants") or {}
        if not isinstance(tenants_doc, Mapping):
            raise ConfigError("tenants must map a tenant id to its overrides")
        tenants = {}
        for tenant, override in tenants_doc.items():
            if not isinstance(tenant, str) or not tenant:
                raise ConfigError(f"tenant ids must be non-empty strings, got {tenant!r}")
            tenants[tenant] = _tenant_policy(defaults, override or {}, f"tenants.{tenant}")
    except (TypeError, ConfigError) as err:
        raise ConfigError(f"{source}: {err}") from err
    return ExplanationPolicies(defaults=defaults, tenants=tenants)
