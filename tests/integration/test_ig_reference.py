"""Recorded IG attributions against an independent 4,096-step reference, on every demo model."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from tests.integration.conftest import DemoHome
from whylake.jobs.demo_models import DEMO_TENANTS
from whylake.lake.catalog import EXPLANATIONS

pytestmark = pytest.mark.integration
REFERENCE_STEPS = 4096
TOLERANCE = 0.005  # ExplainConfig.ig_tolerance: of the row's largest attribution
ROWS_PER_MODEL = 120


def midpoint_ig(model: torch.jit.ScriptModule, x: np.ndarray, base: np.ndarray) -> np.ndarray:
    """IG by the midpoint rule in float64 with plain autograd: no whylake code, another rule."""
    model = model.double()
    alphas = (torch.arange(REFERENCE_STEPS, dtype=torch.float64) + 0.5) / REFERENCE_STEPS
    out = np.empty_like(x)
    for i in range(0, len(x), 8):
        xi = torch.tensor(x[i : i + 8], dtype=torch.float64)
        bi = torch.tensor(base[i : i + 8], dtype=torch.float64)
        path = bi[:, None, :] + alphas[None, :, None] * (xi - bi)[:, None, :]
        path = path.reshape(-1, x.shape[1]).requires_grad_(True)
        (grad,) = torch.autograd.grad(model(path).sum(), path)
        mean = grad.reshape(len(xi), REFERENCE_STEPS, -1).mean(dim=1)
        out[i : i + 8] = ((xi - bi) * mean).numpy()
    return out


@pytest.mark.parametrize("tenant", sorted(DEMO_TENANTS))
def test_recorded_attributions_match_a_4096_step_reference(
    demo_home: DemoHome, tenant: str
) -> None:
    table = demo_home.catalog().load_table(EXPLANATIONS)
    rows = table.scan(row_filter=f"tenant_id == '{tenant}'").to_arrow().to_pylist()
    rows = sorted(rows, key=lambda r: r["request_id"])[:ROWS_PER_MODEL]
    assert rows, f"no explanations of {tenant}"
    model_path = demo_home.home / "models" / tenant / rows[0]["model_id"] / "1" / "model.pt"
    model = torch.jit.load(str(model_path))  # the artifact, recorded inputs and baseline only
    x = np.array([[a["input_value"] for a in r["attributions"]] for r in rows])
    base = np.array([[a["baseline_value"] for a in r["attributions"]] for r in rows])
    recorded = np.array([[a["value"] for a in r["attributions"]] for r in rows])
    reference = midpoint_ig(model, x, base)
    error = np.abs(recorded - reference).max(axis=1) / np.abs(reference).max(axis=1)
    worst = int(error.argmax())
    steps = Counter(r["ig_steps"] for r in rows)
    print(
        f"\nIG {tenant}: {len(rows)} rows, rows per step count {dict(sorted(steps.items()))}, "
        f"max error vs 4,096-step midpoint {error.max():.2e}, max recorded convergence "
        f"{max(r['ig_convergence'] for r in rows):.2e}"
    )
    assert error.max() <= TOLERANCE, (
        f"{rows[worst]['request_id']}: {error.max():.4f} of the largest attribution at "
        f"{rows[worst]['ig_steps']} steps (recorded convergence {rows[worst]['ig_convergence']})"
    )
    assert all(r["ig_convergence"] <= TOLERANCE for r in rows)
    assert all(r["ig_steps"] >= 100 for r in rows)
