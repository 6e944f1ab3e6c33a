"""The explanation policy: validated YAML, per-tenant defaults, a hash that tracks the rules."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from whylake.schemas.errors import ConfigError
from whylake.schemas.explanation_policy import parse_explanation_policies
from whylake.transforms.explanation_plan import (
    default_explanation_policies,
    default_explanation_policy_file,
    load_explanation_policies,
    policy_hash,
)
from whylake.transforms.sampling.policy import default_policy_file, load_policies

SAMPLING = load_policies(default_policy_file())


def _doc() -> dict:
    return yaml.safe_load(default_explanation_policy_file().read_text())


def _hash(doc: dict, tenant: str) -> str:
    policies = parse_explanation_policies(doc)
    return policy_hash(SAMPLING.policy_for(tenant), policies.policy_for(tenant))


def test_the_shipped_policy_parses_with_per_tenant_overrides() -> None:
    policies = default_explanation_policies()
    acme, other = policies.policy_for("acme"), policies.policy_for("someone-new")
    assert acme.trust_tiers["gold"].ig_steps == 100
    assert acme.escalate.explainers.counterfactuals is True
    assert "appeals@acme.example" in acme.contest and "appeals@acme" not in other.contest
    assert policies.policy_for("globex").review.person_below_confidence is None
    assert other.templates.version == "v2"


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("defaults", "explainers", "ig_step"), 5, r"defaults\.explainers has unknown keys"),
        (("defaults", "explainers", "ig_steps"), 1, r"ig_steps must be in \[2, 4096\]"),
        (("defaults", "review", "min_agreement"), 2, r"min_agreement must be in \[-1, 1\]"),
        (("defaults", "review", "person_below_confidence"), 0.9, "inverted"),
        (("tenants", "acme", "escalate", "risk_above"), "high", r"risk_above must be a number"),
        (("tenants", "acme", "counterfactuals", "per_query"), 0, "per_query must be in"),
        (("tenants", "acme", "templates", "languages"), "en", "must be a list"),
        (("tenants", "acme", "contest"), " ", "contest must say"),
    ],
)
def test_a_bad_value_is_refused_naming_where_it_is(
    path: tuple, value: object, message: str
) -> None:
    doc = _doc()
    node = doc
    for key in path[:-1]:
        if node.get(key) is None:
            node[key] = {}
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(ConfigError, match=message):
        parse_explanation_policies(doc, source="p.yaml")


def test_the_hash_ignores_form_and_tracks_the_rules(tmp_path: Path) -> None:
    doc = _doc()
    base = _hash(doc, "acme")
    # Comments, key order and restating a default change nothing.
    rewritten = tmp_path / "p.yaml"
    rewritten.write_text("# a comment\n" + yaml.safe_dump(doc, sort_keys=True))
    reloaded = load_explanation_policies(rewritten)
    assert policy_hash(SAMPLING.policy_for("acme"), reloaded.policy_for("acme")) == base
    doc["defaults"]["review"]["agreement_top_k"] = 5  # the default, said again
    assert _hash(doc, "acme") == base
    # Another tenant's override does not touch acme's hash; a rule acme uses does.
    doc["tenants"]["globex"]["contest"] = "Call globex."
    assert _hash(doc, "acme") == base
    assert _hash(doc, "globex") != _hash(_doc(), "globex")
    doc["defaults"]["trust_tiers"]["gold"]["ig_steps"] = 120
    assert _hash(doc, "acme") != base
    # The sampling policy is part of what decided the row: its rules enter the hash too.
    sampling = load_policies(default_policy_file())
    changed = type(sampling.policy_for("acme"))(
        **{**sampling.policy_for("acme").__dict__, "budget_per_day": 301}
    )
    assert policy_hash(changed, parse_explanation_policies(_doc()).policy_for("acme")) != base


def test_the_hash_is_a_sha256_of_the_canonical_form() -> None:
    import hashlib
    import json

    from whylake.transforms.explanation_plan import effective_policy

    acme = default_explanation_policies().policy_for("acme")
    canonical = json.dumps(
        effective_policy(SAMPLING.policy_for("acme"), acme),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    assert (
        policy_hash(SAMPLING.policy_for("acme"), acme)
        == hashlib.sha256(canonical.encode()).hexdigest()
    )
