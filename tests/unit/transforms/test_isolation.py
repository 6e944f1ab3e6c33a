"""Poison isolation: a batch that fails is narrowed to the failing rows; good rows are explained."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.unit.cards import two_feature_card
from tests.unit.keys import TEST_HASH_KEY, TEST_PII
from whylake.registry.store import ModelRegistry
from whylake.schemas.errors import ExplanationCheckError
from whylake.transforms.check import CheckConfig, check_record
from whylake.transforms.explainers.config import ExplainConfig
from whylake.transforms.isolate import isolate_failures
from whylake.transforms.model_bank import ModelBank
from whylake.transforms.sampling.policy import default_policy_file, load_policies

POISON = 123.0


class Picky(torch.nn.Module):
    """A small ReLU net that refuses one input value, as a model with an input check would."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(7)
        self.hidden = torch.nn.Linear(2, 8)
        self.out = torch.nn.Linear(8, 1)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool((x[:, 0] == 123.0).any()):  # POISON
            raise ValueError("the model refuses this input")
        return self.out(torch.relu(self.hidden(x))).squeeze(-1)


def test_bisection_finds_each_failing_item_alone_in_order() -> None:
    seen: list[int] = []

    def run(part: Any) -> list[int]:
        seen.append(len(part))
        if any(i in (3, 77) for i in part):
            raise ValueError(f"bad in {list(part)[:3]}")
        return [i * 10 for i in part]

    out = isolate_failures(range(100), run)
    assert [item for item, _ in out.failures] == [3, 77]
    assert out.results == [i * 10 for i in range(100) if i not in (3, 77)]
    assert out.calls <= 1 + 2 * 2 * 7  # about 2 log2(n) per failing item
    assert seen[0] == 100


def test_a_batch_that_does_not_fail_runs_once() -> None:
    out = isolate_failures([1, 2, 3], lambda part: list(part))
    assert (out.results, out.failures, out.calls) == ([1, 2, 3], [], 1)


def _rows(values: list[tuple[int, tuple[float, float]]]) -> list[dict[str, Any]]:
    return [
        {
            "tenant_id": "acme",
            "request_id": f"r-{i}",
            "event_ts": datetime(2026, 11, 21, 10, tzinfo=UTC),
            "model_id": "m",
            "model_version": "1",
            "features": [("a", a), ("b", b)],
            "score": 0.0,
            "user_id": f"user-{i}",
            "flags": ["flagged"] if i % 8 == 0 else None,
            "source_id": "test",
            "predicted_class": None,
            "sampling_policy": "p/priority",
            "sampling_reason": "always:flagged" if i % 8 == 0 else "priority",
            "inclusion_probability": 1.0,
            "ht_weight": 1.0,
            "stratum_size": 10,
        }
        for i, (a, b) in values
    ]


@pytest.fixture(scope="module")
def bank(tmp_path_factory: pytest.TempPathFactory) -> ModelBank:
    root: Path = tmp_path_factory.mktemp("models")
    reg = ModelRegistry(root)
    rng = np.random.default_rng(3)
    ref = rng.normal(size=(50, 2))
    module = torch.jit.script(Picky().eval())
    scores = module(torch.tensor(ref, dtype=torch.float32)).detach().double().numpy()
    card = two_feature_card(kind="mlp", decision_threshold=float(np.median(scores)))
    reg.register(card, module, ref, scores)
    config = ExplainConfig(shap_background=20, stability_baselines=2)
    return ModelBank(str(root), config, load_policies(default_policy_file()), TEST_HASH_KEY)


def _by_request(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["request_id"]: r for r in records if "_error" not in r}


@pytest.mark.parametrize(
    "poison, why",
    [
        ((POISON, 1.0), "refuses"),  # raises inside the model: the whole batch used to fail
        ((3e38, -3e38), None),  # finite in float32, inf inside the model: must not spread
    ],
)
def test_a_poison_row_fails_alone_and_good_rows_come_out_as_without_it(
    bank: ModelBank, poison: tuple[float, float], why: str | None
) -> None:
    rng = np.random.default_rng(11)
    good = [(i, (float(a), float(b))) for i, (a, b) in enumerate(rng.normal(size=(24, 2)))]
    alone = _by_request(bank.explain(_rows(good), "run-1"))
    mixed = bank.explain(_rows([*good[:17], (999, poison), *good[17:]]), "run-1")
    errors = [r for r in mixed if "_error" in r]
    explained = _by_request(mixed)
    if why is not None:
        assert [r["_row"]["request_id"] for r in errors] == ["r-999"]
        assert why in str(errors[0]["_error"])
    else:  # explained, but the check stage refuses it (non-finite numbers), alone
        with pytest.raises(ExplanationCheckError):
            check_record(explained.pop("r-999"), CheckConfig("run-1", pii=TEST_PII))
    assert set(alone) <= set(explained)
    for request, record in alone.items():
        twin = explained[request]
        assert twin["explanation_id"] == record["explanation_id"]
        got = np.array([a["value"] for a in twin["attributions"]])
        want = np.array([a["value"] for a in record["attributions"]])
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
        assert twin["shap_values"] == pytest.approx(record["shap_values"], rel=1e-6, abs=1e-7)
        assert twin["counterfactual_status"] == record["counterfactual_status"]
        assert twin["ig_steps"] == record["ig_steps"]
