"""Install the repository's root folders as one import package, `whylake` (metadata: pyproject).

The layout fixes folders such as `schemas/` and `transforms/` at the repository root; installed,
each becomes `whylake.<folder>`, so site-packages holds exactly one top-level package. setuptools'
package-dir mapping does this for wheels and for editable installs alike.
"""

from setuptools import find_namespace_packages, setup

# Every root folder that installs, as whylake.<folder>. A new one must be added here.
ROOTS = (
    "schemas",
    "registry",
    "lake",
    "monitor",
    "transforms",
    "pipelines",
    "views",
    "api",
    "jobs",
)

# Namespace discovery also lists data folders (templates, static files, policies) as packages,
# so their package-data is installed without setuptools' "package would be ignored" warning.
PACKAGES = find_namespace_packages(
    include=[*ROOTS, *(f"{root}.*" for root in ROOTS)], exclude=["*.__pycache__"]
)

setup(
    package_dir={"whylake": "whylake", **{f"whylake.{root}": root for root in ROOTS}},
    packages=["whylake", *(f"whylake.{package}" for package in PACKAGES)],
)
