"""Stage 1 of the data path: a .tflite file becomes a Graph value."""

from edgert.model.graph import Graph, Operator, Quantization, Sparsity, Subgraph, Tensor
from edgert.model.reader import load_model

__all__ = ["Graph", "Operator", "Quantization", "Sparsity", "Subgraph", "Tensor", "load_model"]
