"""The identifier grammar: what may name a folder, a partition or an index, and what may not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from whylake.schemas.errors import InvalidIdError
from whylake.schemas.ids import (
    check_model_id,
    check_model_version,
    check_request_id,
    check_tenant,
    explanation_id,
)


@pytest.mark.parametrize("good", ["acme", "t-1", "a_b", "0", "a" * 64])
def test_tenant_ids_that_pass(good: str) -> None:
    assert check_tenant(good) == good


@pytest.mark.parametrize(
    "bad",
    ["", "Acme", "-acme", "acme,globex", "acme*", "../globex", "a/b", "a.b", "a" * 65, None, 7],
)
def test_tenant_ids_that_cannot_widen_a_pattern_or_leave_a_folder(bad: object) -> None:
    with pytest.raises(InvalidIdError):
        check_tenant(bad)


@pytest.mark.parametrize("bad", ["..", ".", "../globex/progression", "a/b", "a\\b", "", "m" * 129])
def test_model_ids_are_one_folder_name(bad: str) -> None:
    with pytest.raises(InvalidIdError):
        check_model_id(bad)
    with pytest.raises(InvalidIdError):
        check_model_version(bad[:64] if bad != "m" * 129 else "v" * 65)


def test_request_ids_are_printable_and_bounded() -> None:
    assert check_request_id("acme-20261121-00000008 #2") == "acme-20261121-00000008 #2"
    for bad in ("", "a\nb", "a\x00", "r" * 257):
        with pytest.raises(InvalidIdError):
            check_request_id(bad)
    with pytest.raises(InvalidIdError, match=r"\.\.\.'"):  # a huge id is shortened in the message
        check_request_id("x" * 5000)


def test_the_explanation_id_names_the_record_at_its_event_time() -> None:
    at = datetime(2026, 11, 21, 9, 30, 0, 123456, tzinfo=UTC)
    parts = ("acme", "r-1", at, "sha", "cfg", "input")
    same = explanation_id(*parts)
    # The same instant written in another zone is the same record: the id is of the instant.
    paris = at.astimezone(timezone(timedelta(hours=1)))
    assert explanation_id("acme", "r-1", paris, "sha", "cfg", "input") == same
    # One microsecond later is another log record of the request, so another explanation.
    later = explanation_id("acme", "r-1", at + timedelta(microseconds=1), "sha", "cfg", "input")
    assert later != same
    assert explanation_id("globex", "r-1", at, "sha", "cfg", "input") != same
    with pytest.raises(ValueError, match="timezone-aware"):
        explanation_id("acme", "r-1", at.replace(tzinfo=None), "sha", "cfg", "input")
