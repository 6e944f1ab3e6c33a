"""The command line of the views: tiers, letters, reviews, keys and the policy hash."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from pyiceberg.catalog import Catalog

from tests.unit.jobs.test_cli import _clean_environment, run
from tests.unit.lake.conftest import commit_rows, lake_catalog, make_row
from whylake.api.keys import ApiKeys
from whylake.transforms.explanation_plan import default_explanation_policies, policy_hash
from whylake.transforms.sampling.policy import default_policy_file, load_policies

__all__ = ["_clean_environment", "commit_rows", "lake_catalog", "make_row", "run"]


@pytest.fixture
def home(tmp_path: Path, lake_catalog: Catalog, make_row: Any, commit_rows: Any) -> Path:
    commit_rows(lake_catalog, [make_row("acme", "r-1"), make_row("globex", "g-1")], "b-1")
    return tmp_path


def test_reconstruct_prints_the_tier_asked_for(run: Any, home: Path) -> None:
    base = ("reconstruct", "--tenant", "acme", "--request-id", "r-1", "--home", str(home))
    code, out = run(*base, "--tier", "1")
    assert code == 0, out
    assert "The decision on your request r-1 was" in out and "How to contest" in out
    code, out = run(*base, "--tier", "3", "--template-version", "v1")
    assert code == 0 and "AUDIT VIEW" in out and "Template v1." in out
    code, out = run(*base, "--tier", "2", "--html", str(home / "t2.html"))
    assert code == 0 and "Tier 2 (operator)" in (home / "t2.html").read_text()
    code, out = run(*base, "--tier", "5")
    assert code == 2


def test_reviews_are_added_and_listed(run: Any, home: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("WHYLAKE_HASH_KEY", "a-test-key-of-our-own")
    add = ("review", "add", "--tenant", "acme", "--request-id", "r-1", "--home", str(home))
    code, out = run(*add, "--reviewer", "ada@acme", "--decision", "override", "--reason", "no")
    assert code == 0 and "override" in out, out
    code, out = run(*add, "--reviewer", "ada", "--decision", "approve", "--reason", "x")
    assert code == 2 and "decision must be one of" in out
    code, out = run(
        "review", "add", "--tenant", "globex", "--request-id", "r-1", "--home", str(home),
        "--reviewer", "x", "--decision", "confirm", "--reason", "x",
    )  # fmt: skip
    assert code == 2, "acme's request is not globex's to review"
    code, out = run("review", "list", "--tenant", "acme", "--output", "json", "--home", str(home))
    rows = json.loads(out)
    assert [r["decision"] for r in rows] == ["override"] and "ada@acme" not in out
    code, out = run("review", "list", "--tenant", "globex", "--output", "json", "--home", str(home))
    assert json.loads(out) == []
    code, out = run("reconstruct", "--tenant", "acme", "--request-id", "r-1", "--home", str(home))
    assert json.loads(out)["history"][0]["latest_review"]["decision"] == "override"


def test_letter_writes_html(run: Any, home: Path) -> None:
    out_file = home / "letters" / "r-1.html"
    code, out = run(
        "letter", "--tenant", "acme", "--request-id", "r-1", "--out", str(out_file),
        "--home", str(home),
    )  # fmt: skip
    assert code == 0, out
    page = out_file.read_text()
    assert "How to contest this decision" in page and "appeals@acme.example" in page
    code, out = run(
        "letter", "--tenant", "acme", "--request-id", "r-1", "--out", str(home / "x.doc"),
        "--home", str(home),
    )  # fmt: skip
    assert code == 2 and ".html or .pdf" in out


def test_keys_are_stored_as_sha256_only(run: Any, tmp_path: Path) -> None:
    keys = tmp_path / "keys.yaml"
    code, out = run("keys", "add", "--tenant", "acme", "--keys", str(keys), "--max-tier", "2")
    assert code == 0
    key = out.strip().splitlines()[-1]
    assert key.startswith("wl_") and key not in keys.read_text()
    grant = ApiKeys.load(keys).grant_for(key)
    assert grant is not None and (grant.tenant_id, grant.max_tier) == ("acme", 2)
    keys.write_text(yaml.safe_dump({"keys": {"plain-text-key": "acme"}}))
    code, out = run("keys", "add", "--tenant", "acme", "--keys", str(keys))
    assert code == 2 and "never put a key itself" in out


def test_policy_show_prints_the_hash_rows_record(run: Any) -> None:
    code, out = run("policy", "show", "--tenant", "acme")
    assert code == 0
    expected = policy_hash(
        load_policies(default_policy_file()).policy_for("acme"),
        default_explanation_policies().policy_for("acme"),
    )
    assert out.strip().splitlines()[-1] == f"policy_hash {expected}"
