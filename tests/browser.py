"""A real headless Chromium for tests (Debian's package, installed by `infra/services.sh fetch
chromium`): the DOM after scripts ran, and a screenshot. Interactive pages use its WebDriver."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("WHYLAKE_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("WHYLAKE_CHROMEDRIVER", "/usr/bin/chromedriver")
# Flags for a closed network (no background connections, no first-run, no sandbox as root).
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)


def require_chromium() -> str:
    """The Chromium binary, or fail saying how to install it."""
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"no Chromium at {CHROMIUM}: run `infra/services.sh fetch chromium`")
    return CHROMIUM


def _run(url: str, *extra: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    profile = tempfile.mkdtemp(prefix="whylake-chromium-")
    try:
        return subprocess.run(
            [require_chromium(), *FLAGS, f"--user-data-dir={profile}", *extra, url],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=True,
        )
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def dump_dom(url: str, *, budget_ms: int = 5000) -> str:
    """The page's DOM after its scripts ran (up to `budget_ms` of virtual time)."""
    return _run(url, f"--virtual-time-budget={budget_ms}", "--dump-dom").stdout


def screenshot(url: str, out: Path, *, width: int = 1280, height: int = 2000) -> Path:
    """A PNG of the rendered page."""
    _run(url, f"--window-size={width},{height}", f"--screenshot={out}", "--hide-scrollbars")
    return out
