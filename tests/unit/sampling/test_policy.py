"""Policy files load into frozen, validated per-tenant policies with clear errors."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from whylake.transforms.sampling import (
    AlwaysExplainRules,
    SamplingPolicies,
    TenantPolicy,
    load_policies,
    parse_policies,
)

DEFAULT_POLICY_FILE = Path(__file__).parents[3] / "schemas" / "policies" / "default.yaml"


def test_example_policy_file_loads_with_overrides_and_defaults() -> None:
    policies = load_policies(DEFAULT_POLICY_FILE)
    assert (policies.version, policies.seed) == ("2026-11-01", 20261122)
    acme = policies.policy_for("acme")
    assert acme.budget_per_day == 300 and acme.sampler == "priority"
    assert acme.always_explain.flags == ("flagged", "disputed", "high_risk")
    assert policies.policy_for("globex").label == "2026-11-01/reservoir"
    assert policies.policy_for("initech").weight == "risk"
    unknown = policies.policy_for("no-such-tenant")
    assert unknown == policies.defaults and unknown.budget_per_day == 200
    assert unknown.counterfactuals_for == ("flagged", "disputed")


def test_tenant_override_of_always_explain_is_key_by_key(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(
        "version: 2026-11-01\n"  # unquoted: YAML reads a date; the loader keeps the text
        "seed: 1\n"
        "defaults: {always_explain: {flags: [flagged], confidence_below: 0.3, risk_above: 0.9}}\n"
        "tenants: {acme: {always_explain: {confidence_below: null, flags: [vip]}}, hooli:}\n"
    )
    policies = load_policies(path)
    assert policies.version == "2026-11-01"
    assert policies.policy_for("acme").always_explain == AlwaysExplainRules(
        flags=("vip",), confidence_below=None, risk_above=0.9
    )
    assert policies.policy_for("hooli") == policies.defaults


def test_policies_are_frozen(policies: SamplingPolicies) -> None:
    policy = policies.defaults
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.budget_per_day = 10  # type: ignore[misc]


def _with(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    *parents, leaf = path.split(".")
    node = doc
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
    return doc


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("defaults.budget_per_dya", 3, r"defaults has unknown keys \['budget_per_dya'\]"),
        ("tenants.acme.budget_per_day", 0, r"tenants\.acme: budget_per_day .* got 0"),
        ("tenants.acme.budget_per_day", "300", r"budget_per_day .* got '300'"),
        ("tenants.acme.budget_per_day", True, r"budget_per_day .* got True"),
        ("defaults.sampler", "bottomk", r"sampler must be one of .* got 'bottomk'"),
        ("tenants.globex.weight", "entropy", r"tenants\.globex: weight .* 'entropy'"),
        ("defaults.weight_floor", 0, r"weight_floor must be a number in \(0, 1\], got 0"),
        ("defaults.always_explain.confidence_below", 1.5, r"confidence_below .* got 1\.5"),
        ("defaults.always_explain.risk_above", float("nan"), r"risk_above .* got nan"),
        ("defaults.always_explain.flags", "flagged", r"flags must be a list .*'flagged'"),
        ("defaults.always_explain.flags", ["ok", ""], r"non-empty strings, got ''"),
        ("defaults.always_explain.conf_below", 0.1, r"unknown keys \['conf_below'\]"),
        ("defaults.counterfactuals_for", "flagged", r"counterfactuals_for must be a list"),
        ("seed", -1, r"seed must be a non-negative integer, got -1"),
        ("version", "", r"version must be a non-empty string, got ''"),
        ("tenants", ["acme"], r"tenants must be a mapping"),
        ("tenants.acme", 5, r"tenants\.acme must be a mapping, got 5"),
        ("tenant", {}, r"unknown keys \['tenant'\]"),
    ],
)
def test_invalid_policy_values_fail_with_a_clear_message(
    policy_doc: dict[str, Any], path: str, value: Any, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        parse_policies(_with(policy_doc, path, value))


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"version": "v1"}, r"policy document: missing required key 'seed'"),
        ([1, 2], r"policy document must be a mapping, got \[1, 2\]"),
        (None, r"policy document must be a mapping, got None"),
    ],
)
def test_invalid_policy_documents_fail_with_a_clear_message(doc: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_policies(doc)


def test_invalid_yaml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("version: [unclosed\n")
    with pytest.raises(ValueError, match=r"broken\.yaml: not valid YAML"):
        load_policies(path)


def test_every_tenant_shares_the_files_version_and_seed() -> None:
    defaults = TenantPolicy(version="v1", seed=1)
    with pytest.raises(ValueError, match=r"'acme' has version/seed 'v1'/2, expected .*'v1'/1"):
        SamplingPolicies("v1", 1, defaults, {"acme": TenantPolicy(version="v1", seed=2)})


def test_always_explain_reasons_follow_the_policy_rule_order() -> None:
    rules = AlwaysExplainRules(flags=("disputed", "flagged"), confidence_below=0.5, risk_above=0.9)
    flagged = np.array([True, True, False, False, False, False])
    disputed = np.array([False, True, False, False, False, False])
    confidence = np.array([0.1, 0.9, 0.3, np.nan, 0.9, 0.9])
    risk = np.array([0.99, 0.1, 0.95, 0.1, 0.95, np.nan])
    reasons = rules.reasons(
        {"flagged": flagged, "disputed": disputed}.__getitem__, confidence, risk
    )
    assert reasons.tolist() == [
        "always:flagged",
        "always:disputed",
        "always:low_confidence",
        "",
        "always:high_risk",
        "",
    ]


def test_counterfactuals_for_matches_reasons_and_flags(policies: SamplingPolicies) -> None:
    policy = policies.defaults
    assert policy.wants_counterfactuals("always:flagged")
    assert policy.wants_counterfactuals("priority", flags=["disputed"])
    assert not policy.wants_counterfactuals("always:low_confidence", flags=None)
