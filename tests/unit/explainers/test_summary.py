"""The plain-language sentence: one sentence, top features, direction."""

from __future__ import annotations

import re

import numpy as np
import pytest

from whylake.transforms.explainers import summarize

NAMES = ["age", "income", "debt_ratio", "late_payments", "tenure"]


def _sentences(text: str) -> list[str]:
    # A sentence ends at . ! or ? followed by a space or the end; decimals like 0.82 do not.
    return [s for s in re.split(r"(?<=[.!?])(?:\s+|$)", text) if s]


def test_one_sentence_naming_top_features_in_order_with_direction() -> None:
    values = np.array([0.01, -0.20, 0.05, 0.30, 0.0])
    inputs = np.array([41.0, 52_000.0, 0.35, 3.0, 7.0])
    text = summarize(NAMES, values, inputs, 0.82, 0.66, "probability of default")
    assert len(_sentences(text)) == 1 and text.endswith(".")
    order = [text.index(name) for name in ("late_payments", "income", "debt_ratio")]
    assert order == sorted(order)  # largest |attribution| first
    assert "age" not in text and "tenure" not in text  # only the top three
    assert re.search(r"late_payments = 3 raised it by 0\.3\b", text)
    assert re.search(r"income = 52,000 lowered it by 0\.2\b", text)
    assert "above the base value" in text and "probability of default" in text


def test_below_base_and_stability_clause() -> None:
    values = np.array([-0.3, 0.1, 0.0, 0.0, 0.0])
    text = summarize(NAMES, values, np.ones(5), 0.2, 0.4, "score", stability=0.4)
    assert len(_sentences(text)) == 1
    assert "below the base value" in text
    assert text.index("age") < text.index("income")
    assert "age = 1 lowered it" in text and "income = 1 raised it" in text
    assert "stability 0.40" in text and "caution" in text


def test_all_zero_attributions_still_one_sentence() -> None:
    text = summarize(NAMES, np.zeros(5), np.ones(5), 0.5, 0.5, "score")
    assert len(_sentences(text)) == 1 and "equals the base value" in text


def test_mismatched_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="5 feature names, 4 values"):
        summarize(NAMES, np.zeros(4), np.zeros(5), 0.5, 0.5, "score")
    with pytest.raises(ValueError, match="stability"):
        summarize(NAMES, np.zeros(5), np.zeros(5), 0.5, 0.5, "score", stability=1.5)
