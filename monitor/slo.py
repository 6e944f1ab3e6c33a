"""SLOs evaluated with multi-window, multi-burn-rate alerts (Google SRE workbook, ch. 5).

Each SLO turns a day (or window) of a model version into good and total events:
- latency_p99_s: explanations committed within the bound (read off the latency histogram) of
  those committed; target 99%, so "p99 <= bound" holds exactly when the SLO does;
- error_rate: sampled records explained (not dead-lettered) of those sampled; target 1 - max;
- coverage and drift_ndcg: time slices, good when coverage >= min / when no drift alert fired.
The burn rate over a window is (bad / total in the window) / (1 - target); an alert fires when
both the long and the short window of a pair burn at least the pair's rate. A slice belongs to
a window when its end falls inside it, so windows shorter than a batch day see the latest day.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from whylake.monitor.config import BurnWindow, Slo


@dataclass(frozen=True)
class SliceEvents:
    """One slice's good and total events for one SLO, and when the slice ended."""

    end: datetime
    good: float
    total: float


@dataclass(frozen=True)
class BurnRate:
    """The burn rate of one SLO over one window ending at `at`."""

    slo: str
    window: timedelta
    at: datetime
    bad: float
    total: float
    rate: float | None  # None: no events in the window


@dataclass(frozen=True)
class BurnAlert:
    """A window pair that fired: both burn rates reached `window.burn`."""

    slo: Slo
    window: BurnWindow
    long: BurnRate
    short: BurnRate


def burn_rate(slo: Slo, events: Sequence[SliceEvents], at: datetime, window: timedelta) -> BurnRate:
    """(bad / total) / budget over the slices that ended in (at - window, at]."""
    inside = [e for e in events if at - window < e.end <= at]
    total = sum(e.total for e in inside)
    bad = sum(e.total - e.good for e in inside)
    rate = (bad / total) / slo.budget if total > 0 else None
    return BurnRate(slo.name, window, at, bad, total, rate)


def evaluate_burn(
    slo: Slo, events: Sequence[SliceEvents], at: datetime, windows: Sequence[BurnWindow]
) -> tuple[list[BurnRate], BurnAlert | None]:
    """Every window's burn rate at `at`, and the first (most severe) pair that fires."""
    rates: list[BurnRate] = []
    fired: BurnAlert | None = None
    for pair in windows:
        long = burn_rate(slo, events, at, pair.long)
        short = burn_rate(slo, events, at, pair.short)
        rates += [long, short]
        burning = all(r.rate is not None and r.rate >= pair.burn for r in (long, short))
        if burning and fired is None:
            fired = BurnAlert(slo, pair, long, short)
    return rates, fired
