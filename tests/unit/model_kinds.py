"""Small trained models of every kind, saved in their own formats, with training samples."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

SEED = 7


@dataclass(frozen=True)
class Trained:
    """One model of a kind: its artifact, a training sample and the target column."""

    kind: str
    artifact: Path
    sample: pd.DataFrame
    target: str


def tabular(n: int = 300, d: int = 6) -> pd.DataFrame:
    """A seeded sample: floats, an integer, a 0/1 flag and a 3-level category code."""
    rng = np.random.default_rng(SEED)
    frame = pd.DataFrame(rng.normal(size=(n, d - 3)), columns=[f"x{j}" for j in range(d - 3)])
    frame["age"] = rng.integers(18, 80, n)
    frame["member"] = rng.integers(0, 2, n)
    frame["region"] = rng.integers(0, 3, n)
    logit = frame["x0"] - 0.5 * frame["x1"] + 0.03 * (frame["age"] - 50) + 0.7 * frame["member"]
    frame["label"] = (logit + rng.normal(0, 0.5, n) > 0).astype(np.int64)
    return frame


def features(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c != "label"]


def train_xgboost(tmp: Path) -> Trained:
    import xgboost

    frame = tabular()
    names = features(frame)
    booster = xgboost.train(
        {"objective": "binary:logistic", "max_depth": 3, "seed": SEED, "nthread": 1},
        xgboost.DMatrix(frame[names].to_numpy(), label=frame["label"], feature_names=names),
        num_boost_round=15,
    )
    path = tmp / "model.json"
    booster.save_model(str(path))
    return Trained("xgboost", path, frame, "label")


def train_lightgbm(tmp: Path) -> Trained:
    import lightgbm

    frame = tabular()
    names = features(frame)
    booster = lightgbm.train(
        {"objective": "binary", "num_leaves": 7, "verbose": -1, "seed": SEED, "num_threads": 1},
        lightgbm.Dataset(frame[names].to_numpy(), label=frame["label"], feature_name=names),
        num_boost_round=15,
    )
    path = tmp / "model.txt"
    booster.save_model(str(path))
    return Trained("lightgbm", path, frame, "label")


def sklearn_pipeline() -> object:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    frame = tabular()
    return make_pipeline(StandardScaler(), LogisticRegression()).fit(
        frame[features(frame)], frame["label"]
    )


def train_sklearn(tmp: Path, fmt: str = "skops") -> Trained:
    pipeline = sklearn_pipeline()
    if fmt == "skops":
        import skops.io

        path = tmp / "pipeline.skops"
        skops.io.dump(pipeline, path)
    else:
        import joblib

        path = tmp / "pipeline.joblib"
        joblib.dump(pipeline, path)
    return Trained("sklearn", path, tabular(), "label")


def train_torch(tmp: Path) -> Trained:
    import torch

    frame = tabular()
    names = features(frame)
    x = torch.as_tensor(frame[names].to_numpy(), dtype=torch.float32)
    y = torch.as_tensor(frame["label"].to_numpy(), dtype=torch.float32)
    torch.manual_seed(SEED)
    net = torch.nn.Sequential(
        torch.nn.Linear(len(names), 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)
    )

    class Probability(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("mean", x.mean(0))
            self.register_buffer("std", x.std(0))
            self.net = net

        def forward(self, rows: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(self.net((rows - self.mean) / self.std)).squeeze(-1)

    model = Probability()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(150):
        opt.zero_grad()
        torch.nn.functional.binary_cross_entropy(model(x), y).backward()
        opt.step()
    path = tmp / "model.pt"
    torch.jit.save(torch.jit.script(model.eval()), str(path))
    return Trained("torch", path, frame, "label")


def train_text(tmp: Path) -> Trained:
    from whylake.jobs.demo_text import train_text_classifier

    folder, frame = train_text_classifier(tmp / "checkpoint", n=256, epochs=1)
    return Trained("hf-text", folder, frame, "positive")


TRAINERS = {
    "torch": train_torch,
    "sklearn": train_sklearn,
    "xgboost": train_xgboost,
    "lightgbm": train_lightgbm,
    "hf-text": train_text,
}
