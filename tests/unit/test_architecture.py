"""The architecture holds: import contracts (import-linter) and lint bans (ruff), for real."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PURE_PACKAGES = {"explainers", "sampling"}


def _package_tree(out: Path) -> Path:
    done = subprocess.run(
        [sys.executable, str(REPO / "tools/package_tree.py"), str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(done.stdout.strip())


def _lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    # Run from inside the tree: import-linter puts the working directory first on sys.path.
    return subprocess.run(
        [str(BIN / "lint-imports"), "--config", str(REPO / "pyproject.toml"), "--no-cache"],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_import_contracts_hold(tmp_path: Path) -> None:
    done = _lint_imports(_package_tree(tmp_path / "tree"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        (
            "transforms/explainers/device.py",
            "import apache_beam",
            "The explainer and sampling mathematics import no Beam",
        ),
        ("lake/runs.py", "import whylake.transforms.read", "Layers point down"),
        ("schemas/ids.py", "import whylake.lake.catalog", "Layers point down"),
        ("registry/store.py", "import apache_beam", "import no Beam"),
        ("pipelines/batch.py", "import schemas.errors", "bare name"),
        ("transforms/read.py", "import typer", "Only whylake.jobs parses command lines"),
    ],
)
def test_a_forbidden_import_breaks_its_contract(
    tmp_path: Path, module: str, line: str, contract: str
) -> None:
    """The contracts are not vacuous: one planted import in a copy of the package breaks one."""
    tree = tmp_path / "tree"
    package = tree / "whylake"
    shutil.copytree(_package_tree(tmp_path / "links") / "whylake", package, symlinks=False)
    target = package / module
    target.write_text(target.read_text() + f"\n{line}  # planted by the test\n")
    done = _lint_imports(tree)
    assert done.returncode != 0, done.stdout
    assert "BROKEN" in done.stdout and contract in " ".join(done.stdout.split())


def test_the_pure_packages_contract_names_every_other_transforms_module() -> None:
    contracts = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    pure = next(c for c in contracts["contracts"] if "mathematics" in c["name"])
    named = {m.removeprefix("whylake.transforms.") for m in pure["forbidden_modules"]}
    present = {
        p.stem if p.is_file() else p.name
        for p in (REPO / "transforms").iterdir()
        if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").exists()
    }
    assert present - PURE_PACKAGES <= named, "add the new module to the forbidden list"


def test_no_module_below_jobs_reads_the_environment_or_imports_a_bare_root() -> None:
    done = subprocess.run(
        [str(BIN / "ruff"), "check", "--select", "TID251", "--output-format", "concise", "."],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("where", "source", "banned"),
    [
        ("lake/planted.py", 'import os\n\nHOME = os.environ.get("HOME")\n', True),
        ("transforms/planted.py", "import os\n\nHOME = os.getenv('HOME')\n", True),
        ("transforms/planted.py", "from schemas.errors import WhylakeError\n", True),
        ("tests/planted.py", "from transforms.read import ReadConfig\n", True),
        ("jobs/planted.py", 'import os\n\nHOME = os.environ.get("HOME")\n', False),
    ],
)
def test_the_ban_catches_what_it_should(where: str, source: str, banned: bool) -> None:
    """ruff's banned-api, with the repository's configuration for that path (no file written)."""
    done = subprocess.run(
        [str(BIN / "ruff"), "check", "--select", "TID251", "--stdin-filename", where, "-"],
        cwd=REPO,
        input=source,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode != 0) is banned, done.stdout
