"""The explanation letter: one page for the affected person, as HTML or as a PDF (Chromium)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from whylake.lake.reconstruct import Reconstruction
from whylake.schemas.errors import ConfigError, LetterRenderError
from whylake.schemas.explanation_policy import ExplanationPolicies
from whylake.views.tiers import build_view, render_template

FORMATS = ("html", "pdf")
# A closed network and no profile of the user's: the page has no external resource anyway
# (its Content-Security-Policy allows none), and nothing should phone home while printing.
_CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--no-pdf-header-footer",
)


@dataclass(frozen=True)
class LetterConfig:
    """How letters are printed: a headless Chromium (HTML -> PDF), resolved on the launcher."""

    chromium: str | None = None  # None: HTML letters only
    timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if self.timeout_s <= 0:
            raise ConfigError(f"timeout_s must be positive, got {self.timeout_s}")


def letter_html(
    rec: Reconstruction,
    *,
    policies: ExplanationPolicies | None = None,
    lang: str = "en",
    template_version: str | None = None,
) -> str:
    """The letter as one self-contained HTML page, from the tier-1 view of the record."""
    view = build_view(rec, 1, policies=policies, lang=lang, template_version=template_version)
    context = {"v": view.data, "tier": 1, "template_version": view.template_version, "lang": lang}
    return render_template(view.template_version, f"letter.{lang}.html.j2", context)


def html_to_pdf(html: str, config: LetterConfig) -> bytes:
    """Print an HTML page to PDF with headless Chromium (A4, no header or footer).

    Raises:
        LetterRenderError: no Chromium configured, or it failed or timed out.
    """
    if not config.chromium or not Path(config.chromium).is_file():
        raise LetterRenderError(
            f"no Chromium at {config.chromium!r} to print the PDF: install it "
            "(`infra/services.sh fetch chromium`), set WHYLAKE_CHROMIUM, or write --out x.html"
        )
    work = Path(tempfile.mkdtemp(prefix="whylake-letter-"))
    try:
        page, out = work / "letter.html", work / "letter.pdf"
        page.write_text(html, encoding="utf-8")
        command = [
            config.chromium,
            *_CHROMIUM_FLAGS,
            f"--user-data-dir={work / 'profile'}",
            f"--print-to-pdf={out}",
            page.as_uri(),
        ]
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=config.timeout_s, check=False
            )
        except subprocess.TimeoutExpired as err:
            raise LetterRenderError(f"Chromium did not print within {config.timeout_s}s") from err
        if done.returncode != 0 or not out.is_file():
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise LetterRenderError(f"Chromium failed to print (exit {done.returncode}): {tail}")
        return out.read_bytes()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def write_letter(
    rec: Reconstruction,
    out: str | Path,
    config: LetterConfig,
    *,
    policies: ExplanationPolicies | None = None,
    lang: str = "en",
    template_version: str | None = None,
) -> Path:
    """Write the letter to `out`: `.html` as the page, `.pdf` printed by Chromium."""
    target = Path(out)
    kind = target.suffix.lower().lstrip(".")
    if kind not in FORMATS:
        raise ConfigError(f"--out must end in .html or .pdf, got {target.name!r}")
    html = letter_html(rec, policies=policies, lang=lang, template_version=template_version)
    target.parent.mkdir(parents=True, exist_ok=True)
    if kind == "html":
        target.write_text(html, encoding="utf-8")
    else:
        target.write_bytes(html_to_pdf(html, config))
    return target
