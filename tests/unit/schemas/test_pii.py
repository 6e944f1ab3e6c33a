"""Dead letters keep the record as it came, except personal fields: those only as keyed hashes."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.keys import TEST_HASH_KEY, TEST_PII
from whylake.schemas.dead_letter import (
    DEAD_LETTER_ARROW_SCHEMA,
    MAX_RECORD_CHARS,
    UNKNOWN_TENANT,
    dead_letter,
)
from whylake.schemas.errors import ConfigError
from whylake.schemas.ids import hash_user_id
from whylake.schemas.pii import PiiPolicy
from whylake.schemas.secrets import Secret

RAW = "user-4711"


def _letter(record: object, **kw: object):
    args: dict[str, object] = dict(
        run_id="run-1", stage="validate", error="bad", source="in.jsonl:3", pii=TEST_PII
    )
    args.update(kw)
    return dead_letter(record=record, **args)  # type: ignore[arg-type]


def test_a_user_id_becomes_the_same_hash_the_explanation_table_stores() -> None:
    letter = _letter({"tenant_id": "acme", "user_id": RAW, "score": 1}, tenant_id="acme")
    stored = json.loads(letter.record)
    assert "user_id" not in stored
    assert stored["user_id_hash"] == hash_user_id("acme", RAW, TEST_HASH_KEY)
    assert RAW not in letter.record


@pytest.mark.parametrize(
    "record",
    [
        [{"user_id": RAW}],  # a wrong container around the record
        {"context": {"user": {"user_id": RAW}}},  # nested
        {"user_id": {"id": RAW}},  # a user id that is itself an object
        {"user_id": [RAW, "x"]},
        '{"tenant_id": "acme", "user_id": "user-4711", "features": {',  # a cut-off line
        '{"tenant_id": "acme", "user_id": "user-47',  # cut off inside the value
        "{'tenant_id': 'acme', 'user_id': 'user-4711'}",  # Python's repr, not JSON
        "tenant_id=acme user_id=user-4711 score=1",  # key=value logs
        '{"user_id" :  "user-4711"}',
    ],
)
def test_no_container_or_format_keeps_a_raw_user_id(record: object) -> None:
    letter = _letter(record, tenant_id="acme")
    assert "4711" not in letter.record
    assert "user_id_hash" in letter.record


def test_the_raw_value_is_scrubbed_from_the_error_message_too() -> None:
    record = {"tenant_id": "acme", "user_id": RAW, "score": RAW}
    letter = _letter(record, error=f"score must be a number, got {RAW!r}", tenant_id="acme")
    assert RAW not in letter.error_message
    assert "<redacted>" in letter.error_message


def test_more_fields_can_be_named_but_never_fewer() -> None:
    policy = PiiPolicy(TEST_HASH_KEY, ("user_id", "email"))
    letter = _letter({"user_id": RAW, "email": "a@b.example"}, pii=policy, tenant_id="acme")
    assert "a@b.example" not in letter.record and RAW not in letter.record
    with pytest.raises(ConfigError, match="must include"):
        PiiPolicy(TEST_HASH_KEY, ("email",))
    with pytest.raises(ConfigError):
        PiiPolicy("not a secret", ("user_id",))  # type: ignore[arg-type]


def test_the_hash_depends_on_the_key() -> None:
    other = PiiPolicy(Secret("another-key", "tests"))
    a = json.loads(_letter({"user_id": RAW}, tenant_id="acme").record)["user_id_hash"]
    b = json.loads(_letter({"user_id": RAW}, tenant_id="acme", pii=other).record)["user_id_hash"]
    assert a != b


def test_hostile_ids_never_reach_the_partition_or_request_columns() -> None:
    letter = _letter({"x": 1}, tenant_id="a" * 5000, request_id="r\x00" * 300)
    assert letter.tenant_id == UNKNOWN_TENANT
    assert letter.request_id is None
    letter = _letter({"x": 1}, tenant_id="../globex", request_id=7)
    assert (letter.tenant_id, letter.request_id) == (UNKNOWN_TENANT, None)


def test_a_huge_record_is_kept_as_its_start_and_its_digest() -> None:
    letter = _letter("x" * (3 * MAX_RECORD_CHARS))
    assert len(letter.record) < MAX_RECORD_CHARS + 200
    assert "sha256" in letter.record


def test_replays_of_the_same_record_get_the_same_id() -> None:
    assert _letter({"user_id": RAW}).dead_letter_id == _letter({"user_id": RAW}).dead_letter_id


_json = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


@settings(max_examples=400, derandomize=True, database=None, deadline=None)
@given(
    record=st.dictionaries(st.text(max_size=8), _json, max_size=5),
    user=st.from_regex(r"\Auser-[0-9]{6,9}\Z"),
    depth=st.integers(0, 3),
    as_text=st.booleans(),
    cut=st.integers(0, 200),
    tenant=st.text(max_size=80),
    text=st.text(max_size=40),
)
def test_any_record_becomes_a_committable_dead_letter_without_the_raw_user_id(
    record: dict, user: str, depth: int, as_text: bool, cut: int, tenant: str, text: str
) -> None:
    holder: object = {**record, "user_id": user}
    for _ in range(depth):
        holder = [holder] if depth % 2 else {"wrapped": holder}
    payload: object = holder
    if as_text:
        dumped = json.dumps(holder)
        payload = dumped[: max(dumped.index(user) + len(user) // 2, len(dumped) - cut)]
    letter = _letter(payload, tenant_id=tenant, request_id=text, error=f"bad {text}")
    assert user not in letter.record and user not in letter.error_message
    # Whatever it held (lone surrogates, any tenant id), Arrow takes it for the commit.
    pa.Table.from_pylist([letter._asdict()], schema=DEAD_LETTER_ARROW_SCHEMA)


@settings(
    max_examples=200,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(text=st.text(alphabet=st.characters(exclude_categories=()), max_size=60))
def test_any_text_at_all_is_committable(text: str) -> None:
    letter = _letter(text + "\ud800", tenant_id=text, request_id=text, error=text + "\udfff")
    pa.Table.from_pylist([letter._asdict()], schema=DEAD_LETTER_ARROW_SCHEMA)
