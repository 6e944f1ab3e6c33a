"""The TorchScript graph compiler: a model read as affine layers and activations, verified.

Every compiled chain is checked against the model's own output before it is used; a model
that is not such a chain gets `None`, and the explainers fall back to autograd.
"""

from whylake.transforms.explainers.chain.assemble import compile_chain
from whylake.transforms.explainers.chain.ops import Activation, Chain, Elementwise, Layer

__all__ = ["Activation", "Chain", "Elementwise", "Layer", "compile_chain"]
