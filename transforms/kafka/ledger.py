"""Offset bookkeeping: which offsets fell into which window, and how far commits may go."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple


class OffsetLedger(NamedTuple):
    """Which offsets of each partition one bundle put in one window (its end, epoch ms)."""

    topic: str
    entries: tuple[tuple[int, int, tuple[tuple[int, int], ...]], ...]  # (end_ms, part, ranges)


def merge_ranges(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, merged inclusive offset ranges ([0, 4] and [5, 9] become [0, 9])."""
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def advance_frontier(
    frontier: int, done: list[tuple[int, int]], finished: dict[int, int]
) -> tuple[int, list[tuple[int, int]], dict[int, int]]:
    """Move a partition's commit frontier over the finished offsets contiguous with it.

    Args:
      frontier: the first offset not yet known to be durable.
      done: merged inclusive ranges of offsets whose windows are finished.
      finished: finished window end (ms) -> the highest offset it owns in this partition.

    Returns the new frontier, the ranges still beyond it, and the finished windows that still
    own offsets at or after it (the offset commit's metadata; module docstring, 3.).
    """
    while done and done[0][0] <= frontier:
        frontier = max(frontier, done[0][1] + 1)
        done = done[1:]
    return frontier, done, {end: hi for end, hi in finished.items() if hi >= frontier}
