"""The wheel as a user gets it: one top-level package, and a batch run far from the checkout."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(REPO),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (found,) = out.glob("whylake-*.whl")
    return found


def test_the_wheel_holds_one_top_level_package_and_its_data(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/", 1)[0] for n in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"whylake"}
    assert "whylake/schemas/policies/default.yaml" in names
    assert "whylake/schemas/policies/explanation.yaml" in names
    assert "whylake/views/templates/v1/letter.en.html.j2" in names
    assert "whylake/api/static/auditor.html" in names
    assert not [n for n in names if n.endswith(("ruff.toml", ".pyc"))]
    assert "whylake/py.typed" in names
    assert "whylake/monitor/default.yaml" in names
    assert "whylake/monitor/prometheus/whylake-rules.yml" in names
    assert "whylake/schemas/policies/explanation.yaml" in names
    assert "whylake/views/templates/v2/tier1.en.txt.j2" in names
    assert "whylake/api/static/auditor.html" in names
    # Every module of the checkout's root folders is in it (setup.py's ROOTS list is complete).
    for root in (
        "schemas",
        "registry",
        "lake",
        "monitor",
        "transforms",
        "pipelines",
        "views",
        "api",
        "jobs",
    ):
        for source in (REPO / root).rglob("*.py"):
            assert f"whylake/{source.relative_to(REPO)}" in names, source
    top_level = next(n for n in names if n.endswith("top_level.txt"))
    assert zipfile.ZipFile(wheel).read(top_level).decode().split() == ["whylake"]


def test_whylake_batch_runs_from_the_installed_wheel_outside_the_checkout(
    wheel: Path, tmp_path: Path
) -> None:
    # A fresh virtual environment: whylake from the wheel alone; its dependencies are borrowed
    # from this environment's site-packages (a path entry, so no editable hook of the checkout
    # is activated) to avoid downloading 2.5 GB again.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    (site / "borrowed-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--ignore-installed", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTHON", "WHYLAKE_", "VIRTUAL_ENV", "PYICEBERG_"))
    }
    env.update(WHYLAKE_HASH_KEY="wheel-test-key-0123456789", COLUMNS="200")
    env["PATH"] = f"{venv / 'bin'}:{env['PATH']}"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            args, cwd=work, env=env, capture_output=True, text=True, timeout=600, check=False
        )

    where = run(
        str(python),
        "-c",
        "import importlib.util, whylake, whylake.jobs.cli, whylake.pipelines.batch;"
        "print(whylake.__file__);"
        "print([m for m in ('schemas', 'transforms', 'pipelines', 'jobs', 'lake', 'registry')"
        " if importlib.util.find_spec(m)])",
    )
    assert where.returncode == 0, where.stderr
    installed_at, bare = where.stdout.split("\n")[:2]
    assert Path(installed_at).is_relative_to(venv), installed_at
    assert bare == "[]", f"bare top-level packages importable: {bare}"

    setup = run(
        str(python),
        "-c",
        "from datetime import date; from pathlib import Path;"
        "from whylake.jobs.demo_models import register_demo_models;"
        "from whylake.jobs.demo_data import generate_day;"
        "from whylake.registry import ModelRegistry;"
        "r = ModelRegistry(Path('home/models')); register_demo_models(r);"
        "generate_day(r, Path('logs'), date(2026, 11, 21), per_tenant=150)",
    )
    assert setup.returncode == 0, setup.stderr[-3000:]
    batch = run(
        str(venv / "bin" / "whylake"),
        "batch",
        "--input",
        "logs/*.jsonl",
        "--home",
        "home",
        "--date",
        "2026-11-21",
    )
    assert batch.returncode == 0, batch.stdout[-3000:] + batch.stderr[-3000:]
    assert "succeeded" in batch.stdout
    assert str(REPO) not in batch.stdout + batch.stderr
    runs = run(str(venv / "bin" / "whylake"), "runs", "--home", "home")
    assert runs.returncode == 0 and "succeeded" in runs.stdout, runs.stderr
