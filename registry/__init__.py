"""The model registry: artifacts of every model kind with their cards, one folder per version."""

from whylake.registry.store import LoadedModel, ModelRegistry

__all__ = ["LoadedModel", "ModelRegistry"]
