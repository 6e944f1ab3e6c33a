"""Property-based fuzzing of the batch job: damaged copies of valid records, JSONL and Parquet.

Hypothesis (seeded and derandomized, so CI sees the same records every run) generates at least
10,000 damaged records from the demo's own valid ones: dropped, null, mistyped, non-finite,
huge, empty, over-long, unicode, far-past and far-future times, hostile ids, wrong containers,
not JSON. Each is first checked on its own against the reader's contract (only reasoned
rejections, no other exception: this part shrinks to a minimal record on failure); then all
of them, with the undamaged records, go through the real batch job once. The properties:

- the job does not crash;
- every damaged record is either explained or dead-lettered, alone, with its reason, as its
  damage says it must be (some damages may go either way: a finite but huge feature may be
  explained or refused by the output check);
- every undamaged record is explained;
- the counts balance, read from the tables: read = invalid + valid, sampled = explained +
  failed, dead-letter rows = invalid + failed, explanation rows = committed.

`WHYLAKE_FUZZ_SEED=<n>` explores other records (random, not derandomized) on a developer's
machine; CI runs the fixed profile.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from tests.integration.conftest import DAY, TEST_HASH_KEY
from whylake.jobs.batch_job import run_batch
from whylake.jobs.demo_data import tenant_table
from whylake.jobs.demo_models import DEMO_TENANTS, register_demo_models
from whylake.lake.catalog import DEAD_LETTERS, EXPLANATIONS, RUNS, CatalogConfig, open_catalog
from whylake.pipelines.configs import BatchJobConfig, StoreConfig
from whylake.registry.store import ModelRegistry
from whylake.schemas.errors import InvalidRecordError
from whylake.schemas.inference import INFERENCE_ARROW_SCHEMA
from whylake.schemas.limits import RecordLimits, limit_violations
from whylake.transforms.read import coerce_json_row
from whylake.transforms.sampling.policy import parse_policies

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

DAMAGED = 10_000  # at least this many damaged records per run
PER_TENANT = 300  # valid base records per tenant, all of them also sent undamaged
EXPLORE = os.environ.get("WHYLAKE_FUZZ_SEED")
NOW = datetime.now(UTC)
LOOSE = pa.schema([f.with_nullable(True) for f in INFERENCE_ARROW_SCHEMA])
REQUIRED = ("tenant_id", "request_id", "event_ts", "model_id", "model_version", "features", "score")
OPTIONAL = (
    "predicted_class",
    "confidence",
    "label",
    "user_id",
    "trust_tier",
    "flags",
    "risk_score",
)
ACCEPT, REJECT, EITHER = "accept", "reject", "either"
# Every record is explained: a budget no day reaches, so "valid" means "explained or failed".
POLICIES = parse_policies(
    {
        "version": "fuzz",
        "seed": 7,
        "defaults": {"sampler": "reservoir", "weight": "uniform", "budget_per_day": 10**9},
    }
)


@dataclass
class Case:
    """One record sent to the job: where it goes, what was done to it, what must happen."""

    kind: str
    expect: str
    fmt: str = "jsonl"  # jsonl | parquet | parquet:<file kind>
    line: bytes | None = None  # JSONL
    row: dict[str, Any] | None = None  # Parquet (event_ts as int64 microseconds)
    number: int = -1
    outcomes: list[str] = field(default_factory=list)


# -- damages --------------------------------------------------------------------------------

_text = st.text(max_size=12)
_weird_text = st.sampled_from(
    ["", " ", "東京", "🎉" * 3, "e\u0301", "\u202eevil", "a\x00b", "tab\there", "ZWJ\u200d"]
)
_hostile_tenant = st.sampled_from(
    ["../globex", "acme/../globex", "ACME", "acme*", "acme,globex", "a" * 65, "a" * 5000, ".", ""]
)
_hostile_model = st.sampled_from(["../globex/progression", "..", ".", "a/b", "m" * 129, "", "\x00"])
_not_a_number = st.sampled_from(["high", "", "1,5", [], {}, True, None, [1.0]])
# (event time, expected in JSON, expected in Parquet: Parquet times carry no zone text, a
# time without a zone is read as UTC there)
_far_times = st.sampled_from(
    [
        ("9999-12-31T23:59:59Z", REJECT, REJECT),
        ("0001-01-01T00:00:00Z", REJECT, REJECT),
        ("1900-01-01T00:00:00Z", REJECT, REJECT),
        ((NOW + timedelta(days=3)).isoformat(), REJECT, REJECT),
        ((NOW - timedelta(days=3650 + 5)).isoformat(), REJECT, REJECT),
        ((NOW - timedelta(days=400)).isoformat(), ACCEPT, ACCEPT),
        ("2026-11-21 10:00:00+05:30", ACCEPT, ACCEPT),
        ("2026-11-21T10:00:00", REJECT, ACCEPT),
        ("2026-11-21", REJECT, ACCEPT),
        ("not a time", REJECT, REJECT),
        ("2026-13-45T99:00:00Z", REJECT, REJECT),
    ]
)
_wrong_optional = st.sampled_from(
    [
        ("user_id", ["a", 1], REJECT),
        ("user_id", {"k": "v"}, REJECT),
        ("user_id", True, REJECT),
        ("user_id", "nan", ACCEPT),
        ("flags", "flagged", REJECT),
        ("flags", [1, 2], REJECT),
        ("flags", {"k": "v"}, REJECT),
        ("confidence", "0.9", REJECT),
        ("confidence", True, REJECT),
        ("label", [None], REJECT),
        ("label", 3.5, ACCEPT),
    ]
)


def _feature_names(base: dict[str, Any]) -> list[str]:
    return list(base["features"])


@st.composite
def _value_damage(
    draw: st.DrawFn, base: dict[str, Any], parquet: bool
) -> tuple[dict[str, Any], str, str]:
    """Damages a record's values can carry in JSON and Parquet alike."""
    record = json.loads(json.dumps(base))
    names = _feature_names(base)
    kind = draw(
        st.sampled_from(
            [
                "null_required",
                "null_optional",
                "nonfinite_feature",
                "huge_feature",
                "big_but_float32",
                "empty_id",
                "empty_features",
                "overlong_id",
                "overlong_text",
                "unicode_request_id",
                "unicode_text",
                "hostile_tenant",
                "hostile_model",
                "path_like_request_id",
                "far_time",
                "missing_feature",
                "extra_feature",
                "other_tenant",
                "score_out_of_range",
                "confidence_out_of_range",
                "unknown_trust_tier",
                "many_flags",
            ]
        )
    )
    expect = REJECT
    if kind == "null_required":
        record[draw(st.sampled_from(REQUIRED))] = None
    elif kind == "null_optional":
        record[draw(st.sampled_from(OPTIONAL))] = None
        expect = ACCEPT
    elif kind == "nonfinite_feature":
        record["features"][draw(st.sampled_from(names))] = draw(
            st.sampled_from([math.nan, math.inf, -math.inf])
        )
    elif kind == "huge_feature":
        record["features"][draw(st.sampled_from(names))] = draw(
            st.sampled_from([1e308, -1e300, 3.5e38, 1e39])
        )
    elif kind == "big_but_float32":  # finite in float32: explained, or refused by the check
        record["features"][draw(st.sampled_from(names))] = draw(st.sampled_from([3e38, -1e30]))
        expect = EITHER
    elif kind == "empty_id":
        record[draw(st.sampled_from(("tenant_id", "request_id", "model_id", "model_version")))] = ""
    elif kind == "empty_features":
        record["features"] = {}
    elif kind == "overlong_id":
        name, length = draw(
            st.sampled_from(
                [("tenant_id", 65), ("request_id", 257), ("model_id", 129), ("model_version", 65)]
            )
        )
        record[name] = "x" * draw(st.integers(length, length + 5000))
    elif kind == "overlong_text":
        record[draw(st.sampled_from(("label", "user_id", "predicted_class")))] = "y" * 1025
    elif kind == "unicode_request_id":
        record["request_id"] = draw(_weird_text) + "{marker}"
        expect = EITHER  # control characters are refused, printable unicode is kept
    elif kind == "unicode_text":
        record["label"] = draw(_weird_text) + draw(_text)
        expect = ACCEPT
    elif kind == "hostile_tenant":
        record["tenant_id"] = draw(_hostile_tenant)
    elif kind == "hostile_model":
        record[draw(st.sampled_from(("model_id", "model_version")))] = draw(_hostile_model)
    elif kind == "path_like_request_id":  # request ids are text, never paths: kept
        record["request_id"] = "../../etc/passwd {marker}"
        expect = ACCEPT
    elif kind == "far_time":
        record["event_ts"], in_json, in_parquet = draw(_far_times)
        expect = in_parquet if parquet else in_json
    elif kind == "missing_feature":
        del record["features"][draw(st.sampled_from(names))]
    elif kind == "extra_feature":
        record["features"][draw(st.sampled_from(["zz_unused", "Ω", "x" * 200]))] = 1.5
        expect = ACCEPT
    elif kind == "other_tenant":  # a valid tenant whose registry has no such model
        others = sorted(set(DEMO_TENANTS) - {record["tenant_id"]})
        record["tenant_id"] = draw(st.sampled_from(others))
    elif kind == "score_out_of_range":
        record["score"] = draw(st.sampled_from([1e13, -1e15, math.nan, math.inf]))
    elif kind == "confidence_out_of_range":
        record["confidence"] = draw(st.sampled_from([1.7, -0.1, math.inf]))
    elif kind == "unknown_trust_tier":
        record["trust_tier"] = draw(st.sampled_from(["platinum", "GOLD", ""]))
    elif kind == "many_flags":
        record["flags"] = ["flagged"] * 65
    return record, kind, expect


@st.composite
def _json_only_damage(draw: st.DrawFn, base: dict[str, Any]) -> tuple[bytes, str, str]:
    """Damages only a text format can carry: types, containers, bytes."""
    record = json.loads(json.dumps(base))
    kind = draw(
        st.sampled_from(
            [
                "drop_required",
                "drop_optional",
                "mistype_required",
                "mistype_feature",
                "mistype_optional",
                "numeric_user_id",
                "int_too_big",
                "wrong_container",
                "not_an_object",
                "truncated",
                "garbage",
                "python_repr",
                "two_records",
                "invalid_utf8",
                "lone_surrogate",
                "bom",
                "deep_nesting",
                "duplicate_key",
            ]
        )
    )
    expect = REJECT
    line: bytes | None = None
    if kind == "drop_required":
        del record[draw(st.sampled_from(REQUIRED))]
    elif kind == "drop_optional":
        record.pop(draw(st.sampled_from(OPTIONAL)), None)
        expect = ACCEPT
    elif kind == "mistype_required":
        record[draw(st.sampled_from(REQUIRED))] = draw(_not_a_number | st.integers(-5, 5))
        expect = EITHER  # e.g. score 3 is a number, tenant_id 3 is not a string
    elif kind == "mistype_feature":
        record["features"][draw(st.sampled_from(_feature_names(base)))] = draw(_not_a_number)
    elif kind == "mistype_optional":
        name, value, expect = draw(_wrong_optional)
        record[name] = value
    elif kind == "numeric_user_id":  # user ids are often numbers: taken as text, hashed
        record["user_id"] = draw(st.integers(0, 10**12))
        expect = ACCEPT
    elif kind == "int_too_big":
        record["features"][draw(st.sampled_from(_feature_names(base)))] = 10**400
    elif kind == "wrong_container":
        line = json.dumps(draw(st.sampled_from([[record], {"record": record}]))).encode()
        # An object around the record is an object, but not a record: its fields are missing.
    elif kind == "not_an_object":
        line = json.dumps(draw(st.sampled_from(["a string", 42, None, [], 1.5]))).encode()
    elif kind == "truncated":
        text = json.dumps(record)
        line = text[: draw(st.integers(1, len(text) - 1))].encode()
    elif kind == "garbage":
        line = draw(st.binary(min_size=1, max_size=80).filter(lambda b: b"\n" not in b))
        line = b"\x01" + line  # never blank
    elif kind == "python_repr":
        line = repr(record).encode()
    elif kind == "two_records":
        line = (json.dumps(record) + " " + json.dumps(record)).encode()
    elif kind == "invalid_utf8":
        text = json.dumps(record)
        cut = draw(st.integers(1, len(text) - 1))
        line = text[:cut].encode() + b"\xff\xfe" + text[cut:].encode()
    elif kind == "lone_surrogate":
        record[draw(st.sampled_from(("label", "request_id", "user_id")))] = "x\ud800y"
    elif kind == "bom":
        line = b"\xef\xbb\xbf" + json.dumps(record).encode()
        expect = EITHER
    elif kind == "deep_nesting":  # a label 50 lists deep, or a line too deep for any parser
        record["label"] = json.loads("[" * 50 + "]" * 50)
        line = ("[" * 5_000 + "]" * 5_000).encode() if draw(st.booleans()) else None
    elif kind == "duplicate_key":
        text = json.dumps(record)
        line = (text[:-1] + ', "score": "high"}').encode()
    if line is None:
        line = json.dumps(record).encode()
    return line, kind, expect


# -- generation, with the per-record contract checked as it goes ----------------------------


def _base_records(registry: ModelRegistry) -> list[dict[str, Any]]:
    out = []
    for tenant in sorted(DEMO_TENANTS):
        table = tenant_table(registry, tenant, DAY, PER_TENANT, seed=41)
        for row in table.to_pylist():
            row["event_ts"] = row["event_ts"].isoformat()
            row["features"] = dict(row["features"])
            if isinstance(row["confidence"], float) and math.isnan(row["confidence"]):
                row["confidence"] = None
            out.append({k: v for k, v in row.items() if v is not None})
    return out


def _settings(examples: int) -> Callable[[Any], Any]:
    common = dict(
        max_examples=examples,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    if EXPLORE is None:  # CI: the same records every run
        return settings(derandomize=True, phases=[Phase.generate, Phase.shrink], **common)
    return lambda f: seed(int(EXPLORE))(settings(**common)(f))


def generate_cases(bases: list[dict[str, Any]]) -> list[Case]:
    """At least DAMAGED damaged records, each checked alone against the reader's contract."""
    cases: list[Case] = []

    @_settings(DAMAGED)
    @given(
        index=st.integers(0, len(bases) - 1),
        to_parquet=st.booleans(),
        data=st.data(),
    )
    def damage(index: int, to_parquet: bool, data: st.DataObject) -> None:
        base = bases[index]
        if to_parquet:
            record, kind, expect = data.draw(_value_damage(base, parquet=True))
            case = Case(kind, expect, fmt="parquet", row=record)
        elif data.draw(st.booleans()):
            record, kind, expect = data.draw(_value_damage(base, parquet=False))
            case = Case(kind, expect, line=json.dumps(record).encode())
        else:
            line, kind, expect = data.draw(_json_only_damage(base))
            case = Case(kind, expect, line=line)
        _check_contract_alone(case)
        cases.append(case)

    damage()
    return cases


def _check_contract_alone(case: Case) -> None:
    """A record on its own: the reader accepts it or refuses it with a reason, nothing else."""
    if case.line is None:
        return
    try:
        row = coerce_json_row(case.line.decode("utf-8"))
    except (InvalidRecordError, ValueError):
        return  # refused with a reason (JSON and time parse errors are ValueErrors)
    batch = pa.RecordBatch.from_pylist([row], schema=INFERENCE_ARROW_SCHEMA)
    limit_violations(batch, RecordLimits())  # must not raise on anything the reader took


# -- writing the inputs ---------------------------------------------------------------------


_BASE_REQUEST = re.compile(r"[a-z]+-\d{8}-\d{8}")


def _mark(record: dict[str, Any], number: int) -> dict[str, Any]:
    """Each record carries its case number in source_id (never damaged) and its request id."""
    out = dict(record)
    out["source_id"] = f"case-{number}"
    request = out.get("request_id")
    if isinstance(request, str) and "{marker}" in request:
        out["request_id"] = request.replace("{marker}", f"#{number}")
    elif isinstance(request, str) and _BASE_REQUEST.fullmatch(request):
        out["request_id"] = f"fz-{number:05d}"  # undamaged: made unique per case
    return out


def _line_for(case: Case) -> bytes:
    """The case's line with its markers; a line that is not a JSON object stays as it is."""
    assert case.line is not None
    try:
        parsed = json.loads(case.line.decode("utf-8"))
    except (ValueError, RecursionError):
        return case.line  # not JSON: it carries no marker and is found by its line number
    if not isinstance(parsed, dict):
        return case.line
    # Re-serialised: a duplicate key keeps its last value, which is the damage.
    return json.dumps(_mark(parsed, case.number)).encode()


def _parquet_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Rows (event_ts as text or None) -> an inference-schema table, times as int64 us."""
    ticks, clean = [], []
    for row in rows:
        stamp = row.get("event_ts")
        ticks.append(_micros(stamp))
        features = row.get("features")
        clean.append(
            {
                **{k: v for k, v in row.items() if k in LOOSE.names},
                "event_ts": None,
                "features": None if features is None else list(features.items()),
            }
        )
    table = pa.Table.from_pylist(clean, schema=LOOSE)
    at = table.schema.get_field_index("event_ts")
    return table.set_column(at, "event_ts", pa.array(ticks, pa.timestamp("us", tz="UTC")))


def _micros(stamp: Any) -> int | None:
    if stamp is None:
        return None
    try:
        moment = datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    except ValueError:
        return 10**18 // 2  # text no time parser takes: stored as a time past year 17000
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # Parquet times carry no zone text
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def write_inputs(folder: Path, bases: list[dict[str, Any]], cases: list[Case]) -> dict[str, Any]:
    """JSONL and Parquet files; returns how to find each case from a dead letter's source."""
    folder.mkdir(parents=True, exist_ok=True)
    undamaged = [
        Case("undamaged", ACCEPT, fmt="parquet" if i % 2 else "jsonl", row=b, line=None)
        for i, b in enumerate(bases)
    ]
    every = [*undamaged, *cases]
    for number, case in enumerate(every):
        case.number = number
    jsonl_path = folder / "fuzz.jsonl"
    lines = [
        json.dumps(_mark(c.row, c.number)).encode() if c.line is None else _line_for(c)
        for c in every
        if c.fmt == "jsonl"
    ]
    by_line = [c for c in every if c.fmt == "jsonl"]
    jsonl_path.write_bytes(b"\n".join(lines) + b"\n")
    parquet_cases = [c for c in every if c.fmt == "parquet"]
    parquet_path = folder / "fuzz.parquet"
    assert all(c.row is not None for c in parquet_cases)
    table = _parquet_table([_mark(c.row, c.number) for c in parquet_cases])  # type: ignore[arg-type]
    pq.write_table(table, parquet_path)
    # Damages a Parquet file carries as a whole: a column of the wrong type, a column that is
    # missing, a file that is not Parquet. Their rows are copies of base records.
    extra: dict[str, list[Case]] = {}
    text_score = [
        Case("parquet_text_score", ACCEPT if i % 2 else REJECT, fmt="parquet:text_score", row=b)
        for i, b in enumerate(bases[:60])
    ]
    no_features = [
        Case("parquet_missing_column", REJECT, fmt="parquet:no_features", row=b)
        for b in bases[60:90]
    ]
    corrupt = [Case("parquet_corrupt_file", REJECT, fmt="parquet:corrupt", row=bases[90])]
    for group in (text_score, no_features, corrupt):
        for case in group:
            case.number = len(every)
            every.append(case)
    rows = [_mark(c.row, c.number) for c in text_score]  # type: ignore[arg-type]
    table = _parquet_table(rows)
    scores = [
        str(r["score"]) if c.expect == ACCEPT else "high"
        for r, c in zip(rows, text_score, strict=True)
    ]
    table = table.set_column(table.schema.get_field_index("score"), "score", pa.array(scores))
    pq.write_table(table, folder / "text-score.parquet")
    extra["text-score.parquet"] = text_score
    table = _parquet_table([_mark(c.row, c.number) for c in no_features])  # type: ignore[arg-type]
    pq.write_table(table.drop_columns(["features"]), folder / "no-features.parquet")
    extra["no-features.parquet"] = no_features
    (folder / "corrupt.parquet").write_bytes(b"PAR1" + b"\x00garbage" * 50)
    extra["corrupt.parquet"] = corrupt
    return {
        "every": every,
        "jsonl": (str(jsonl_path), by_line),
        "parquet": (str(parquet_path), parquet_cases),
        "extra": {str(folder / name): group for name, group in extra.items()},
    }


# -- the properties -------------------------------------------------------------------------


def _case_of(source: str | None, layout: dict[str, Any]) -> Case | None:
    """The case a dead letter's or explanation's source points at."""
    if source is None:
        return None
    if match := re.fullmatch(r"case-(\d+)", source):
        return layout["every"][int(match.group(1))]
    jsonl, by_line = layout["jsonl"]
    if source.startswith(jsonl + ":"):
        return by_line[int(source.rsplit(":", 1)[1]) - 1]
    parquet, parquet_cases = layout["parquet"]
    files = {parquet: parquet_cases, **layout["extra"]}
    path, _, where = source.partition("#")
    if path in files:
        if not where:
            return files[path][0]  # a file that cannot be read at all: its one case
        match = re.fullmatch(r"batch(\d+)\+(\d+)", where)
        assert match, source
        return files[path][int(match.group(1)) * 50_000 + int(match.group(2))]
    return None


@pytest.fixture(scope="module")
def fuzz_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    home = tmp_path_factory.mktemp("fuzz-home")
    registry = ModelRegistry(home / "models")
    register_demo_models(registry)
    bases = _base_records(registry)
    cases = generate_cases(bases)
    layout = write_inputs(home / "input", bases, cases)
    store = StoreConfig(
        registry_root=str(home / "models"),
        policies=POLICIES,
        hash_key=TEST_HASH_KEY,
        catalog=CatalogConfig.embedded(home),
    )
    inputs = (str(home / "input" / "*.jsonl"), str(home / "input" / "*.parquet"))
    summary = run_batch(BatchJobConfig(inputs=inputs, store=store, max_failed_share=1.0))
    catalog = open_catalog(CatalogConfig.embedded(home))
    explanations = catalog.load_table(EXPLANATIONS).scan().to_arrow().to_pylist()
    dead = catalog.load_table(DEAD_LETTERS).scan().to_arrow().to_pylist()
    return {
        "layout": layout,
        "cases": cases,
        "summary": summary,
        "explanations": explanations,
        "dead": dead,
        "runs": catalog.load_table(RUNS).scan().to_arrow().to_pylist(),
        "repeats": _repeated_requests(layout, explanations, dead),
    }


def _request_key(case: Case) -> tuple[Any, str] | None:
    """(tenant, request id) as the job reads them, for a case whose record is an object."""
    record: Any = _mark(case.row, case.number) if isinstance(case.row, dict) else None
    if record is None and case.line is not None:
        try:
            record = json.loads(_line_for(case))
        except ValueError:
            return None
    if not isinstance(record, dict):
        return None
    return (record.get("tenant_id"), str(record.get("request_id")))


def _repeated_requests(
    layout: dict[str, Any], explanations: list[dict[str, Any]], dead: list[dict[str, Any]]
) -> list[Case]:
    """Cases that repeat a request another case got explained: damaging a request id draws
    from few values ("1,5", "", 3, ...), so two cases of one tenant and day can carry the same
    id. A request is explained once per stratum (the sampler keeps one row per request id, as
    for a producer's retry), so such a case has no outcome of its own, by design."""
    own = set()
    for row in (*explanations, *dead):
        case = _case_of(row["source"], layout)
        if case is not None:
            own.add(case.number)
    explained = {(r["tenant_id"], r["request_id"]) for r in explanations}
    return [c for c in layout["every"] if c.number not in own and _request_key(c) in explained]


def test_at_least_10000_damaged_records_of_every_kind_were_generated(fuzz_run) -> None:
    cases: list[Case] = fuzz_run["cases"]
    assert len(cases) >= DAMAGED
    kinds = Counter(c.kind for c in cases)
    assert len(kinds) == 40, kinds  # every damage above was drawn
    assert Counter(c.fmt for c in cases)["parquet"] > DAMAGED // 4


def test_no_crash_and_every_record_explained_or_dead_lettered_alone(fuzz_run) -> None:
    layout, record = fuzz_run["layout"], fuzz_run["summary"].record
    assert record.status in ("succeeded", "succeeded_with_warnings"), record.warnings
    every: list[Case] = layout["every"]
    for row in fuzz_run["explanations"]:
        case = _case_of(row["source"], layout)
        assert case is not None, row["source"]
        case.outcomes.append("explained")
    unknown = []
    for letter in fuzz_run["dead"]:
        case = _case_of(letter["source"], layout)
        if case is None:
            unknown.append(letter)
            continue
        assert letter["error_message"].strip(), letter
        case.outcomes.append(f"dead:{letter['stage']}")
    assert not unknown, unknown[:3]
    for case in fuzz_run["repeats"]:
        case.outcomes.append("repeated request, explained once")
    problems = defaultdict(list)
    for case in every:
        if case.outcomes == ["repeated request, explained once"]:
            continue
        if len(case.outcomes) != 1:
            problems["not exactly once"].append((case.kind, case.number, case.outcomes))
        elif case.expect == ACCEPT and case.outcomes != ["explained"]:
            problems["should be explained"].append((case.kind, case.number, case.outcomes))
        elif case.expect == REJECT and case.outcomes == ["explained"]:
            problems["should be dead-lettered"].append((case.kind, case.number))
    assert not problems, {k: v[:5] for k, v in problems.items()}
    undamaged = [c for c in every if c.kind == "undamaged"]
    assert len(undamaged) == 3 * PER_TENANT
    assert all(c.outcomes == ["explained"] for c in undamaged)
    damaged = [c for c in every if c.kind != "undamaged"]
    outcomes = Counter(c.outcomes[0] for c in damaged)
    print(
        f"\nfuzz figures: {len(fuzz_run['cases'])} damaged records generated by hypothesis "
        f"+ {len(damaged) - len(fuzz_run['cases'])} in whole-file Parquet damages; "
        f"{outcomes['explained']} explained, "
        f"{sum(n for o, n in outcomes.items() if o != 'explained')} dead-lettered "
        f"({dict(sorted((o, n) for o, n in outcomes.items() if o != 'explained'))}); "
        f"{len(undamaged)} undamaged, all explained; 0 crashes"
    )


def test_the_counts_balance_in_the_tables(fuzz_run) -> None:
    final = [r for r in fuzz_run["runs"] if r["status"] != "started"]
    assert len(final) == 1
    run = final[0]
    layout = fuzz_run["layout"]
    jsonl_lines = len(layout["jsonl"][1])
    parquet_rows = len(layout["parquet"][1]) + sum(
        len(g) for p, g in layout["extra"].items() if not p.endswith("corrupt.parquet")
    )
    assert run["records_read"] == jsonl_lines + parquet_rows + 1  # + the unreadable file
    valid = run["records_read"] - run["records_invalid"]
    # The policy explains every valid record, a repeated request id once.
    assert run["records_sampled"] == valid - len(fuzz_run["repeats"])
    assert run["records_sampled"] == run["records_explained"] + run["records_failed"]
    assert len(fuzz_run["dead"]) == run["records_invalid"] + run["records_failed"]
    assert len(fuzz_run["explanations"]) == run["records_committed"] == run["records_explained"]
