"""The model registry: TorchScript artifacts with their model cards, one folder per version."""

from whylake.registry.store import LoadedModel, ModelRegistry

__all__ = ["LoadedModel", "ModelRegistry"]
