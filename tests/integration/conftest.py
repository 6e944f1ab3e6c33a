"""A demo home: registered models, a generated day of logs, and one finished batch run."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest
from pyiceberg.catalog import Catalog

from jobs.batch_job import BatchSummary, run_batch
from jobs.demo_data import GeneratedDay, generate_day
from jobs.demo_models import register_demo_models
from lake.catalog import CatalogConfig, ensure_tables, open_catalog
from pipelines.batch import BatchJobConfig
from registry.store import ModelRegistry
from transforms.sampling.policy import load_policies

DAY = date(2026, 11, 21)
POLICY = str(Path(__file__).resolve().parents[2] / "schemas/policies/default.yaml")


@dataclass
class DemoHome:
    """Everything a test needs to look at one real run."""

    home: Path
    registry: ModelRegistry
    generated: GeneratedDay
    first: BatchSummary

    def config(self, **overrides: object) -> BatchJobConfig:
        args: dict[str, object] = dict(
            inputs=tuple(str(p) for p in self.generated.paths),
            registry_root=str(self.home / "models"),
            policies=load_policies(POLICY),
            catalog=CatalogConfig(home=self.home),
            day=DAY,
        )
        args.update(overrides)
        return BatchJobConfig(**args)  # type: ignore[arg-type]

    def catalog(self) -> Catalog:
        catalog = open_catalog(CatalogConfig(home=self.home))
        ensure_tables(catalog)
        return catalog


@pytest.fixture(scope="session")
def demo_home(tmp_path_factory: pytest.TempPathFactory) -> DemoHome:
    home = tmp_path_factory.mktemp("whylake-home")
    registry = ModelRegistry(home / "models")
    register_demo_models(registry)
    generated = generate_day(registry, home / "input", DAY, per_tenant=1500)
    partial = DemoHome(home, registry, generated, None)  # type: ignore[arg-type]
    partial.first = run_batch(partial.config())
    return partial
