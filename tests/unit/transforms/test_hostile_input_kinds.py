"""Every model kind: the limits hold on the batch and the Kafka path; poison rows fail alone."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.util import assert_that
from apache_beam.transforms import window

from tests.unit.keys import TEST_HASH_KEY, TEST_PII
from tests.unit.model_kinds import TRAINERS
from whylake.registry.registration import Registration, register_model, score_rows
from whylake.registry.store import LoadedModel, ModelRegistry
from whylake.schemas.limits import RecordLimits
from whylake.transforms.explainers.config import ExplainConfig
from whylake.transforms.explainers.token_ig import TextClassifier
from whylake.transforms.kafka import KafkaBatch, KafkaReadConfig, ParseConfig, ParseKafkaRecords
from whylake.transforms.model_bank import ModelBank
from whylake.transforms.read import ReadConfig, ReadInferenceRecords
from whylake.transforms.sampling.policy import default_policy_file, load_policies
from whylake.transforms.validate import ValidateConfig, ValidateRecords

DAY = datetime(2026, 11, 21, 10, tzinfo=UTC)
LIMITS = RecordLimits(reference_time=datetime(2026, 11, 22, tzinfo=UTC))
KINDS = tuple(TRAINERS)  # torch, sklearn (a pipeline), xgboost, lightgbm, hf-text
POISON_TEXT = "\u2620 poison"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, LoadedModel]]:
    tmp = tmp_path_factory.mktemp("kinds")
    reg = ModelRegistry(tmp / "models")
    out = {}
    for kind, train in TRAINERS.items():
        (tmp / kind).mkdir()
        trained = train(tmp / kind)
        card = register_model(
            reg,
            Registration(
                tenant_id="acme",
                model_id=f"m-{kind.replace('-', '')}",
                model_version="1",
                kind=kind,
                artifact=trained.artifact,
                sample=trained.sample,
                target=trained.target,
            ),
        )
        out[kind] = reg.load("acme", card.model_id, "1")
    return reg.root, out


def _records(loaded: LoadedModel, n: int, prefix: str) -> list[dict[str, Any]]:
    """n records of the model's own reference rows, scored by the model itself."""
    card = loaded.card
    texts = list(loaded.reference_texts[:n]) if card.is_text else None
    x = loaded.reference_rows[:n]
    scores = score_rows(loaded.model, card, x, texts or ())
    out = []
    for i in range(n):
        record: dict[str, Any] = {
            "tenant_id": card.tenant_id,
            "request_id": f"{prefix}-{i}",
            "event_ts": DAY.isoformat(),
            "model_id": card.model_id,
            "model_version": card.model_version,
            "features": {}
            if card.is_text
            else dict(zip(card.feature_names, x[i].tolist(), strict=True)),
            "score": float(scores[i]),
            "user_id": f"user-9{i:05d}",
        }
        if texts:
            record["text"] = texts[i]
        out.append(record)
    return out


def _damaged(loaded: LoadedModel) -> list[tuple[dict[str, Any], str]]:
    """Records of this kind that break the contract's limits, with the reason each must give."""
    good = _records(loaded, 1, "x")[0]
    card, out = loaded.card, []
    out.append(({**good, "event_ts": "9999-12-31T23:59:59Z"}, "in the future"))
    out.append(({**good, "model_id": "../globex/" + card.model_id}, "model id"))
    out.append(({**good, "tenant_id": "a" * 5000}, "tenant id"))
    out.append(({**good, "label": "x" * 5000}, "label has 5000"))
    if card.is_text:
        out.append(({**good, "text": "w " * 60_000}, "text has 120000 characters"))
    else:
        first = card.feature_names[0]
        out.append(({**good, "features": {**good["features"], first: 1e308}}, "float32"))
    return [({**r, "request_id": f"bad-{i}"}, why) for i, (r, why) in enumerate(out)]


def _expected(models: dict[str, LoadedModel]) -> tuple[list[bytes], set[str], dict[str, str]]:
    """Lines (good and damaged records of every kind), the good ids, bad id -> its reason."""
    lines, good, bad = [], set(), {}
    for kind, loaded in models.items():
        for record in _records(loaded, 3, f"good-{kind}"):
            lines.append(json.dumps(record).encode())
            good.add(record["request_id"])
        for record, why in _damaged(loaded):
            request = f"{record['request_id']}-{kind}"
            lines.append(json.dumps({**record, "request_id": request}).encode())
            bad[request] = why
    return lines, good, bad


def _checks(good: set[str], bad: dict[str, str]) -> tuple[Any, Any]:
    def check_valid(ids: list[str]) -> None:
        assert sorted(ids) == sorted(good)

    def check_dead(letters: list[tuple[str | None, str, str]]) -> None:
        assert "user-9" not in json.dumps(letters), "a raw user id reached a dead letter"
        by_request = {request: (why, stage) for request, why, stage in letters}
        assert len(letters) == len(bad), letters  # each bad record alone, once
        for request, why in bad.items():
            assert why in by_request[request][0], (request, by_request[request])
            assert by_request[request][1] == "validate"

    return check_valid, check_dead


def test_the_limits_hold_for_every_kind_on_the_batch_path(
    models: tuple[Path, dict[str, LoadedModel]], tmp_path: Path
) -> None:
    root, loaded = models
    lines, good, bad = _expected(loaded)
    (tmp_path / "in.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    check_valid, check_dead = _checks(good, bad)
    with beam.Pipeline(runner="FnApiRunner") as p:
        read = p | ReadInferenceRecords(
            ReadConfig((str(tmp_path / "in.jsonl"),), run_id="run-1", pii=TEST_PII)
        )
        checked = read.records | ValidateRecords(
            ValidateConfig(str(root), "run-1", pii=TEST_PII, limits=LIMITS)
        )
        valid = checked.valid | beam.FlatMap(lambda b: b["request_id"].to_pylist())
        dead = (
            (read.dead_letters, checked.dead_letters)
            | beam.Flatten()
            | beam.Map(lambda d: (d.request_id, d.error_message, d.stage))
        )
        assert_that(valid, check_valid, label="valid")
        assert_that(dead, check_dead, label="dead")


def test_the_limits_hold_for_every_kind_on_the_kafka_path(
    models: tuple[Path, dict[str, LoadedModel]],
) -> None:
    root, loaded = models
    lines, good, bad = _expected(loaded)
    n, t0 = len(lines), int(DAY.timestamp() * 1000)
    # One poll of the topic: the batched msgspec decode, then the same validate stage.
    polls = [KafkaBatch("t", 0, tuple(range(n)), tuple(range(n)), (t0,) * n, tuple(lines))]
    parse = ParseConfig(
        "run-1", KafkaReadConfig(topic="t"), skip_finished_windows=False, pii=TEST_PII
    )
    check_valid, check_dead = _checks(good, bad)
    with beam.Pipeline(runner="FnApiRunner") as p:
        parsed = (
            p
            | beam.Create(polls)
            | beam.Map(lambda b: window.TimestampedValue(b, b.timestamps_ms[0] / 1000))
            | beam.WindowInto(window.FixedWindows(5))
            | ParseKafkaRecords(parse)
        )
        checked = parsed.records | ValidateRecords(
            ValidateConfig(str(root), "run-1", pii=TEST_PII, limits=LIMITS)
        )
        valid = checked.valid | beam.FlatMap(lambda b: b["request_id"].to_pylist())
        dead = (
            (parsed.dead_letters, checked.dead_letters)
            | beam.Flatten()
            | beam.Map(lambda d: (d.request_id, d.error_message, d.stage))
        )
        assert_that(valid, check_valid, label="valid")
        assert_that(dead, check_dead, label="dead")


def _sampled(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records as the explain stage gets them: typed, with the sampler's fields."""
    out = []
    for i, r in enumerate(records):
        flagged = i % 4 == 0  # flagged rows get counterfactuals too
        out.append(
            {
                **r,
                "event_ts": DAY,
                "features": list(r["features"].items()),
                "flags": ["flagged"] if flagged else None,
                "source_id": "test",
                "predicted_class": None,
                "sampling_policy": "p/priority",
                "sampling_reason": "always:flagged" if flagged else "priority",
                "inclusion_probability": 1.0,
                "ht_weight": 1.0,
                "stratum_size": len(records),
            }
        )
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_a_poison_row_fails_alone_for_every_kind(
    models: tuple[Path, dict[str, LoadedModel]], kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, loaded = models
    model = loaded[kind]
    config = ExplainConfig(
        shap_background=16,
        stability_baselines=2,
        agnostic_background=8,
        agnostic_permutations=4,
        text_max_length=32,
        counterfactuals_per_query=1,
    )
    bank = ModelBank(str(root), config, load_policies(default_policy_file()), TEST_HASH_KEY)
    good = _sampled(_records(model, 8, f"r-{kind}"))
    poison = dict(good[0], request_id="r-poison")
    if model.card.is_text:
        # The tokenizer refuses this one text, as a model with an input check would.
        encode = TextClassifier.encode

        def picky(self: TextClassifier, texts: list[str]) -> dict[str, Any]:
            if any(POISON_TEXT in t for t in texts):
                raise ValueError("the tokenizer refuses this input")
            return encode(self, texts)

        monkeypatch.setattr(TextClassifier, "encode", picky)
        poison["text"] = POISON_TEXT
    else:  # a feature of the card is missing: the whole group's input matrix used to fail
        poison["features"] = poison["features"][1:]
    alone = {r["request_id"]: r for r in bank.explain(good, "run-1")}
    assert not [r for r in alone.values() if "_error" in r]
    mixed = bank.explain([*good[:5], poison, *good[5:]], "run-1")
    errors = [r for r in mixed if "_error" in r]
    assert [r["_row"]["request_id"] for r in errors] == ["r-poison"]
    explained = {r["request_id"]: r for r in mixed if "_error" not in r}
    assert set(explained) == set(alone)
    for request, record in alone.items():
        twin = explained[request]
        assert twin["explanation_id"] == record["explanation_id"]
        for field in ("attributions", "token_attributions"):
            if record.get(field):
                got = np.array([a["value"] for a in twin[field]])
                want = np.array([a["value"] for a in record[field]])
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        assert twin["counterfactual_status"] == record["counterfactual_status"]
