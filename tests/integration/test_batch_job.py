"""The batch job end to end on the embedded default: counts, idempotency, provenance."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients

from tests.integration.conftest import DemoHome
from whylake.jobs.batch_job import run_batch
from whylake.lake.catalog import DEAD_LETTERS, EXPLANATIONS, RUNS

pytestmark = pytest.mark.integration


def _explanations(demo_home: DemoHome) -> list[dict]:
    return demo_home.catalog().load_table(EXPLANATIONS).scan().to_arrow().to_pylist()


def test_counts_in_equal_counts_out_plus_dead_letters(demo_home: DemoHome) -> None:
    run = demo_home.first.record
    assert run.records_read == demo_home.generated.records
    assert run.status == "succeeded", run.warnings
    dead = demo_home.catalog().load_table(DEAD_LETTERS).scan().to_arrow().to_pylist()
    # Every malformed line is a dead letter with its stage and reason; none is dropped.
    assert run.records_invalid == demo_home.generated.malformed == len(dead)
    assert {d["stage"] for d in dead} == {"read", "validate"}
    assert all(d["error_message"] and d["record"] for d in dead)
    # read = invalid + sampled-or-not valid rows; sampled = explained + failed.
    assert run.records_sampled == run.records_explained + run.records_failed
    assert run.records_committed == run.records_explained == len(_explanations(demo_home))
    assert 0 < run.records_sampled < run.records_read


def test_a_rerun_adds_no_row(demo_home: DemoHome) -> None:
    before = len(_explanations(demo_home))
    again = run_batch(demo_home.config()).record
    assert again.records_committed == 0
    assert again.records_already_present == before
    assert len(_explanations(demo_home)) == before
    runs = demo_home.catalog().load_table(RUNS).scan().to_arrow()
    assert again.run_id in runs["run_id"].to_pylist()


def test_a_request_logged_twice_is_explained_once(demo_home: DemoHome) -> None:
    ids = [r["request_id"] for r in _explanations(demo_home)]
    assert len(ids) == len(set(ids))


def test_records_carry_provenance_and_sampling_weights(demo_home: DemoHome) -> None:
    rows = _explanations(demo_home)
    cards = {(r["tenant_id"], r["model_id"], r["model_version"]) for r in rows}
    assert len({t for t, _, _ in cards}) == 3
    for tenant, model_id, version in cards:
        sha = demo_home.registry.card(tenant, model_id, version).artifact_sha256
        assert {r["model_sha256"] for r in rows if r["tenant_id"] == tenant} == {sha}
    for r in rows:
        assert 0 < r["inclusion_probability"] <= 1
        assert r["ht_weight"] == pytest.approx(1 / r["inclusion_probability"])
        assert r["user_id_hash"] is None or not r["user_id_hash"].startswith("user-")
        assert r["summary"].endswith(".")
    always = [r for r in rows if r["sampling_reason"].startswith("always:")]
    assert always and all(r["inclusion_probability"] == 1.0 for r in always)


def test_an_attribution_is_recomputable_from_the_record_and_the_artifact_alone(
    demo_home: DemoHome,
) -> None:
    # The steps each row ran with are in its record (the policy gives gold users more).
    steps = 50
    rows = [
        r
        for r in _explanations(demo_home)
        if r["tenant_id"] == "acme"
        and json.loads(r["explainer_config"])["whylake"]["ig_steps"] == steps
    ][:20]
    artifact = demo_home.home / "models/acme/tumor-triage/1/model.pt"
    model = torch.jit.load(str(artifact))  # no whylake code from here on
    x = torch.tensor(
        [[a["input_value"] for a in r["attributions"]] for r in rows], dtype=torch.float64
    )
    base = torch.tensor(
        [[a["baseline_value"] for a in r["attributions"]] for r in rows], dtype=torch.float64
    )
    model64 = model.double()
    ig = IntegratedGradients(lambda t: model64(t))
    # Each row records the Gauss-Legendre order its attributions were computed with (the
    # plan's steps are where the per-row doubling started).
    expected = np.vstack(
        [
            ig.attribute(
                x[i : i + 1],
                baselines=base[i : i + 1],
                n_steps=r["ig_steps"],
                method="gausslegendre",
            ).numpy()
            for i, r in enumerate(rows)
        ]
    )
    recorded = np.array([[a["value"] for a in r["attributions"]] for r in rows])
    scale = np.abs(expected).max()
    # float32 (recorded) vs float64 (recomputed) arithmetic: agreement to 1e-3 of the largest.
    assert np.abs(recorded - expected).max() <= 1e-3 * scale
    with torch.no_grad():
        pred = model64(x).numpy()
    assert np.allclose([r["prediction"] for r in rows], pred, atol=1e-5)


def test_counterfactuals_are_valid_when_re_scored(demo_home: DemoHome) -> None:
    rows = [r for r in _explanations(demo_home) if r["counterfactual_status"] == "found"]
    assert rows, "the policy asks counterfactuals for flagged and disputed rows"
    for r in rows:
        path = demo_home.home / f"models/{r['tenant_id']}/{r['model_id']}/{r['model_version']}"
        model = torch.jit.load(str(path / "model.pt"))
        card = demo_home.registry.card(r["tenant_id"], r["model_id"], r["model_version"])
        inputs = {a["feature"]: a["input_value"] for a in r["attributions"]}
        for cf in r["counterfactuals"]:
            changed = dict(inputs)
            for change in cf["changes"]:
                assert changed[change["feature"]] == pytest.approx(change["from_value"])
                changed[change["feature"]] = change["to_value"]
            immutable = {f.name for f in card.features if f.immutable}
            assert not immutable & {c["feature"] for c in cf["changes"]}
            x = torch.tensor([[changed[n] for n in card.feature_names]], dtype=torch.float32)
            with torch.no_grad():
                score = float(model(x).reshape(-1)[0])
            assert score == pytest.approx(cf["score"], abs=1e-4)
            threshold = card.decision_threshold
            assert cf["valid"] == ((score >= threshold) != (r["prediction"] >= threshold))


def test_tenant_and_date_filters_count_what_they_leave_out(demo_home: DemoHome) -> None:
    from datetime import date

    run = run_batch(demo_home.config(tenant="globex", day=date(2026, 11, 20))).record
    assert run.records_sampled == 0
    assert run.records_read == demo_home.generated.records
    assert run.status == "succeeded"
