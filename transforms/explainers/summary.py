"""One plain-language sentence that says why a prediction came out as it did."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Three reasons are what a reader keeps in mind; more turns the sentence into a table.
_TOP = 3


def summarize(
    feature_names: Sequence[str],
    values: np.ndarray,
    inputs: np.ndarray,
    prediction: float,
    base_value: float,
    output_name: str,
    stability: float | None = None,
) -> str:
    """One sentence naming the features that moved the prediction most, and which way.

    Args:
        feature_names: the ``d`` feature names in model order.
        values: ``(d,)`` attributions for one row (output units).
        inputs: ``(d,)`` that row's raw input values.
        prediction: the model output for the row.
        base_value: the reference output the attributions are measured from.
        output_name: what the output means, e.g. ``"probability of default"``.
        stability: optional score in [0, 1] from :func:`attribution_stability`.

    Returns:
        A single sentence ending with a full stop.
    """
    names = list(feature_names)
    vals = np.asarray(values, dtype=np.float64).reshape(-1)
    xs = np.asarray(inputs, dtype=np.float64).reshape(-1)
    if not (len(names) == vals.shape[0] == xs.shape[0]):
        raise ValueError(
            f"{len(names)} feature names, {vals.shape[0]} values and {xs.shape[0]} inputs: "
            "pass one row with one entry per feature"
        )
    if stability is not None and not 0.0 <= stability <= 1.0:
        raise ValueError(f"stability must be in [0, 1], got {stability}")
    delta = float(prediction) - float(base_value)
    head = f"The predicted {output_name} = {_num(prediction)}"
    if delta > 0:
        head += f" is {_num(delta)} above the base value of {_num(base_value)}"
    elif delta < 0:
        head += f" is {_num(-delta)} below the base value of {_num(base_value)}"
    else:
        head += " equals the base value"
    # Stable order: largest magnitude first, ties by feature order, so the sentence is replayable.
    order = np.lexsort((np.arange(vals.shape[0]), -np.abs(vals)))
    reasons = [
        f"{names[i]} = {_num(xs[i], 4)} {'raised' if vals[i] > 0 else 'lowered'} it by "
        f"{_num(abs(vals[i]))}"
        for i in order[:_TOP]
        if vals[i] != 0.0
    ]
    if reasons:
        body = f"{head}, mainly because {_join(reasons)}"
    else:
        body = f"{head}, and no feature has a non-zero attribution"
    if stability is not None:
        body += f" ({_stability_words(stability)}, stability {stability:.2f})"
    return body + "."


def _num(value: float, digits: int = 3) -> str:
    """``digits`` significant figures (whole numbers from 1,000); scientific only when extreme."""
    v = float(value)
    if v != 0.0 and (abs(v) >= 1e6 or abs(v) < 1e-3):
        return f"{v:.{digits - 1}e}"
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.{digits}g}"


def _join(parts: list[str]) -> str:
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def _stability_words(stability: float) -> str:
    if stability >= 0.9:
        return "this ranking is stable across baselines"
    if stability >= 0.6:
        return "this ranking is moderately stable across baselines"
    return "this ranking changes with the baseline, so read it with caution"
