"""The HTML report: self-contained, complete, and safe with hostile feature names."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from whylake.lake.reconstruct import Reconstruction, reconstruct
from whylake.views.report import render_html, write_html_report

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from pyiceberg.catalog import Catalog

    RowFactory = Callable[..., dict[str, Any]]
    Committer = Callable[[Catalog, list[dict[str, Any]], str], int]

HOSTILE = "<script>alert('x')</script> & $income$"


def test_the_report_is_self_contained_and_names_the_record(
    tmp_path: Path, lake_catalog: Catalog, make_row: RowFactory, commit_rows: Committer
) -> None:
    row = make_row(
        "acme",
        "req-<42>",
        inputs={HOSTILE: 3.0, "debt_ratio": 0.35, "late_payments": 2.0},
        counterfactuals=[
            {
                "rank": 0,
                "score": 0.3,
                "valid": True,
                "proximity": 0.5,
                "sparsity": 1,
                "plausibility": 0.2,
                "changes": [{"feature": HOSTILE, "from_value": 3.0, "to_value": 1.0}],
            }
        ],
        flags=["disputed"],
    )
    commit_rows(lake_catalog, [row], "b-1")
    rec = reconstruct(lake_catalog, "acme", "req-<42>")

    path = write_html_report(rec, tmp_path / "out" / "report.html")
    html = path.read_text(encoding="utf-8")

    assert "req-&lt;42&gt;" in html and "req-<42>" not in html
    assert row["model_sha256"] in html
    assert str(rec.snapshot_id) in html
    # Feature names are data: escaped wherever they appear, never markup.
    assert "<script" not in html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; $income$" in html
    # One embedded PNG, nothing fetched from elsewhere.
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) == 1
    assert base64.b64decode(images[0]).startswith(b"\x89PNG\r\n\x1a\n")
    assert not re.search(r"""(src|href)=["']?(https?:|//|file:)""", html)
    for text in ("integrated_gradients", "priority", "disputed", "What would have changed"):
        assert text in html


def test_the_same_record_renders_to_the_same_bytes(make_row: RowFactory) -> None:
    rec = Reconstruction(make_row("acme", "r-1"), 7, datetime(2024, 6, 1, tzinfo=UTC), [])
    assert render_html(rec) == render_html(rec)


def test_a_sparse_record_still_renders(make_row: RowFactory) -> None:
    record = make_row(
        "acme",
        "r-1",
        attributions=[],
        counterfactual_status="not_found",
        predicted_class=None,
        source=None,
    )
    html = render_html(Reconstruction(record, 7, datetime(2024, 6, 1, tzinfo=UTC), []))
    assert "No attributions were recorded" in html
    assert "not_found" in html
    assert "data:image/png" not in html


def test_a_text_row_highlights_its_tokens_in_the_text(tmp_path: Path, make_row: RowFactory) -> None:
    from tests.browser import dump_dom, require_chromium

    text = "the <b>great</b> food was awful"
    tokens = [
        {"token": "great", "value": 1.2, "start": 7, "end": 12, "token_id": 5},
        {"token": "food", "value": 0.1, "start": 17, "end": 21, "token_id": 6},
        {"token": "awful", "value": -2.0, "start": 26, "end": 31, "token_id": 7},
    ]
    record = {
        **make_row("acme", "r-text", attributions=[], stability=None),
        "token_attributions": tokens,
        "input_text": text,
        "explained_output": "logit",
        "model_kind": "hf-text",
    }
    html = render_html(Reconstruction(record, 7, datetime(2024, 6, 1, tzinfo=UTC), []))
    marks = re.findall(r"<mark class=tok [^>]*>([^<]*)</mark>", html)
    assert marks == ["great", "food", "awful"]
    assert "&lt;b&gt;" in html and "<b>great" not in html  # the text is data, escaped
    assert "the logit of" in html
    # The strongest token is the most saturated, in the colour of its sign.
    alphas = [float(a) for a in re.findall(r"rgba\(\d+,\d+,\d+,([0-9.]+)\)", html)]
    assert alphas[2] == max(alphas) and "rgba(28,126,214" in html.split("awful</mark>")[0][-200:]
    # A real browser shows the highlighted text.
    require_chromium()
    page = tmp_path / "text.html"
    page.write_text(html, encoding="utf-8")
    dom = dump_dom(page.as_uri())
    assert 'data-value="-2"' in dom and ">awful</mark>" in dom
