"""The registry keeps TorchScript artifacts immutable and checks their sha256 on load."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.unit.cards import two_feature_card
from whylake.registry.store import ModelRegistry, sha256_file
from whylake.schemas.errors import ModelNotFoundError, RegistryIntegrityError
from whylake.schemas.model_card import ModelCard


def _card() -> ModelCard:
    return two_feature_card(model_id="lin", output_description="a linear score")


def _module(w: tuple[float, float]) -> torch.jit.ScriptModule:
    torch.manual_seed(0)
    lin = torch.nn.Linear(2, 1)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([w]))
        lin.bias.zero_()
    return torch.jit.script(lin)


def test_register_then_load_gives_the_same_model(tmp_path) -> None:
    reg = ModelRegistry(tmp_path)
    card = reg.register(_card(), _module((1.0, 2.0)), np.zeros((3, 2)), np.zeros(3))
    loaded = reg.load("acme", "lin", "1")
    assert loaded.card == card
    assert card.artifact_sha256 == sha256_file(tmp_path / "acme/lin/1/model.pt")
    out = loaded.module(torch.tensor([[1.0, 1.0]]))
    assert out.item() == pytest.approx(3.0)
    # Anyone can load the artifact without whylake's code.
    plain = torch.jit.load(str(tmp_path / "acme/lin/1/model.pt"))
    assert plain(torch.tensor([[2.0, 0.0]])).item() == pytest.approx(2.0)


def test_a_version_cannot_be_overwritten_with_other_bytes(tmp_path) -> None:
    reg = ModelRegistry(tmp_path)
    reg.register(_card(), _module((1.0, 2.0)), np.zeros((3, 2)), np.zeros(3))
    with pytest.raises(RegistryIntegrityError, match="new version"):
        reg.register(_card(), _module((5.0, 2.0)), np.zeros((3, 2)), np.zeros(3))
    assert reg.load("acme", "lin", "1").module(torch.tensor([[1.0, 0.0]])).item() == 1.0


def test_a_tampered_artifact_is_refused(tmp_path) -> None:
    reg = ModelRegistry(tmp_path)
    reg.register(_card(), _module((1.0, 2.0)), np.zeros((3, 2)), np.zeros(3))
    torch.jit.save(_module((9.0, 9.0)), str(tmp_path / "acme/lin/1/model.pt"))
    with pytest.raises(RegistryIntegrityError, match="sha256"):
        reg.load("acme", "lin", "1")


def test_unknown_model_names_what_is_missing(tmp_path) -> None:
    with pytest.raises(ModelNotFoundError, match="acme/nope/1"):
        ModelRegistry(tmp_path).load("acme", "nope", "1")
