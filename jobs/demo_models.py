"""Train and register the demo tenants' models on data sets that ship with scikit-learn."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.model_selection import train_test_split
from torch import nn

from whylake.registry.store import ModelRegistry
from whylake.schemas.model_card import FeatureSpec, ModelCard

SEED = 20261122


class Standardized(nn.Module):
    """Standardise raw inputs inside the artifact, so callers pass raw units."""

    def __init__(self, body: nn.Module, mean: np.ndarray, std: np.ndarray, sigmoid: bool):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))
        self.body = body
        self.sigmoid = sigmoid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.body((x - self.mean) / self.std).squeeze(-1)
        if self.sigmoid:
            return torch.sigmoid(z)
        return z


@dataclass(frozen=True)
class DemoData:
    """A bundled data set in raw units, with what the demo needs to know about its columns."""

    name: str
    x: np.ndarray
    y: np.ndarray
    feature_names: tuple[str, ...]
    task: str
    immutable: tuple[str, ...] = ()
    integer: tuple[str, ...] = ()


def breast_cancer() -> DemoData:
    """scikit-learn's Wisconsin breast-cancer set; y = 1 for malignant."""
    raw = load_breast_cancer()
    names = tuple(n.replace(" ", "_") for n in raw.feature_names)
    return DemoData("breast_cancer", raw.data, 1.0 - raw.target, names, "classification")


def diabetes() -> DemoData:
    """scikit-learn's diabetes progression set in raw units (age in years, sex coded 1/2)."""
    raw = load_diabetes(scaled=False)
    return DemoData(
        "diabetes",
        raw.data,
        raw.target.astype(np.float64),
        tuple(raw.feature_names),
        "regression",
        immutable=("age", "sex"),
        integer=("age", "sex"),
    )


def _fit(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    loss_fn: Callable[..., torch.Tensor],
    *,
    weight_decay: float,
    max_epochs: int = 400,
    patience: int = 25,
) -> nn.Module:
    """Full-batch Adam with weight decay and early stopping on a held-out split."""
    x_tr, x_va, y_tr, y_va = train_test_split(x, y, test_size=0.2, random_state=SEED)
    xt, yt = torch.tensor(x_tr, dtype=torch.float32), torch.tensor(y_tr, dtype=torch.float32)
    xv, yv = torch.tensor(x_va, dtype=torch.float32), torch.tensor(y_va, dtype=torch.float32)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=weight_decay)
    best, best_state, waited = float("inf"), None, 0
    for _ in range(max_epochs):
        model.train()
        opt.zero_grad()
        loss_fn(model(xt), yt).backward()
        opt.step()
        model.eval()
        with torch.no_grad():
            val = float(loss_fn(model(xv), yv))
        if val < best - 1e-6:
            best, waited = val, 0
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        else:
            waited += 1
            if waited >= patience:
                break
    assert best_state is not None
    model.load_state_dict(best_state)
    return model.eval()


def _mlp(d: int, hidden: int = 64) -> nn.Module:
    return nn.Sequential(
        nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1)
    )


def train(data: DemoData, kind: str) -> tuple[torch.jit.ScriptModule, dict[str, float]]:
    """Train one model kind on a data set; returns the TorchScript module and its metrics."""
    torch.manual_seed(SEED)
    # One thread: a multi-threaded reduction may sum in another order from run to run.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(data, kind)
    finally:
        torch.set_num_threads(threads)


def _train(data: DemoData, kind: str) -> tuple[torch.jit.ScriptModule, dict[str, float]]:
    mean, std = data.x.mean(axis=0), data.x.std(axis=0) + 1e-12
    d = data.x.shape[1]
    body = _mlp(d) if kind == "mlp" else nn.Linear(d, 1)
    classify = data.task == "classification"
    y = data.y if classify else (data.y - data.y.mean()) / data.y.std()
    loss = nn.BCELoss() if classify else nn.MSELoss()
    net = Standardized(body, mean, std, sigmoid=classify)
    # Weight decay keeps the classifier off saturation: a p of 1e-9 has no usable gradient.
    _fit(net, data.x, y, loss, weight_decay=1e-2 if classify else 1e-4)
    if not classify:
        # Fold the target scaling into the last layer so the artifact speaks the target's units.
        last = body if kind == "linear" else body[-1]
        with torch.no_grad():
            last.weight.mul_(float(data.y.std()))
            last.bias.mul_(float(data.y.std())).add_(float(data.y.mean()))
    scripted = torch.jit.script(net)
    with torch.no_grad():
        out = scripted(torch.tensor(data.x, dtype=torch.float32)).double().numpy()
    if classify:
        metrics = {
            "accuracy": float(((out > 0.5) == (data.y > 0.5)).mean()),
            "saturated_share": float(((out < 1e-6) | (out > 1 - 1e-6)).mean()),
        }
    else:
        resid = out - data.y
        metrics = {"r2": float(1 - (resid**2).sum() / ((data.y - data.y.mean()) ** 2).sum())}
    return scripted, metrics


# tenant -> (data set, model kind, model id, what the output means)
DEMO_TENANTS: dict[str, tuple[Callable[[], DemoData], str, str, str, str]] = {
    "acme": (
        breast_cancer,
        "mlp",
        "tumor-triage",
        "p_malignant",
        "probability that the sampled tumour is malignant",
    ),
    "globex": (
        diabetes,
        "linear",
        "progression",
        "progression_score",
        "predicted disease progression one year after baseline",
    ),
    "initech": (
        diabetes,
        "mlp",
        "progression-nn",
        "progression_score",
        "predicted disease progression one year after baseline",
    ),
}
DEMO_VERSION = "1"


def register_demo_models(registry: ModelRegistry) -> list[ModelCard]:
    """Train every demo tenant's model and register it (idempotent: same bytes, same sha)."""
    cards = []
    registered = set(registry.versions())
    for tenant, (load, kind, model_id, output_name, description) in DEMO_TENANTS.items():
        if (tenant, model_id, DEMO_VERSION) in registered:
            # Versions are immutable: a registered model is reused, never retrained over.
            cards.append(registry.card(tenant, model_id, DEMO_VERSION))
            continue
        data = load()
        scripted, metrics = train(data, kind)
        lower, upper = data.x.min(axis=0), data.x.max(axis=0)
        features = tuple(
            FeatureSpec(
                name=name,
                type="int" if name in data.integer else "float",
                lower=float(lo),
                upper=float(hi),
                immutable=name in data.immutable,
            )
            for name, lo, hi in zip(data.feature_names, lower, upper, strict=True)
        )
        card = ModelCard(
            tenant_id=tenant,
            model_id=model_id,
            model_version=DEMO_VERSION,
            kind=kind,
            task=data.task,
            features=features,
            baseline=tuple(float(v) for v in data.x.mean(axis=0)),
            baseline_kind="training mean",
            output_name=output_name,
            output_description=description,
            decision_threshold=0.5 if data.task == "classification" else 150.0,
            positive_class="malignant" if data.task == "classification" else None,
            negative_class="benign" if data.task == "classification" else None,
            training={
                "dataset": f"sklearn.datasets.{data.name}",
                "rows": int(len(data.x)),
                "seed": SEED,
                **metrics,
            },
        )
        rng = np.random.default_rng(SEED)
        ref = data.x[rng.choice(len(data.x), size=min(200, len(data.x)), replace=False)]
        with torch.no_grad():
            ref_scores = scripted(torch.tensor(ref, dtype=torch.float32)).double().numpy()
        cards.append(registry.register(card, scripted, ref, ref_scores))
    return cards
