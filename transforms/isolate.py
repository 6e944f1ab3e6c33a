"""Poison isolation: a batch that raises is split until each failing record stands alone.

One bad record must never take its neighbours with it: a feature of 1e308 (finite, but inf in
float32) failed its whole explain batch, and 324 good records went to the dead letters with
it. `isolate_failures` runs a batch function once; only when it raises does it bisect the batch
and rerun the halves, so a batch with one poison record costs about 2 log2(n) extra calls on
ever smaller halves (~3x the work of the batch in all), and the good records come out exactly
as the same function computes them for any batch they are in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from apache_beam.metrics import Metrics

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Isolated(Generic[T, R]):
    """What survived a batch (in input order of the parts that ran) and what failed, alone."""

    results: list[R]
    failures: list[tuple[T, BaseException]]
    calls: int


def isolate_failures(
    items: Sequence[T], run: Callable[[Sequence[T]], list[R]], *, namespace: str = "whylake"
) -> Isolated[T, R]:
    """`run(items)`, or when it raises, `run` on halves until every failing item is alone.

    Args:
        items: the batch.
        run: a function of a batch that either returns its results or raises; it must not
            depend on which other items share its batch for the results to be the same (the
            explainers are row-wise: each row's numbers come from that row alone).
        namespace: where the Beam counter `batches_bisected` is counted.

    Returns:
        The results of every part that ran through, each item that raised on its own with its
        exception, and how many calls it took. An exception that is not data dependent (out
        of memory, a lost device) is retried on smaller parts too, which is what it needs.
    """
    results: list[R] = []
    failures: list[tuple[T, BaseException]] = []
    calls = 0
    pending: list[Sequence[T]] = [items]
    while pending:
        part = pending.pop()
        if not part:
            continue
        calls += 1
        try:
            results.extend(run(part))
        except Exception as exc:  # noqa: BLE001 - the point is to find who raised
            if len(part) == 1:
                failures.append((part[0], exc))
                continue
            if calls == 1:
                Metrics.counter(namespace, "batches_bisected").inc()
            middle = len(part) // 2
            pending.extend((part[middle:], part[:middle]))  # first half runs first
    return Isolated(results, failures, calls)


def explain_isolating_failures(
    rows: Sequence[dict[str, Any]], explain: Callable[[Sequence[dict[str, Any]]], list[R]]
) -> list[R | dict[str, Any]]:
    """`explain(rows)`, bisected when it raises: good rows are explained, bad ones fail alone.

    The explainers are row-wise (a row's attributions, SHAP values and counterfactuals come from
    that row, its baseline and the model's fixed reference rows alone), so a good row explained
    in a half-batch gets the numbers it gets in any batch (up to float32 rounding of BLAS tiles,
    see `model_calls.fixed_block`), and its explanation id is the same by construction.

    Returns:
        The explanation records of the rows that went through, then one `{"_error", "_row"}`
        per row that raised when explained on its own (the explain stage dead-letters those).
    """
    isolated = isolate_failures(rows, explain, namespace="whylake_explain")
    failed = [{"_error": error, "_row": row} for row, error in isolated.failures]
    return [*isolated.results, *failed]
