"""A record's tenant, model id and version can only ever reach that tenant's own registry folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.unit.cards import two_feature_card
from whylake.registry.store import ModelRegistry
from whylake.schemas.errors import InvalidIdError, ModelNotFoundError, RegistryScopeError


def _two_tenants(tmp_path: Path) -> ModelRegistry:
    reg = ModelRegistry(tmp_path / "models")
    for tenant in ("acme", "globex"):
        card = two_feature_card(tenant_id=tenant, model_id="progression")
        module = torch.jit.script(torch.nn.Linear(2, 1))
        reg.register(card, module, np.zeros((2, 2)), np.zeros(2))
    return reg


@pytest.mark.parametrize(
    "model_id, version",
    [
        ("../globex/progression", "1"),  # the attack of issue 14, defect 2
        ("..", "globex/progression/1"),
        ("progression", "../../globex/progression/1"),
        ("progression/../../globex/progression", "1"),
        ("/abs/path", "1"),
        ("m" * 5000, "1"),  # `File name too long` crashed the job
        ("progression", "1\x00"),
    ],
)
def test_ids_that_would_leave_the_tenant_folder_are_refused(
    tmp_path: Path, model_id: str, version: str
) -> None:
    reg = _two_tenants(tmp_path)
    for lookup in (reg.card, reg.load):
        with pytest.raises(InvalidIdError):
            lookup("acme", model_id, version)


@pytest.mark.parametrize("tenant", ["../models/globex", "a" * 5000, "", "ACME", "acme/"])
def test_a_hostile_tenant_id_is_refused_before_any_path_is_built(
    tmp_path: Path, tenant: str
) -> None:
    reg = _two_tenants(tmp_path)
    with pytest.raises(InvalidIdError):
        reg.card(tenant, "progression", "1")


def test_a_symlink_planted_in_a_tenant_folder_cannot_reach_another_tenant(tmp_path: Path) -> None:
    reg = _two_tenants(tmp_path)
    os.symlink(reg.root / "globex" / "progression", reg.root / "acme" / "stolen")
    with pytest.raises(RegistryScopeError, match="outside the tenant's registry folder"):
        reg.load("acme", "stolen", "1")


def test_a_tenant_folder_that_links_to_another_tenant_is_refused(tmp_path: Path) -> None:
    reg = _two_tenants(tmp_path)
    os.symlink(reg.root / "globex", reg.root / "initech")
    with pytest.raises(RegistryScopeError):
        reg.card("initech", "progression", "1")


def test_a_card_naming_another_tenant_is_refused(tmp_path: Path) -> None:
    reg = _two_tenants(tmp_path)
    card_path = reg.root / "acme" / "progression" / "1" / "card.json"
    raw = json.loads(card_path.read_text())
    raw["tenant_id"] = "globex"  # a copied-over card: its rows and model are globex's
    card_path.write_text(json.dumps(raw))
    with pytest.raises(RegistryScopeError, match="may only be explained with that tenant's own"):
        reg.card("acme", "progression", "1")
    with pytest.raises(RegistryScopeError):
        reg.load("acme", "progression", "1")


def test_a_card_whose_artifact_points_outside_its_folder_is_refused(tmp_path: Path) -> None:
    reg = _two_tenants(tmp_path)
    card_path = reg.root / "acme" / "progression" / "1" / "card.json"
    raw = json.loads(card_path.read_text())
    raw["artifact"] = "../../../globex/progression/1/model.pt"
    card_path.write_text(json.dumps(raw))
    with pytest.raises(RegistryScopeError, match="not a file of the version's own folder"):
        reg.load("acme", "progression", "1")


def test_registering_a_card_with_a_hostile_id_writes_nothing(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path / "models")
    card = two_feature_card(model_id="../../outside")
    with pytest.raises(InvalidIdError):
        reg.register(card, torch.jit.script(torch.nn.Linear(2, 1)), np.zeros((2, 2)), np.zeros(2))
    assert not (tmp_path / "outside").exists()
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").rglob("*"))


def test_the_own_tenant_model_still_loads_and_unknown_ones_say_so(tmp_path: Path) -> None:
    reg = _two_tenants(tmp_path)
    assert reg.load("acme", "progression", "1").card.tenant_id == "acme"
    with pytest.raises(ModelNotFoundError):
        reg.card("acme", "unknown", "1")
