"""Tiered views of one reconstructed record, rendered at read time from versioned templates.

Tier 1 is for the affected person (the decision, the main reasons in words, what could change
it, how to contest), tier 2 for the operator (top factors with direction and size, confidence,
review status), tier 3 for the auditor (provenance, every attribution, fidelity and stability,
sampling weight, history, reviews), tier 4 for the engineer (the raw record). Each tier's data
holds only what that reader gets, so a tier-1 API answer cannot leak provenance; its words come
from `views/templates/<version>/`, so wording changes without recomputing any record.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

import jinja2

from whylake.lake.reconstruct import Reconstruction, jsonable
from whylake.schemas.errors import ConfigError
from whylake.schemas.explanation_policy import ExplanationPolicies, TenantExplanationPolicy
from whylake.transforms.explanation_plan import EXPLAINERS_DISAGREE, default_explanation_policies

TIERS: tuple[int, ...] = (1, 2, 3, 4)
TIER_NAMES = {1: "affected person", 2: "operator", 3: "auditor", 4: "debug"}
TIER1_REASONS = 3
TIER2_FACTORS = 5

Row = dict[str, Any]


def templates_root() -> Path:
    """The folder of template sets, one subfolder per version (package data)."""
    return Path(str(files("whylake.views").joinpath("templates")))


@cache
def template_versions() -> tuple[str, ...]:
    """The template versions shipped, oldest first (v1, v2, ...)."""
    names = [p.name for p in templates_root().iterdir() if p.is_dir() and p.name.startswith("v")]
    return tuple(sorted(names, key=lambda n: (len(n), n)))


@cache
def languages(version: str) -> tuple[str, ...]:
    """The languages a template version has a tier-1 template in."""
    folder = templates_root() / version
    return tuple(sorted({p.name.split(".")[1] for p in folder.glob("tier1.*.txt.j2")}))


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_root())),
        # Feature names and reasons are data: escaped in every HTML template.
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",), default=False),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )
    env.filters["num"] = fmt_number
    env.filters["time"] = fmt_time
    env.filters["words"] = feature_words
    return env


def render_template(version: str, name: str, context: dict[str, Any]) -> str:
    """Render `views/templates/<version>/<name>` with `context`."""
    try:
        return _environment().get_template(f"{version}/{name}").render(**context).strip() + "\n"
    except jinja2.TemplateNotFound as err:
        raise ConfigError(f"template set {version!r} has no template {name!r}") from err


@dataclass(frozen=True)
class View:
    """One tier of one record: the data that tier may see and its words."""

    tier: int
    template_version: str
    lang: str
    data: dict[str, Any]
    text: str

    def to_json(self) -> dict[str, Any]:
        """The view as the API returns it."""
        return {
            "tier": self.tier,
            "audience": TIER_NAMES[self.tier],
            "template_version": self.template_version,
            "lang": self.lang,
            "view": self.data,
            "text": self.text,
        }


def choose_template(
    record: Row, policy: TenantExplanationPolicy, requested: str | None, lang: str
) -> str:
    """The template version to render with: the one asked for, else the one the row was
    explained under (if still shipped), else the tenant policy's current one.

    Raises:
        ConfigError: the version asked for is not shipped, or has no template in `lang`.
    """
    shipped = template_versions()
    if requested is not None:
        if requested not in shipped:
            raise ConfigError(f"template version {requested!r} is not shipped; have {shipped}")
        version = requested
    elif record.get("template_version") in shipped:
        version = str(record["template_version"])
    else:
        version = policy.templates.version if policy.templates.version in shipped else shipped[-1]
    if lang not in languages(version):
        raise ConfigError(
            f"template version {version!r} has no {lang!r} wording; languages: "
            f"{list(languages(version))}"
        )
    return version


def build_view(
    rec: Reconstruction,
    tier: int,
    *,
    policies: ExplanationPolicies | None = None,
    lang: str = "en",
    template_version: str | None = None,
) -> View:
    """The tier's view of a reconstruction (with its reviews attached, see lake.reviews).

    Raises:
        ConfigError: no such tier, template version or language.
    """
    if tier not in TIERS:
        raise ConfigError(f"tier must be one of {list(TIERS)}, got {tier!r}")
    policy = (policies or _default_policies()).policy_for(rec.tenant_id)
    record = rec.record
    version = choose_template(record, policy, template_version, lang)
    builders = {1: _tier1, 2: _tier2, 3: _tier3, 4: _tier4}
    data = jsonable(builders[tier](rec, policy))
    data["template_version"] = version
    context = {"v": data, "tier": tier, "template_version": version, "lang": lang}
    text = (
        json.dumps(data, indent=2, sort_keys=True)
        if tier == 4
        else render_template(version, f"tier{tier}.{lang}.txt.j2", context)
    )
    return View(tier, version, lang, data, text)


@cache
def _default_policies() -> ExplanationPolicies:
    return default_explanation_policies()


# --- what each tier sees ----------------------------------------------------------------------


def _common(rec: Reconstruction) -> Row:
    r = rec.record
    return {
        "tenant_id": r["tenant_id"],
        "request_id": r["request_id"],
        "reference": r["explanation_id"],
        "decided_at": r.get("event_ts"),
        "as_of": rec.as_of,
        "snapshot_committed_at": rec.snapshot_committed_at,
    }


def _ranked(record: Row) -> list[Row]:
    """Attributions, largest magnitude first (ties by name), non-finite ones last."""
    attributions = list(record.get("attributions") or [])
    finite = [a for a in attributions if _finite(a.get("value"))]
    return sorted(finite, key=lambda a: (-abs(a["value"]), a["feature"])) + [
        a for a in attributions if not _finite(a.get("value"))
    ]


def _decision(record: Row) -> Row:
    return {
        "outcome": record.get("predicted_class"),
        "score": record.get("prediction"),
        "output_name": record.get("output_name"),
    }


def _closest_change(record: Row) -> list[Row] | None:
    valid = [cf for cf in record.get("counterfactuals") or [] if cf.get("valid")]
    if not valid:
        return None
    best = min(valid, key=lambda cf: cf.get("rank", 0))
    return [
        {"feature": c["feature"], "from_value": c["from_value"], "to_value": c["to_value"]}
        for c in best.get("changes") or []
    ]


def _disagree(record: Row, policy: TenantExplanationPolicy) -> bool:
    """Whether the explainers disagreed: as decided when explained, else by today's threshold."""
    reasons = record.get("review_reasons")
    if reasons is not None:
        return EXPLAINERS_DISAGREE in reasons
    agreement, bar = record.get("explainer_agreement"), policy.review.min_agreement
    return agreement is not None and bar is not None and agreement < bar


def _caveats(record: Row, policy: TenantExplanationPolicy) -> list[str]:
    """Codes the templates word: what a reader should know before trusting the reasons."""
    out = []
    if _disagree(record, policy):
        out.append("explainers_disagree")
    stability = record.get("stability")
    if _finite(stability) and stability < 0.6:
        out.append("unstable")
    if record.get("input_hash_mismatch"):
        out.append("input_hash_mismatch")
    return out


def _latest_review(rec: Reconstruction) -> Row | None:
    own = [r for r in rec.reviews if r["explanation_id"] == rec.record["explanation_id"]]
    return own[-1] if own else (rec.reviews[-1] if rec.reviews else None)


def _tier1(rec: Reconstruction, policy: TenantExplanationPolicy) -> Row:
    r = rec.record
    reasons = [
        {
            "feature": a["feature"],
            "input_value": a.get("input_value"),
            "effect": "raised" if a["value"] > 0 else "lowered",
        }
        for a in _ranked(r)[:TIER1_REASONS]
        if _finite(a.get("value")) and a["value"] != 0
    ]
    review = _latest_review(rec)
    return {
        **_common(rec),
        "decision": _decision(r),
        "reasons": reasons,
        "what_could_change": _closest_change(r),
        "counterfactual_status": r.get("counterfactual_status"),
        "human_review": r.get("review_route") in ("confirm", "person") or review is not None,
        "contest": policy.contest,
        "caveats": _caveats(r, policy),
    }


def _factor(a: Row, total: float) -> Row:
    value = a["value"]
    return {
        "feature": a["feature"],
        "input_value": a.get("input_value"),
        "attribution": value,
        "direction": "raises" if _finite(value) and value > 0 else "lowers",
        "share": abs(value) / total if total and _finite(value) else None,
    }


def _agreement(record: Row, policy: TenantExplanationPolicy) -> Row:
    return {
        "value": record.get("explainer_agreement"),
        "method": record.get("agreement_method"),
        "threshold": policy.review.min_agreement,
        "disagree": _disagree(record, policy),
    }


def _review_status(rec: Reconstruction) -> Row:
    r = rec.record
    return {
        "route": r.get("review_route"),
        "reasons": r.get("review_reasons") or [],
        "latest": _latest_review(rec),
        "count": len(rec.reviews),
    }


def _tier2(rec: Reconstruction, policy: TenantExplanationPolicy) -> Row:
    r = rec.record
    ranked = _ranked(r)
    total = sum(abs(a["value"]) for a in ranked if _finite(a.get("value")))
    return {
        **_common(rec),
        "decision": _decision(r),
        "prediction": r.get("prediction"),
        "base_value": r.get("base_value"),
        "confidence": r.get("confidence"),
        "risk_score": r.get("risk_score"),
        "trust_tier": r.get("trust_tier"),
        "model": f"{r.get('model_id')} v{r.get('model_version')}",
        "top_factors": [_factor(a, total) for a in ranked[:TIER2_FACTORS]],
        "other_features": max(0, len(ranked) - TIER2_FACTORS),
        "what_could_change": _closest_change(r),
        "counterfactual_status": r.get("counterfactual_status"),
        "stability": r.get("stability"),
        "agreement": _agreement(r, policy),
        "review": _review_status(rec),
        "sampling_reason": r.get("sampling_reason"),
        "caveats": _caveats(r, policy),
    }


_PROVENANCE = (
    "model_id",
    "model_version",
    "model_sha256",
    "explainer_method",
    "explainer_config_hash",
    "explainer_versions",
    "baseline_kind",
    "seed",
    "device",
    "policy_hash",
    "policy_version",
    "template_version",
    "run_id",
    "source",
    "event_ts",
    "explained_at",
    "input_hash",
    "producer_input_hash",
    "input_hash_mismatch",
    "schema_version",
)


def _tier3(rec: Reconstruction, policy: TenantExplanationPolicy) -> Row:
    r = rec.record
    shap = r.get("shap_values")
    attributions = [
        {**a, "shap_value": shap[i] if shap is not None and i < len(shap) else None}
        for i, a in enumerate(r.get("attributions") or [])
    ]
    return {
        **_common(rec),
        "decision": _decision(r),
        "provenance": {
            **{k: r.get(k) for k in _PROVENANCE},
            "snapshot_id": rec.snapshot_id,
            "snapshot_committed_at": rec.snapshot_committed_at,
            "explainer_config": r.get("explainer_config"),
            "explanation_plan": r.get("explanation_plan"),
        },
        "producer": {k: r.get(k) for k in ("trust_tier", "confidence", "label", "risk_score")},
        "prediction": r.get("prediction"),
        "logged_score": r.get("logged_score"),
        "base_value": r.get("base_value"),
        "attributions": attributions,
        "fidelity": {
            "completeness_error": r.get("completeness_error"),
            "shap_additivity_error": r.get("shap_additivity_error"),
            "score_drift": r.get("score_drift"),
        },
        "stability": r.get("stability"),
        "agreement": _agreement(r, policy),
        "sampling": {
            k: r.get(k)
            for k in (
                "sampling_policy",
                "sampling_reason",
                "inclusion_probability",
                "ht_weight",
                "stratum_size",
            )
        },
        "counterfactual_status": r.get("counterfactual_status"),
        "counterfactuals": r.get("counterfactuals"),
        "review": _review_status(rec),
        "reviews": rec.reviews,
        "history": rec.history,
        "caveats": _caveats(r, policy),
    }


def _tier4(rec: Reconstruction, policy: TenantExplanationPolicy) -> Row:
    return {
        **_common(rec),
        "snapshot_id": rec.snapshot_id,
        "record": rec.record,
        "history": rec.history,
        "reviews": rec.reviews,
    }


# --- formatting (template filters) -----------------------------------------------------------


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def fmt_number(value: Any, digits: int = 3, signed: bool = False) -> str:
    """A number for people: `digits` significant figures, thousands separated, — for none."""
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    if not _finite(value):
        return str(value)
    v = float(value)
    sign = "+" if signed and v > 0 else ""
    if v != 0 and (abs(v) >= 1e6 or abs(v) < 1e-3):
        return f"{sign}{v:.{digits - 1}e}"
    if abs(v) >= 1000:
        return f"{sign}{v:,.0f}"
    return f"{sign}{v:.{digits}g}"


def fmt_time(value: Any) -> str:
    """An ISO time (as views hold them) as `YYYY-MM-DD HH:MM UTC`."""
    if value in (None, ""):
        return "—"
    moment = datetime.fromisoformat(str(value)) if not isinstance(value, datetime) else value
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def feature_words(name: Any) -> str:
    """A feature name as words: `late_payments` -> `late payments`."""
    return " ".join(str(name).replace("_", " ").split())


def join_words(parts: Sequence[str], last: str = "and") -> str:
    """`a`, `a and b`, `a, b and c`."""
    items = list(parts)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + f" {last} " + items[-1]
