"""whylake: an immutable, queryable audit trail of why each sampled prediction came out so.

The public API, to embed whylake's stages in a Beam pipeline of your own::

    import apache_beam as beam
    import whylake

    store = whylake.StoreConfig(registry_root=..., policies=whylake.load_policies(path),
                                hash_key=whylake.Secret(key, "vault:..."),
                                catalog=whylake.CatalogConfig.embedded("/data/whylake"))
    with beam.Pipeline() as p:
        read = p | whylake.ReadInferenceRecords(
            whylake.ReadConfig(("logs/*.jsonl",), run_id, pii=store.pii()))
        stages = {"records": read.records, "dead_letters": read.dead_letters}
        stages | whylake.ExplainAndStore(store)

Names are imported on first use, so `import whylake` stays cheap (no Beam, no torch).
"""

from __future__ import annotations

import importlib
from importlib import metadata
from typing import Any

try:
    __version__ = metadata.version("whylake")
except metadata.PackageNotFoundError:  # pragma: no cover - running from an unpacked tree
    __version__ = "0+unknown"

_EXPORTS = {
    # the composites and their configs, in pipeline order
    "ReadInferenceRecords": "whylake.transforms.read",
    "ReadConfig": "whylake.transforms.read",
    "ReadFromKafkaTopic": "whylake.transforms.kafka",
    "ParseKafkaRecords": "whylake.transforms.kafka",
    "CommitKafkaOffsets": "whylake.transforms.kafka",
    "KafkaReadConfig": "whylake.transforms.kafka",
    "ValidateRecords": "whylake.transforms.validate",
    "ValidateConfig": "whylake.transforms.validate",
    "SampleByPolicy": "whylake.transforms.sample",
    "SampleAndCountByPolicy": "whylake.transforms.sample",
    "SampleConfig": "whylake.transforms.sample",
    "ExplainSampledRecords": "whylake.transforms.explain",
    "ExplainStageConfig": "whylake.transforms.explain",
    "ExplainConfig": "whylake.transforms.explainers.config",
    "CheckExplanations": "whylake.transforms.check",
    "CheckConfig": "whylake.transforms.check",
    "AppendToIceberg": "whylake.transforms.write_iceberg",
    "AppendConfig": "whylake.transforms.write_iceberg",
    "WriteToOpenSearch": "whylake.transforms.write_opensearch",
    "OpenSearchConfig": "whylake.lake.opensearch",
    "ExplainAndStore": "whylake.pipelines.explain_and_store",
    "StoreConfig": "whylake.pipelines.configs",
    "BatchJobConfig": "whylake.pipelines.configs",
    "StreamJobConfig": "whylake.pipelines.configs",
    # the store, the registry, settings
    "CatalogConfig": "whylake.lake.catalog",
    "open_catalog": "whylake.lake.catalog",
    "ensure_tables": "whylake.lake.catalog",
    "run_tenant_sql": "whylake.lake.audit",
    "reconstruct": "whylake.lake.reconstruct",
    "ModelRegistry": "whylake.registry.store",
    "LoadedModel": "whylake.registry.store",
    "ModelCard": "whylake.schemas.model_card",
    "FeatureSpec": "whylake.schemas.model_card",
    "Secret": "whylake.schemas.secrets",
    "WhylakeError": "whylake.schemas.errors",
    "SamplingPolicies": "whylake.transforms.sampling.policy",
    "load_policies": "whylake.transforms.sampling.policy",
    "default_policy_file": "whylake.transforms.sampling.policy",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'whylake' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
