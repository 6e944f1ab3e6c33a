"""The demo's models of the other kinds: XGBoost, a scikit-learn pipeline and a text classifier.

Each is trained here on data that ships inside a package, saved in its own portable format and
registered through the same path as `whylake models register` (the card inferred from a
training sample written to Parquet). The text classifier is a tiny BERT configured and trained
here on sentences built from AFINN's sentiment lexicon (`afinn/data/AFINN-en-165.txt`, inside
the afinn package on PyPI), saved with `save_pretrained` and read back by `from_pretrained`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from whylake.jobs.demo_models import SEED, breast_cancer, diabetes
from whylake.registry.registration import Registration, register_model, score_rows
from whylake.registry.store import ModelRegistry
from whylake.schemas.model_card import ModelCard

VERSION = "1"


@dataclass(frozen=True)
class KindDemo:
    """One demo tenant of another model kind."""

    tenant: str
    model_id: str
    kind: str
    train: Callable[[Path], tuple[Path, pd.DataFrame, str]]  # -> artifact, sample, target
    output_name: str
    description: str
    immutable: tuple[str, ...] = ()


def _xgboost(work: Path) -> tuple[Path, pd.DataFrame, str]:
    import xgboost

    data = breast_cancer()
    frame = pd.DataFrame(data.x, columns=list(data.feature_names))
    frame["malignant"] = data.y.astype(np.int64)
    booster = xgboost.train(
        {"objective": "binary:logistic", "max_depth": 3, "eta": 0.2, "seed": SEED, "nthread": 1},
        xgboost.DMatrix(data.x, label=data.y, feature_names=list(data.feature_names)),
        num_boost_round=60,
    )
    path = work / "tumor-gbm.json"
    booster.save_model(str(path))
    return path, frame, "malignant"


def _sklearn(work: Path) -> tuple[Path, pd.DataFrame, str]:
    import skops.io
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    data = diabetes()
    frame = pd.DataFrame(data.x, columns=list(data.feature_names))
    pipeline = make_pipeline(
        StandardScaler(), HistGradientBoostingRegressor(max_iter=80, random_state=SEED)
    ).fit(frame, data.y)
    frame["progression"] = data.y
    path = work / "progression-pipeline.skops"
    skops.io.dump(pipeline, path)
    return path, frame, "progression"


def _text(work: Path) -> tuple[Path, pd.DataFrame, str]:
    from whylake.jobs.demo_text import train_text_classifier

    folder, frame = train_text_classifier(work / "review-sentiment")
    return folder, frame, "positive"


KIND_DEMOS: dict[str, KindDemo] = {
    "umbrella": KindDemo(
        "umbrella",
        "tumor-gbm",
        "xgboost",
        _xgboost,
        "p_malignant",
        "probability that the sampled tumour is malignant (XGBoost)",
    ),
    "hooli": KindDemo(
        "hooli",
        "progression-pipeline",
        "sklearn",
        _sklearn,
        "progression_score",
        "predicted disease progression (scikit-learn pipeline)",
        immutable=("age", "sex"),
    ),
    "vandelay": KindDemo(
        "vandelay",
        "review-sentiment",
        "hf-text",
        _text,
        "p_positive",
        "probability that a review is positive (a tiny BERT)",
    ),
}


def register_kind_models(registry: ModelRegistry, work: Path) -> list[ModelCard]:
    """Train and register each kind's demo model once (a version is never retrained over)."""
    work.mkdir(parents=True, exist_ok=True)
    registered = set(registry.versions())
    cards = []
    for demo in KIND_DEMOS.values():
        if (demo.tenant, demo.model_id, VERSION) in registered:
            cards.append(registry.card(demo.tenant, demo.model_id, VERSION))
            continue
        artifact, sample, target = demo.train(work)
        sample_path = work / f"{demo.model_id}-train.parquet"
        sample.to_parquet(sample_path)  # the same file `whylake models register` would read
        cards.append(
            register_model(
                registry,
                Registration(
                    tenant_id=demo.tenant,
                    model_id=demo.model_id,
                    model_version=VERSION,
                    kind=demo.kind,
                    artifact=artifact,
                    sample=pd.read_parquet(sample_path),
                    target=target,
                    immutable=demo.immutable,
                    output_name=demo.output_name,
                    output_description=demo.description,
                    seed=SEED,
                ),
            )
        )
    return cards


def kind_inputs(
    registry: ModelRegistry, tenant: str, n: int, rng: np.random.Generator
) -> tuple[ModelCard, np.ndarray, list[str] | None, np.ndarray]:
    """n inputs for a kind demo tenant (jittered data rows, or new texts) and their scores."""
    demo = KIND_DEMOS[tenant]
    loaded = registry.load(tenant, demo.model_id, VERSION)
    card = loaded.card
    if card.is_text:
        from whylake.jobs.demo_text import sentences

        texts, _ = sentences(n, rng)
        return (
            card,
            np.zeros((n, 0)),
            texts,
            score_rows(loaded.model, card, np.zeros((0, 0)), texts),
        )
    data = breast_cancer() if demo.kind == "xgboost" else diabetes()
    base = data.x[rng.integers(0, len(data.x), n)]
    x = np.clip(
        base + rng.normal(0.0, 0.05, base.shape) * data.x.std(axis=0),
        data.x.min(axis=0),
        data.x.max(axis=0),
    )
    for j, spec in enumerate(card.features):
        if spec.type in ("int", "bool", "category"):
            x[:, j] = base[:, j]
    return card, x, None, score_rows(loaded.model, card, x)


def text_column(texts: list[str] | None, n: int) -> pa.Array:
    return pa.array(texts if texts is not None else [None] * n, pa.large_string())


def demo_day(day: date) -> str:
    return f"{day:%Y%m%d}"
