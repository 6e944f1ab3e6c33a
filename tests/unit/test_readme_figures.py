"""The README's figures are the committed benchmark files' figures: rendered, never typed."""

from __future__ import annotations

import re
from pathlib import Path

from bench.figures import BEGIN, END, README, render

# A measured quantity: a number followed by a rate, a latency or a size unit.
MEASURED = re.compile(
    r"\b\d[\d,.]*\s?(?:k\s)?(?:rows|docs|documents|events|queries|records|requests|req)/s\b"
    r"|\b\d[\d,.]*\s?(?:ms|GB|MB|GiB|MiB)\b"
    r"|\b\d[\d,.]*x (?:faster|captum|shap|dice)"
)


def test_the_readme_block_is_what_the_result_files_say() -> None:
    text = README.read_text()
    start, end = text.index(BEGIN), text.index(END) + len(END)
    assert text[start:end] == render(), "run `python -m bench.figures` and commit README.md"


def test_no_measured_figure_is_typed_outside_the_generated_block() -> None:
    text = README.read_text()
    outside = text[: text.index(BEGIN)] + text[text.index(END) :]
    typed, fenced = [], False
    for number, line in enumerate(outside.splitlines(), start=1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced and (match := MEASURED.search(line)):
            typed.append(f"{number}: {match.group(0)!r} in {line.strip()[:80]!r}")
    assert not typed, "figures typed in README.md (render them from bench/results):\n" + "\n".join(
        typed
    )


def test_a_figure_without_a_file_reads_not_measured(tmp_path: Path) -> None:
    rendered = render(tmp_path)  # an empty results folder
    assert "not measured" in rendered and not re.search(r"\|\s*\d", rendered)
