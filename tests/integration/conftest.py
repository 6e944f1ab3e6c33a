"""A demo home: registered models, a generated day of logs, and one finished batch run."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import date
from pathlib import Path

import pytest
from pyiceberg.catalog import Catalog

from whylake.jobs.batch_job import BatchSummary, run_batch
from whylake.jobs.demo_data import GeneratedDay, generate_day
from whylake.jobs.demo_models import register_demo_models
from whylake.lake.catalog import CatalogConfig, ensure_tables, open_catalog
from whylake.pipelines.configs import BatchJobConfig, StoreConfig
from whylake.registry.store import ModelRegistry
from whylake.schemas.secrets import Secret
from whylake.transforms.sampling.policy import default_policy_file, load_policies

DAY = date(2026, 11, 21)
POLICY = default_policy_file()
# A test key: the tests check that raw user ids never reach a table, hashed under it.
TEST_HASH_KEY = Secret("whylake-tests-hash-key", "tests")


@dataclass
class DemoHome:
    """Everything a test needs to look at one real run."""

    home: Path
    registry: ModelRegistry
    generated: GeneratedDay
    first: BatchSummary

    def config(self, **overrides: object) -> BatchJobConfig:
        """A batch config over this home; overrides name job or store fields alike."""
        store_fields = {f.name for f in fields(StoreConfig)}
        store: dict[str, object] = dict(
            registry_root=str(self.home / "models"),
            policies=load_policies(POLICY),
            hash_key=TEST_HASH_KEY,
            catalog=CatalogConfig.embedded(self.home),
        )
        store.update({k: v for k, v in overrides.items() if k in store_fields})
        job: dict[str, object] = dict(inputs=tuple(str(p) for p in self.generated.paths), day=DAY)
        job.update({k: v for k, v in overrides.items() if k not in store_fields})
        return BatchJobConfig(store=StoreConfig(**store), **job)  # type: ignore[arg-type]

    def catalog(self) -> Catalog:
        catalog = open_catalog(CatalogConfig.embedded(self.home))
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
