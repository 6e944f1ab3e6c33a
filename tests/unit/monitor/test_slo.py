"""Monitoring settings validate themselves; burn rates and window pairs as the SRE workbook has."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
import yaml

from whylake.monitor.config import (
    default_monitor_file,
    load_monitor_config,
    parse_cohort,
    parse_monitor_config,
)
from whylake.monitor.drift import Explained
from whylake.monitor.evaluate import cohort_mask
from whylake.monitor.slo import SliceEvents, burn_rate, evaluate_burn
from whylake.schemas.errors import ConfigError

T0 = datetime(2026, 11, 21, tzinfo=UTC)


def _doc(**defaults: Any) -> dict[str, Any]:
    """The shipped settings with `defaults` changed (an SLO change keeps the other SLOs)."""
    doc: dict[str, Any] = yaml.safe_load(default_monitor_file().read_text())
    for key, value in defaults.items():
        if key == "slos":
            doc["defaults"]["slos"].update(value)
        else:
            doc["defaults"][key] = value
    return doc


def test_the_shipped_settings_load_and_tenants_override_one_key() -> None:
    doc = _doc()
    doc["tenants"] = {"globex": {"slos": {"drift_ndcg": {"min": 0.8}}}}
    config = parse_monitor_config(doc)
    globex, other = config.for_tenant("globex"), config.for_tenant("acme")
    assert globex.slo("drift_ndcg").bound == 0.8 and globex.drift.ndcg_threshold == 0.8
    assert other.drift.ndcg_threshold == 0.9
    assert globex.slo("coverage") == other.slo("coverage")  # untouched keys are inherited
    assert config.digest("globex") != config.digest("acme")
    assert [w.label for w in other.burn_windows] == ["1h/5m", "6h/30m", "3d/6h"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"nonsense": 1}, "unknown keys"),
        ({"slos": {"latency_p99_s": {"max": 1000}}}, "latency histogram bounds"),
        ({"slos": {"error_rate": {"max": 2}}}, "error_rate.max"),
        ({"burn_windows": [{"long": "5m", "short": "1h", "burn": 2}]}, "shorter than the long"),
        ({"burn_windows": [{"long": "1 hour", "short": "5m", "burn": 2}]}, "duration"),
        ({"reference": {"since": "2026-11-07", "until": "2026-11-01"}}, "before since"),
        ({"drift": {"level": 0}}, "level"),
        ({"cohorts": ["bmi ~ 3"]}, "cohort"),
    ],
)
def test_bad_settings_are_refused_with_what_is_wrong(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_monitor_config(_doc(**change))


def test_cohorts_parse() -> None:
    assert parse_cohort("flag=disputed").flag == "disputed"
    cut = parse_cohort("bmi >= 30")
    assert (cut.feature, cut.below, cut.value) == ("bmi", False, 30.0)
    assert parse_cohort("age<40").below


def test_burn_rate_is_the_bad_share_over_the_budget_inside_the_window() -> None:
    slo = load_monitor_config().defaults.slo("error_rate")  # max 1%: budget 0.01
    events = [
        SliceEvents(T0 + timedelta(hours=h), good=100 - bad, total=100)
        for h, bad in ((1, 0), (2, 0), (3, 5), (4, 1))
    ]
    at = T0 + timedelta(hours=4)
    # (t - 1h, t]: only the last slice: 1% bad = 1x the budget.
    assert burn_rate(slo, events, at, timedelta(hours=1)).rate == pytest.approx(1.0)
    # (t - 2h, t]: 6 of 200 bad = 3%: 3x.
    assert burn_rate(slo, events, at, timedelta(hours=2)).rate == pytest.approx(3.0)
    assert burn_rate(slo, [], at, timedelta(hours=1)).rate is None


def test_a_pair_fires_only_when_both_windows_burn() -> None:
    settings = load_monitor_config().defaults
    slo = settings.slo("error_rate")
    at = T0 + timedelta(days=1)
    # A spike in the last 5 minutes only: the short window burns, the hour does not.
    spike = [SliceEvents(at - timedelta(minutes=m), 100, 100) for m in range(10, 60, 5)]
    spike.append(SliceEvents(at, 0, 100))
    _, fired = evaluate_burn(slo, spike, at, settings.burn_windows)
    assert fired is None or fired.window.label != "1h/5m"
    # A whole bad hour: both burn >= 14.4 (100% bad = 100x): the page pair fires first.
    bad = [SliceEvents(at - timedelta(minutes=m), 0, 100) for m in range(0, 60, 5)]
    rates, fired = evaluate_burn(slo, bad, at, settings.burn_windows)
    assert fired is not None and fired.window.label == "1h/5m" and fired.window.severity == "page"
    assert len(rates) == 2 * len(settings.burn_windows)


def test_a_trust_tier_cohort_holds_the_rows_of_that_tier_and_weighs_them() -> None:
    cohort = parse_cohort("tier=gold")
    assert (cohort.tier, cohort.flag, cohort.feature) == ("gold", None, None)
    attributions = np.array([[1.0, -2.0], [5.0, 5.0], [7.0, 7.0], [-3.0, 0.0]])
    rows = Explained(
        ("a", "b"),
        attributions,
        np.zeros((4, 2)),
        np.array([0.5, 1.0, 1.0, 0.25]),
        request_ids=("r0", "r1", "r2", "r3"),
        trust_tiers=("gold", "silver", None, "gold"),  # r2: the producer sent no tier
    )
    mask = cohort_mask(rows, cohort)
    assert mask.tolist() == [True, False, False, True]
    gold = rows.select(mask)
    assert gold.request_ids == ("r0", "r3") and gold.trust_tiers == ("gold", "gold")
    # A domain of unknown size: the ratio (Hajek) estimator, sum(w |a|) / sum(w), w = 1 / p.
    values = dict(zip(gold.importance().features, gold.importance().value, strict=True))
    assert values["a"] == pytest.approx((2 * 1 + 4 * 3) / 6)
    assert values["b"] == pytest.approx((2 * 2 + 4 * 0) / 6)
    assert not cohort_mask(rows, parse_cohort("tier=bronze")).any()
