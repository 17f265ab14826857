"""Plain values describing a parsed .tflite model: Tensor, Operator, Subgraph, Graph."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Quantization:
    """Affine quantization: real = scale * (q - zero_point), per tensor or along one axis."""

    scales: tuple[float, ...]
    zero_points: tuple[int, ...]
    quantized_dimension: int = 0

    @property
    def per_channel(self) -> bool:
        return len(self.scales) > 1

    @property
    def scale(self) -> float:
        """The single scale of a per-tensor quantized tensor."""
        return self.scales[0]

    @property
    def zero_point(self) -> int:
        return self.zero_points[0]


@dataclass(frozen=True)
class DimensionMetadata:
    """One dimension of a sparse tensor's traversal order (TFLite SparsityParameters)."""

    format: str  # "DENSE" or "SPARSE_CSR"
    dense_size: int
    segments: np.ndarray | None  # int array, SPARSE_CSR only
    indices: np.ndarray | None


@dataclass(frozen=True)
class Sparsity:
    """How a sparse constant is stored (the input of DENSIFY)."""

    traversal_order: tuple[int, ...]
    block_map: tuple[int, ...]
    dim_metadata: tuple[DimensionMetadata, ...]


@dataclass(eq=False)
class Tensor:
    """One tensor of a subgraph. `data` is set for constants: a read-only view into the mapped file.

    For a sparse constant (`sparsity` set, the input of DENSIFY) `data` is the stored compressed
    values (1-D), not the dense array. `type_name` is the TFLite type ("FLOAT32", "RESOURCE", ...);
    RESOURCE/VARIANT tensors use an int32 handle as dtype, STRING/INT4 constants raw storage.
    """

    index: int
    name: str
    shape: tuple[int, ...]
    shape_signature: tuple[int, ...]
    dtype: np.dtype
    quantization: Quantization | None = None
    is_variable: bool = False
    data: np.ndarray | None = None
    sparsity: Sparsity | None = None
    buffer: int = 0
    type_name: str = ""

    @property
    def is_constant(self) -> bool:
        return self.data is not None

    @property
    def size(self) -> int:
        """Number of elements (the dense shape's product)."""
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1

    @property
    def nbytes(self) -> int:
        """Bytes of the dense tensor (what it takes in the arena)."""
        return self.size * self.dtype.itemsize

    @property
    def is_dynamic(self) -> bool:
        return any(d < 0 for d in self.shape_signature)


@dataclass(eq=False)
class Operator:
    """One operator in file order. Optional inputs are -1."""

    index: int
    opcode: str  # builtin name, e.g. "CONV_2D"; "CUSTOM" for custom ops
    version: int
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    options: Any = None  # a dataclass from edgert.model.options, or None
    custom_code: str | None = None
    custom_options: bytes = b""
    intermediates: tuple[int, ...] = ()

    @property
    def name(self) -> str:
        """Human-readable op name for messages: the custom code for CUSTOM ops."""
        return self.custom_code if self.opcode == "CUSTOM" and self.custom_code else self.opcode


@dataclass(eq=False)
class Subgraph:
    index: int
    name: str
    tensors: list[Tensor]
    operators: list[Operator]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]

    def tensor(self, i: int) -> Tensor | None:
        return None if i < 0 else self.tensors[i]


@dataclass(frozen=True)
class SignatureDef:
    key: str
    subgraph_index: int
    inputs: dict[str, int]  # signature name -> tensor index
    outputs: dict[str, int]


@dataclass(eq=False)
class Graph:
    """A whole model. The main subgraph (index 0) is what runs; others are called by IF/CALL_ONCE/WHILE."""

    path: str
    sha256: str
    schema_version: int
    description: str
    subgraphs: list[Subgraph]
    signature_defs: list[SignatureDef] = field(default_factory=list)
    metadata: dict[str, bytes] = field(default_factory=dict)
    file_bytes: int = 0
    # Keeps the mmap alive as long as any constant view is referenced through the Graph.
    _mapping: Any = field(default=None, repr=False)

    @property
    def main(self) -> Subgraph:
        return self.subgraphs[0]

    @property
    def tensors(self) -> list[Tensor]:
        return self.main.tensors

    @property
    def operators(self) -> list[Operator]:
        return self.main.operators

    @property
    def inputs(self) -> tuple[int, ...]:
        return self.main.inputs

    @property
    def outputs(self) -> tuple[int, ...]:
        return self.main.outputs

    @property
    def weight_bytes(self) -> int:
        """Bytes of constant data over all subgraphs (as stored in the file)."""
        return sum(t.data.nbytes for sg in self.subgraphs for t in sg.tensors if t.data is not None)
