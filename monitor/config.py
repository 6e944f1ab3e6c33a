"""Per-tenant monitoring settings (SLOs, drift, burn windows) from YAML, validated and resolved."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml

from whylake.monitor.drift import DriftConfig
from whylake.schemas.errors import ConfigError
from whylake.schemas.metrics import LATENCY_BOUNDS_S

SLO_NAMES = ("coverage", "latency_p99_s", "error_rate", "drift_ndcg")
_TOP_KEYS = ("version", "defaults", "tenants")
_TENANT_KEYS = (
    "reference",
    "drift",
    "cohorts",
    "slos",
    "period",
    "burn_windows",
)
_DRIFT_KEYS = (
    "ndcg_threshold",
    "attribution_threshold",
    "input_threshold",
    "level",
    "bins",
    "draws",
    "min_rows",
    "seed",
)
_DURATION = re.compile(r"^(\d+)(s|m|h|d)$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_COHORT = re.compile(
    r"^\s*(?:flag\s*=\s*(?P<flag>\S+)|tier\s*=\s*(?P<tier>\S+)"
    r"|(?P<feature>[^<>=\s]+)\s*(?P<op><|>=)\s*(?P<value>\S+))\s*$"
)


def parse_duration(text: object, what: str) -> timedelta:
    """'5m', '1h', '3d' -> a timedelta; anything else is a ConfigError naming `what`."""
    match = _DURATION.match(str(text)) if isinstance(text, str) else None
    if not match or int(match.group(1)) == 0:
        raise ConfigError(f"{what} must be a duration like 5m, 1h or 3d, got {text!r}")
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def _number(value: object, what: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{what} must be a number, got {value!r}")
    if not low <= value <= high:
        raise ConfigError(f"{what} must be in [{low}, {high}], got {value!r}")
    return float(value)


def _keys(given: object, allowed: tuple[str, ...], what: str) -> Mapping[str, Any]:
    if not isinstance(given, Mapping):
        raise ConfigError(f"{what} must be a mapping, got {given!r}")
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise ConfigError(f"{what}: unknown keys {unknown} (allowed: {list(allowed)})")
    return given


@dataclass(frozen=True)
class BurnWindow:
    """A multi-window burn-rate alert: both windows must burn at least `burn` x the budget."""

    long: timedelta
    short: timedelta
    burn: float
    severity: str

    @property
    def label(self) -> str:
        return f"{format_window(self.long)}/{format_window(self.short)}"


def format_window(window: timedelta) -> str:
    seconds = int(window.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@dataclass(frozen=True)
class Slo:
    """One SLO: the SLI it reads, its bound, and the share of good events (or slices) it wants."""

    name: str
    bound: float  # coverage / drift_ndcg: min; latency_p99_s / error_rate: max
    target: float  # the good share; the error budget is 1 - target

    @property
    def budget(self) -> float:
        return 1.0 - self.target


@dataclass(frozen=True)
class Cohort:
    """A subset of a slice's explained rows: those with a flag, of a producer's trust tier, or
    with a feature on one side of a cut."""

    spec: str
    flag: str | None = None
    tier: str | None = None  # the producer's trust_tier, as sent
    feature: str | None = None
    below: bool = False  # feature < value (else feature >= value)
    value: float = 0.0


def parse_cohort(spec: object) -> Cohort:
    """'flag=disputed', 'tier=gold', 'bmi >= 30' or 'age < 40' -> a Cohort."""
    match = _COHORT.match(spec) if isinstance(spec, str) else None
    if not match:
        raise ConfigError(
            f"cohort {spec!r} must be 'flag=<flag>', 'tier=<trust tier>', "
            "'<feature> < <number>' or '<feature> >= <number>'"
        )
    if match.group("flag"):
        return Cohort(spec=str(spec).strip(), flag=match.group("flag"))
    if match.group("tier"):
        return Cohort(spec=str(spec).strip(), tier=match.group("tier"))
    try:
        value = float(match.group("value"))
    except ValueError as exc:
        raise ConfigError(f"cohort {spec!r}: {match.group('value')!r} is not a number") from exc
    return Cohort(
        spec=str(spec).strip(),
        feature=match.group("feature"),
        below=match.group("op") == "<",
        value=value,
    )


@dataclass(frozen=True)
class TenantMonitoring:
    """One tenant's resolved monitoring settings."""

    reference: str | tuple[date, date]  # "registration" or a pinned (first, last) day
    drift: DriftConfig
    cohorts: tuple[Cohort, ...]
    slos: tuple[Slo, ...]
    period: timedelta
    burn_windows: tuple[BurnWindow, ...]

    def slo(self, name: str) -> Slo:
        return next(s for s in self.slos if s.name == name)

    def describe(self) -> dict[str, Any]:
        """JSON-ready settings (what an alert's config hash covers)."""
        return json.loads(json.dumps(asdict(self), default=str, sort_keys=True))  # type: ignore[no-any-return]


@dataclass(frozen=True)
class MonitorConfig:
    """Every tenant's monitoring settings: defaults plus per-tenant overrides."""

    version: str
    defaults: TenantMonitoring
    tenants: Mapping[str, TenantMonitoring] = field(default_factory=dict)
    source: str = "default"

    def for_tenant(self, tenant: str) -> TenantMonitoring:
        return self.tenants.get(tenant, self.defaults)

    def digest(self, tenant: str) -> str:
        """sha256 of a tenant's resolved settings: alerts name the exact settings they used."""
        text = json.dumps(
            {"version": self.version, **self.for_tenant(tenant).describe()}, sort_keys=True
        )
        return hashlib.sha256(text.encode()).hexdigest()


def _reference(value: object) -> str | tuple[date, date]:
    if value == "registration":
        return "registration"
    given = _keys(value, ("since", "until"), "reference")
    try:
        first = date.fromisoformat(str(given["since"]))
        last = date.fromisoformat(str(given.get("until", given["since"])))
    except (KeyError, ValueError) as exc:
        raise ConfigError(
            f"reference must be 'registration' or {{since: YYYY-MM-DD, until: YYYY-MM-DD}}, "
            f"got {value!r}"
        ) from exc
    if last < first:
        raise ConfigError(f"reference: until {last} is before since {first}")
    return (first, last)


def _slos(given: Mapping[str, Any]) -> tuple[Slo, ...]:
    _keys(given, SLO_NAMES, "slos")
    out = []
    for name in SLO_NAMES:
        spec = _keys(given.get(name, {}), ("min", "max", "target"), f"slos.{name}")
        if name in ("coverage", "drift_ndcg"):
            bound = _number(spec.get("min"), f"slos.{name}.min", 0.0, 1.0)
            target = _number(spec.get("target", 0.9), f"slos.{name}.target", 0.0, 0.9999)
        elif name == "latency_p99_s":
            bound = _number(spec.get("max"), "slos.latency_p99_s.max", 0.0, math.inf)
            if bound not in LATENCY_BOUNDS_S:
                raise ConfigError(
                    f"slos.latency_p99_s.max must be one of the latency histogram bounds "
                    f"{list(LATENCY_BOUNDS_S)} (seconds), got {bound:g}"
                )
            target = 0.99
        else:
            bound = _number(spec.get("max"), "slos.error_rate.max", 1e-6, 0.9999)
            target = 1.0 - bound
        out.append(Slo(name, bound, target))
    return tuple(out)


def _tenant(given: Mapping[str, Any], what: str) -> TenantMonitoring:
    _keys(given, _TENANT_KEYS, what)
    drift_spec = dict(_keys(given.get("drift", {}), _DRIFT_KEYS, f"{what}.drift"))
    slos = _slos(given.get("slos", {}))
    # The drift SLO's bound is the nDCG threshold: one number per tenant, not two.
    drift_spec["ndcg_threshold"] = next(s.bound for s in slos if s.name == "drift_ndcg")
    try:
        drift = DriftConfig(**drift_spec)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what}.drift: {exc}") from exc
    windows = []
    for i, spec in enumerate(given.get("burn_windows", [])):
        w = _keys(spec, ("long", "short", "burn", "severity"), f"{what}.burn_windows[{i}]")
        window = BurnWindow(
            parse_duration(w.get("long"), f"burn_windows[{i}].long"),
            parse_duration(w.get("short"), f"burn_windows[{i}].short"),
            _number(w.get("burn"), f"burn_windows[{i}].burn", 0.0, 1e6),
            str(w.get("severity", "page")),
        )
        if window.short >= window.long:
            raise ConfigError(f"burn_windows[{i}]: the short window must be shorter than the long")
        windows.append(window)
    if not windows:
        raise ConfigError(f"{what}.burn_windows must list at least one window pair")
    cohorts = given.get("cohorts", [])
    if not isinstance(cohorts, list):
        raise ConfigError(f"{what}.cohorts must be a list, got {cohorts!r}")
    return TenantMonitoring(
        reference=_reference(given.get("reference", "registration")),
        drift=drift,
        cohorts=tuple(parse_cohort(c) for c in cohorts),
        slos=slos,
        period=parse_duration(given.get("period", "28d"), f"{what}.period"),
        burn_windows=tuple(windows),
    )


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_monitor_config(document: object, source: str = "<inline>") -> MonitorConfig:
    """Validate a parsed YAML document into a MonitorConfig."""
    doc = _keys(document, _TOP_KEYS, source)
    version = doc.get("version")
    if not isinstance(version, str) or not version:
        raise ConfigError(f"{source}: version must be a non-empty string")
    defaults = _keys(doc.get("defaults", {}), _TENANT_KEYS, "defaults")
    tenants_doc = doc.get("tenants") or {}
    if not isinstance(tenants_doc, Mapping):
        raise ConfigError(f"{source}: tenants must be a mapping of tenant -> overrides")
    tenants = {
        str(t): _tenant(_merge(defaults, _keys(o or {}, _TENANT_KEYS, f"tenants.{t}")), t)
        for t, o in tenants_doc.items()
    }
    return MonitorConfig(version, _tenant(defaults, "defaults"), tenants, source)


def default_monitor_file() -> Path:
    """The shipped settings (monitor/default.yaml)."""
    return Path(str(files("whylake.monitor") / "default.yaml"))


def load_monitor_config(path: str | os.PathLike[str] | None = None) -> MonitorConfig:
    """Load and validate a monitoring YAML file (the shipped one when `path` is None)."""
    target = Path(path) if path is not None else default_monitor_file()
    try:
        document = yaml.safe_load(target.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read the monitoring settings {target}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{target} is not valid YAML: {exc}") from exc
    return parse_monitor_config(document, str(target))
