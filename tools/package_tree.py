"""Lay the installed package out as a tree of links, for tools that walk files (mypy, lint-imports).

The editable install maps `whylake.<folder>` to the repository's root folders with an import
hook, which static checkers cannot follow. This builds `<out>/whylake/` with a link per root
folder (the mapping read from setup.py), so they see exactly the package a wheel installs.

    python tools/package_tree.py build/package-tree
"""

from __future__ import annotations

import ast
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def roots() -> tuple[str, ...]:
    """ROOTS from setup.py, read without running it."""
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "ROOTS":
            return tuple(ast.literal_eval(node.value))
    raise SystemExit("setup.py defines no ROOTS")


def build(out: Path) -> Path:
    package = out / "whylake"
    if out.exists():
        shutil.rmtree(out)
    package.mkdir(parents=True)
    for item in (REPO / "whylake").iterdir():
        if item.name != "__pycache__":
            (package / item.name).symlink_to(item)
    for root in roots():
        (package / root).symlink_to(REPO / root, target_is_directory=True)
    return out


if __name__ == "__main__":
    print(build(Path(sys.argv[1] if len(sys.argv) > 1 else REPO / "build/package-tree").resolve()))
