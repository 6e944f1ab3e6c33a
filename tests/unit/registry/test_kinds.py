"""Every model kind registers from its own format, with a card inferred from a training sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.unit.model_kinds import TRAINERS, Trained, features, train_sklearn, train_xgboost
from whylake.registry.kinds import kind_for
from whylake.registry.registration import Registration, register_model, score_rows
from whylake.registry.store import ModelRegistry, sha256_path
from whylake.schemas.errors import (
    ConfigError,
    InvalidIdError,
    RegistryIntegrityError,
    UnsupportedArtifactError,
)


def _register(reg: ModelRegistry, trained: Trained, **overrides: object):  # type: ignore[no-untyped-def]
    fields: dict[str, object] = dict(
        tenant_id="acme",
        model_id=f"m-{trained.kind}",
        model_version="1",
        kind=trained.kind,
        artifact=trained.artifact,
        sample=trained.sample,
        target=trained.target,
    )
    fields.update(overrides)
    return register_model(reg, Registration(**fields))  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", sorted(TRAINERS))
def test_each_kind_registers_and_loads_back_with_its_own_library(tmp_path: Path, kind: str) -> None:
    trained = TRAINERS[kind](tmp_path)
    reg = ModelRegistry(tmp_path / "models")
    card = _register(reg, trained)
    assert card.kind == kind
    assert card.artifact_sha256 == sha256_path(
        reg.root / "acme" / f"m-{kind}" / "1" / card.artifact
    )
    loaded = reg.load("acme", f"m-{kind}", "1")
    assert loaded.card == card
    if card.is_text:
        assert card.features == () and len(loaded.reference_texts) > 0
        texts = list(trained.sample["text"][:20])
        p = score_rows(loaded.model, card, np.zeros((0, 0)), texts)
        assert np.all((p >= 0) & (p <= 1))
        assert 0.0 <= card.training["accuracy"] <= 1.0  # measured on the sample at registration
        return
    # The card's features are the model's inputs in its order, typed from the sample.
    assert list(card.feature_names) == features(trained.sample)
    types = {f.name: f.type for f in card.features}
    assert types["x0"] == "float" and types["age"] == "int" and types["member"] == "bool"
    region = next(f for f in card.features if f.name == "region")
    assert region.type == "category" and region.levels == (0.0, 1.0, 2.0)
    assert card.baseline[0] == pytest.approx(trained.sample["x0"].mean())
    assert card.task == "classification"
    # The stored reference scores are the model's own, in the logged score's units.
    scores = score_rows(loaded.model, card, loaded.reference_rows)
    np.testing.assert_allclose(scores, loaded.reference_scores, rtol=1e-6)
    assert np.all((scores > 0) & (scores < 1))


def test_boosters_explain_their_margin_and_log_the_probability(tmp_path: Path) -> None:
    import xgboost

    trained = train_xgboost(tmp_path)
    reg = ModelRegistry(tmp_path / "models")
    card = _register(reg, trained)
    assert (card.explained_output, card.score_link) == ("log_odds", "logistic")
    loaded = reg.load("acme", "m-xgboost", "1")
    # XGBoost alone reads the stored artifact.
    plain = xgboost.Booster(model_file=str(reg.root / "acme/m-xgboost/1/model.json"))
    x = loaded.reference_rows[:5]
    p = plain.predict(xgboost.DMatrix(x, feature_names=list(card.feature_names)))
    np.testing.assert_allclose(score_rows(loaded.model, card, x), p, rtol=1e-6)


def test_a_joblib_pipeline_is_stored_as_skops_and_reregistering_it_is_a_no_op(
    tmp_path: Path,
) -> None:
    trained = train_sklearn(tmp_path, fmt="joblib")
    reg = ModelRegistry(tmp_path / "models")
    first = _register(reg, trained)
    assert first.artifact == "model.skops" and first.artifact_format == "skops"
    assert first.source_sha256 == sha256_path(trained.artifact)
    assert _register(reg, trained) == first  # same source: nothing rewritten
    other = train_xgboost(tmp_path)
    with pytest.raises(RegistryIntegrityError, match="new version"):
        _register(reg, other, model_id="m-sklearn", kind="xgboost", artifact=other.artifact)


def test_skops_refuses_types_outside_scikit_learn(tmp_path: Path) -> None:
    import skops.io

    from tests.unit.model_kinds import sklearn_pipeline

    pipeline = sklearn_pipeline()
    pipeline.steps[0][1].foreign = Path("/etc")  # a pathlib object in the state
    path = tmp_path / "odd.skops"
    skops.io.dump(pipeline, path)
    with pytest.raises(UnsupportedArtifactError, match="outside scikit-learn"):
        kind_for("sklearn").load(path, "skops")


def test_a_tampered_artifact_is_refused_on_load(tmp_path: Path) -> None:
    trained = train_xgboost(tmp_path)
    reg = ModelRegistry(tmp_path / "models")
    _register(reg, trained)
    stored = reg.root / "acme/m-xgboost/1/model.json"
    stored.write_text(stored.read_text().replace('"base_score"', '"base_score" ', 1))
    with pytest.raises(RegistryIntegrityError, match="sha256"):
        reg.load("acme", "m-xgboost", "1")


@pytest.mark.parametrize(
    ("field", "value"),
    [("tenant_id", "../other"), ("model_id", ".."), ("model_version", "1/../../x")],
)
def test_ids_that_would_leave_the_tenant_folder_are_refused(
    tmp_path: Path, field: str, value: str
) -> None:
    trained = train_xgboost(tmp_path)
    with pytest.raises(InvalidIdError):
        _register(ModelRegistry(tmp_path / "models"), trained, **{field: value})
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").rglob("card.json"))


def test_the_sample_must_hold_every_feature_the_model_takes(tmp_path: Path) -> None:
    trained = train_xgboost(tmp_path)
    with pytest.raises(ConfigError, match="lacks features"):
        _register(
            ModelRegistry(tmp_path / "models"), trained, sample=trained.sample.drop(columns="x1")
        )


def test_the_wrong_format_for_a_kind_says_what_it_wants(tmp_path: Path) -> None:
    trained = train_xgboost(tmp_path)
    with pytest.raises(UnsupportedArtifactError, match="text format"):
        _register(ModelRegistry(tmp_path / "models"), trained, kind="lightgbm")
