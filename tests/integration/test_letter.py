"""The explanation letter printed to PDF by the real headless Chromium, then rendered and read."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pypdfium2 as pdfium
import pytest

from tests.browser import dump_dom, require_chromium
from tests.unit.lake.conftest import explanation_row
from whylake.lake.reconstruct import Reconstruction
from whylake.views.letter import LetterConfig, write_letter

pytestmark = pytest.mark.integration
AS_OF = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


def _rec() -> Reconstruction:
    change = {"feature": "late_payments", "from_value": 2.0, "to_value": 0.0}
    cf: dict[str, Any] = {
        "rank": 0, "score": 0.3, "valid": True, "proximity": 0.5, "sparsity": 1,
        "plausibility": 0.2, "changes": [change],
    }  # fmt: skip
    row = explanation_row("acme", "r-<1>", counterfactuals=[cf], template_version="v2")
    return Reconstruction(row, 42, AS_OF, [], as_of=AS_OF)


def test_the_pdf_letter_is_one_readable_page(tmp_path: Path) -> None:
    rec = _rec()
    pdf = write_letter(rec, tmp_path / "letter.pdf", LetterConfig(chromium=require_chromium()))
    assert pdf.read_bytes().startswith(b"%PDF-")
    document = pdfium.PdfDocument(str(pdf))
    assert len(document) == 1, "the letter must fit on one page"
    page = document[0]
    image = np.asarray(page.render(scale=1.5).to_pil().convert("L"))
    ink = float((image < 128).mean())
    # Rendered, the page has text on it, and not a solid block (a failed print is blank).
    assert 0.005 < ink < 0.3, ink
    # The top of the page (the header with the reference) is inked too.
    assert (image[: image.shape[0] // 6] < 128).mean() > 0.001
    text = page.get_textpage().get_text_range()
    reference = rec.record["explanation_id"][:16]
    for expected in (
        reference,
        "r-<1>",
        "2024-06-01 12:00 UTC",
        "Why we reached this decision",
        "How to contest this decision",
        "late payments",
        "appeals@acme.example",
        "Wording version v2",
    ):
        assert expected in " ".join(text.split()), expected
    (tmp_path / "page.png").write_bytes(b"")  # keep the folder for a person to look at
    page.render(scale=1.0).to_pil().save(tmp_path / "page.png")


def test_the_html_letter_renders_in_the_browser(tmp_path: Path) -> None:
    html = write_letter(_rec(), tmp_path / "letter.html", LetterConfig())
    dom = dump_dom(html.as_uri())
    assert 'id="reference"' in dom and "r-&lt;1&gt;" in dom and "<script" not in dom
