"""The reference explainer workload: breast-cancer data, standardised, and an unsaturated MLP."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split

# A probability this close to 0 or 1 leaves a sigmoid's gradient ~1e-6 of its peak: gradient
# attributions and gradient counterfactuals degenerate there, so we report the share of such rows.
SATURATION = 1e-6


@dataclass(frozen=True)
class WorkloadConfig:
    """How the reference model is trained; every field is recorded with the benchmark."""

    seed: int = 0
    hidden: int = 64
    background_rows: int = 100
    learning_rate: float = 1e-3
    # L2 on the weights and early stopping on a validation split keep the logits moderate; the
    # 100%-accuracy model of an earlier run put 86% of rows at p < 1e-6 or p > 1 - 1e-6.
    weight_decay: float = 3e-2
    max_epochs: int = 3000
    patience: int = 100
    validation_share: float = 0.2
    test_share: float = 0.2

    def __post_init__(self) -> None:
        if self.hidden < 1 or self.background_rows < 1 or self.max_epochs < 1:
            raise ValueError("hidden, background_rows and max_epochs must be positive")
        if not 0 < self.validation_share + self.test_share < 1:
            raise ValueError("validation_share + test_share must lie in (0, 1)")


@dataclass(frozen=True, eq=False)
class ReferenceWorkload:
    """Model, rows, background and baseline every explainer in the benchmark is given."""

    feature_names: tuple[str, ...]
    inputs: np.ndarray  # (569, 30) float32, standardised with the training split's mean / std
    labels: np.ndarray  # (569,) 0/1 (1 = benign, as scikit-learn encodes it)
    train_index: np.ndarray
    test_index: np.ndarray
    background: np.ndarray  # (100, 30) training rows
    baseline: np.ndarray  # (30,) training feature means (0 after standardisation, up to rounding)
    model: torch.nn.Module
    scores: np.ndarray  # (569,) the model's probabilities
    metrics: dict[str, float] = field(default_factory=dict)
    settings: dict[str, object] = field(default_factory=dict)


def build_mlp(d: int, hidden: int) -> torch.nn.Sequential:
    """The reference architecture: d -> hidden -> hidden -> 1 with ReLU and a sigmoid output."""
    return torch.nn.Sequential(
        torch.nn.Linear(d, hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden, hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden, 1),
        torch.nn.Sigmoid(),
    )


def model_sha256(model: torch.nn.Module) -> str:
    """sha256 over the model's parameters in order, so two runs can tell they used one model."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def build_reference_workload(config: WorkloadConfig | None = None) -> ReferenceWorkload:
    """Load, split, standardise, train with early stopping; deterministic for a given seed."""
    cfg = config or WorkloadConfig()
    data = load_breast_cancer()
    raw = np.asarray(data.data, dtype=np.float64)
    labels = np.asarray(data.target, dtype=np.int64)
    index = np.arange(raw.shape[0])
    held_out = cfg.validation_share + cfg.test_share
    train_idx, rest_idx = train_test_split(
        index, test_size=held_out, random_state=cfg.seed, stratify=labels
    )
    val_idx, test_idx = train_test_split(
        rest_idx,
        test_size=cfg.test_share / held_out,
        random_state=cfg.seed,
        stratify=labels[rest_idx],
    )
    mean = raw[train_idx].mean(axis=0)
    std = raw[train_idx].std(axis=0)
    inputs = ((raw - mean) / std).astype(np.float32)

    torch.manual_seed(cfg.seed)
    model = build_mlp(inputs.shape[1], cfg.hidden)
    optimiser = torch.optim.Adam(
        model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay
    )
    loss_fn = torch.nn.BCELoss()
    x_train = torch.from_numpy(inputs[train_idx])
    y_train = torch.from_numpy(labels[train_idx].astype(np.float32))
    x_val = torch.from_numpy(inputs[val_idx])
    y_val = torch.from_numpy(labels[val_idx].astype(np.float32))
    best_loss, best_state, best_epoch, waited = float("inf"), None, 0, 0
    for epoch in range(cfg.max_epochs):
        model.train()
        optimiser.zero_grad()
        loss = loss_fn(model(x_train).squeeze(1), y_train)
        loss.backward()
        optimiser.step()
        model.eval()
        with torch.no_grad():
            val_loss = float(loss_fn(model(x_val).squeeze(1), y_val))
        if val_loss < best_loss - 1e-6:
            best_loss, best_epoch, waited = val_loss, epoch, 0
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        else:
            waited += 1
            if waited >= cfg.patience:
                break
    assert best_state is not None  # at least one epoch ran
    model.load_state_dict(best_state)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)

    with torch.no_grad():
        scores = model(torch.from_numpy(inputs)).squeeze(1).double().numpy()
    predicted = (scores >= 0.5).astype(np.int64)
    saturated = (scores < SATURATION) | (scores > 1.0 - SATURATION)
    rng = np.random.default_rng(cfg.seed)
    background_idx = np.sort(rng.choice(train_idx, size=cfg.background_rows, replace=False))
    metrics = {
        "accuracy_train": float((predicted[train_idx] == labels[train_idx]).mean()),
        "accuracy_validation": float((predicted[val_idx] == labels[val_idx]).mean()),
        "accuracy_test": float((predicted[test_idx] == labels[test_idx]).mean()),
        "accuracy_all": float((predicted == labels).mean()),
        "saturated_share": float(saturated.mean()),
        "saturation_cutoff": SATURATION,
        "share_p_below_1e-3_or_above_1-1e-3": float(((scores < 1e-3) | (scores > 1 - 1e-3)).mean()),
        "best_epoch": float(best_epoch),
        "validation_loss": best_loss,
    }
    settings = {
        "dataset": "sklearn.datasets.load_breast_cancer (569 x 30)",
        "standardisation": "per feature, mean / std of the training split",
        "architecture": f"{inputs.shape[1]} -> {cfg.hidden} -> {cfg.hidden} -> 1, ReLU, sigmoid",
        "training": "full-batch Adam, BCE, weight decay, early stopping on validation loss",
        "split": {"train": len(train_idx), "validation": len(val_idx), "test": len(test_idx)},
        "baseline": "training feature means",
        "background": f"{cfg.background_rows} training rows, seeded choice",
        "model_sha256": model_sha256(model),
        **{k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
    }
    return ReferenceWorkload(
        feature_names=tuple(str(n) for n in data.feature_names),
        inputs=inputs,
        labels=labels,
        train_index=np.sort(train_idx),
        test_index=np.sort(test_idx),
        background=inputs[background_idx],
        baseline=inputs[train_idx].mean(axis=0).astype(np.float32),
        model=model,
        scores=scores,
        metrics=metrics,
        settings=settings,
    )
