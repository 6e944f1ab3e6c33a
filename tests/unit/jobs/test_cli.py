"""The command line on a real lake: each command's success path and its main error paths.

`whylake` is run through its entry point (`main`), in process, so exit codes and the one-line
error messages are the ones a user sees. Commands that start a pipeline or need a service
are covered in tests/integration/test_cli.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.unit.lake.conftest import SeededLake, seeded_lake
from whylake.jobs import options
from whylake.jobs.cli import main

__all__ = ["seeded_lake"]


def whylake(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str]:
    """Run `whylake <args>`; returns the exit code and what it printed (stdout + stderr)."""
    monkeypatch.setattr(sys, "argv", ["whylake", *args])
    monkeypatch.setenv("COLUMNS", "250")  # rich wraps at the terminal width
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WHYLAKE_HASH_KEY", "WHYLAKE_DEBUG", "WHYLAKE_HOME", "WHYLAKE_OPENSEARCH_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    return lambda *args: whylake(monkeypatch, capsys, *args)


def test_help_lists_every_command(run) -> None:  # type: ignore[no-untyped-def]
    code, out = run("--help")
    assert code == 0
    for command in (
        "batch",
        "stream",
        "sql",
        "reconstruct",
        "runs",
        "replica",
        "search",
        "maintenance",
        "demo",
    ):
        assert command in out


def test_maintenance_shows_the_horizon_and_refuses_to_cut_into_it(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, out = run("maintenance", "retention", "--home", str(tmp_path))
    assert code == 0, out
    # explanations, dead_letters, runs, reviews, metrics, alerts, commits
    assert out.count(" 184 ") == 7
    code, out = run("maintenance", "retention", "--days", "30", "--home", str(tmp_path))
    assert code == 2 and "--shorten" in out and "Traceback" not in out
    code, out = run("maintenance", "expire-snapshots", "--dry-run", "--home", str(tmp_path))
    assert code == 0, out
    code, out = run(
        "maintenance",
        "expire-snapshots",
        "--older-than",
        "2999-01-01T00:00:00Z",
        "--home",
        str(tmp_path),
    )
    assert code == 2 and "Shorten the horizon first" in out
    code, out = run("maintenance", "retention", "--days", "400", "--home", str(tmp_path))
    assert code == 0 and out.count(" 400 ") == 7


def test_sql_answers_within_the_tenant(run, seeded_lake: SeededLake) -> None:  # type: ignore[no-untyped-def]
    code, out = run(
        "sql",
        "SELECT tenant_id, count(*) AS n FROM explanations GROUP BY 1",
        "--tenant",
        "acme",
        "--output",
        "json",
        "--home",
        str(seeded_lake.home),
    )
    assert code == 0, out
    assert json.loads(out) == [{"tenant_id": "acme", "n": 4}]  # r-1 twice, r-2, r-3


def test_sql_refuses_a_write_in_one_line(run, seeded_lake: SeededLake) -> None:  # type: ignore[no-untyped-def]
    code, out = run(
        "sql", "DELETE FROM explanations", "--tenant", "acme", "--home", str(seeded_lake.home)
    )
    assert code == 2
    assert "may only read" in out and "Traceback" not in out


def test_sql_reports_a_bad_column_as_a_user_error(run, seeded_lake: SeededLake) -> None:  # type: ignore[no-untyped-def]
    code, out = run(
        "sql", "SELECT nope FROM explanations", "--tenant", "acme", "--home", str(seeded_lake.home)
    )
    assert code == 2 and "nope" in out


def test_sql_refuses_an_unknown_output_format(run, seeded_lake: SeededLake) -> None:  # type: ignore[no-untyped-def]
    code, out = run(
        "sql", "SELECT 1", "--tenant", "acme", "--output", "xml", "--home", str(seeded_lake.home)
    )
    assert code == 2 and "--output" in out


def test_reconstruct_prints_the_record_and_writes_the_report(  # type: ignore[no-untyped-def]
    run, seeded_lake: SeededLake, tmp_path: Path
) -> None:
    report = tmp_path / "r.html"
    code, out = run(
        "reconstruct",
        "--tenant",
        "acme",
        "--request-id",
        "r-1",
        "--html",
        str(report),
        "--home",
        str(seeded_lake.home),
    )
    assert code == 0, out
    body = json.loads(out[: out.rindex("}") + 1])
    assert body["record"]["request_id"] == "r-1" and body["record"]["tenant_id"] == "acme"
    assert report.read_text().count("r-1") >= 1


def test_reconstruct_of_another_tenants_request_is_not_found(run, seeded_lake: SeededLake) -> None:  # type: ignore[no-untyped-def]
    code, out = run(
        "reconstruct", "--tenant", "acme", "--request-id", "r-9", "--home", str(seeded_lake.home)
    )
    assert code == 2 and "r-9" in out and "Traceback" not in out


def test_reconstruct_refuses_a_time_without_a_date(run, seeded_lake: SeededLake) -> None:  # type: ignore[no-untyped-def]
    code, out = run(
        "reconstruct",
        "--tenant",
        "acme",
        "--request-id",
        "r-1",
        "--as-of",
        "yesterday",
        "--home",
        str(seeded_lake.home),
    )
    assert code == 2 and "ISO-8601" in out


def test_runs_lists_the_manifest(run, seeded_lake: SeededLake) -> None:  # type: ignore[no-untyped-def]
    code, out = run("runs", "--home", str(seeded_lake.home))
    assert code == 0, out
    assert all(r in out for r in ("run-1", "run-2", "run-3"))


def test_batch_without_a_hash_key_is_refused(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "in.jsonl").write_text("{}\n")
    code, out = run("batch", "--input", str(tmp_path / "in.jsonl"), "--home", str(tmp_path))
    assert code == 2
    assert "WHYLAKE_HASH_KEY" in out and "Traceback" not in out


def test_batch_refuses_the_demo_key_given_as_a_real_one(  # type: ignore[no-untyped-def]
    run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from whylake.jobs.options import DEMO_HASH_KEY

    monkeypatch.setenv("WHYLAKE_HASH_KEY", DEMO_HASH_KEY)
    code, out = run("batch", "--input", str(tmp_path / "x.jsonl"), "--home", str(tmp_path))
    assert code == 2 and "public demo key" in out


def test_batch_refuses_an_input_that_matches_nothing(  # type: ignore[no-untyped-def]
    run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WHYLAKE_HASH_KEY", "k" * 32)
    code, out = run("batch", "--input", str(tmp_path / "none-*.jsonl"), "--home", str(tmp_path))
    assert code == 2 and "matched no file" in out


def test_batch_refuses_a_bad_date_and_a_bad_share(  # type: ignore[no-untyped-def]
    run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WHYLAKE_HASH_KEY", "k" * 32)
    code, out = run("batch", "-i", "x.jsonl", "--date", "21/11/2026", "--home", str(tmp_path))
    assert code == 2 and "--date" in out
    code, out = run("batch", "-i", "x.jsonl", "--max-failed-share", "2", "--home", str(tmp_path))
    assert code == 2 and "max_failed_share" in out


def test_batch_refuses_a_bad_ig_tolerance_and_a_pii_field_that_is_no_name(  # type: ignore[no-untyped-def]
    run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WHYLAKE_HASH_KEY", "k" * 32)
    code, out = run("batch", "-i", "x.jsonl", "--ig-tolerance", "2", "--home", str(tmp_path))
    assert code == 2 and "ig_tolerance" in out and "Traceback" not in out
    code, out = run("batch", "-i", "x.jsonl", "--ig-max-steps", "60", "--home", str(tmp_path))
    assert code == 2 and "ig_max_steps" in out
    code, out = run("batch", "-i", "x.jsonl", "--pii-field", "e-mail", "--home", str(tmp_path))
    assert code == 2 and "'e-mail'" in out


def test_stream_refuses_a_missing_prism_binary_and_a_bad_setting(  # type: ignore[no-untyped-def]
    run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WHYLAKE_HASH_KEY", "k" * 32)
    missing = str(tmp_path / "no-prism")
    code, out = run("stream", "--topic", "t", "--prism-location", missing, "--home", str(tmp_path))
    assert code == 2 and "no-prism" in out
    code, out = run(
        "stream",
        "--topic",
        "t",
        "--runner",
        "FlinkRunner",
        "--kafka-config",
        "nonsense",
        "--home",
        str(tmp_path),
    )
    assert code == 2 and "key=value" in out


def test_replica_commands_need_a_url(run) -> None:  # type: ignore[no-untyped-def]
    for args in (("replica", "retention"), ("replica", "backfill", "--since", "2026-11-01")):
        code, out = run(*args)
        assert code == 2 and "--opensearch-url" in out
    code, out = run("search", "--tenant", "acme")
    assert code == 2 and "--opensearch-url" in out


def test_search_refuses_a_tenant_id_that_could_widen_an_index_pattern(run) -> None:  # type: ignore[no-untyped-def]
    code, out = run("search", "--tenant", "acme,*", "--opensearch-url", "http://127.0.0.1:1")
    assert code == 2 and "must match" in out


def test_an_unexpected_error_says_so_and_debug_shows_the_traceback(  # type: ignore[no-untyped-def]
    run, seeded_lake: SeededLake, monkeypatch: pytest.MonkeyPatch
) -> None:
    import whylake.lake.runs

    def broken(*_: object, **__: object) -> None:
        raise KeyError("a bug")

    monkeypatch.setattr(whylake.lake.runs, "list_runs", broken)
    code, out = run("runs", "--home", str(seeded_lake.home))
    assert code == 1
    assert "unexpected error (KeyError)" in out and "--debug" in out and "Traceback" not in out
    code, out = run("--debug", "runs", "--home", str(seeded_lake.home))
    assert code == 1 and "Traceback" in out and "a bug" in out
    monkeypatch.setenv("WHYLAKE_DEBUG", "1")
    code, out = run("runs", "--home", str(seeded_lake.home))
    assert code == 1 and "Traceback" in out


def test_the_replica_index_prefix_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("WHYLAKE_OPENSEARCH_INDEX_PREFIX", raising=False)
    default = options.opensearch_config("http://127.0.0.1:9200")
    assert default is not None and default.index_prefix == "whylake-explanations"
    monkeypatch.setenv("WHYLAKE_OPENSEARCH_INDEX_PREFIX", "test-crash-1")
    chosen = options.opensearch_config("http://127.0.0.1:9200")
    assert chosen is not None and chosen.index_prefix == "test-crash-1"
