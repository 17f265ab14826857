"""Builds .tflite models in memory (for tests and tools): tensors, constants, ops, subgraphs -> flatbuffer bytes.

Example::

    b = ModelBuilder(description="test")
    x = b.input("x", (1, 8, 8, 3), np.float32)
    w = b.const("w", np.zeros((4, 3, 3, 3), np.float32))
    bias = b.const("bias", np.zeros(4, np.float32))
    y = b.tensor("y", (1, 8, 8, 4), np.float32)
    b.op("CONV_2D", [x, w, bias], [y], options={"padding": "SAME", "stride_w": 1, "stride_h": 1})
    b.output(y)
    data = b.build()

Serialization uses the flatbuffers builder functions generated in the `tflite` schema package, so
the output follows schema.fbs (version 3) exactly as the TFLite converter writes it: buffer 0 is
the empty buffer, constant data is 16-byte aligned, opcodes carry both `deprecated_builtin_code`
(clamped to 127) and `builtin_code`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import inspect
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Iterator, Mapping, Sequence

import flatbuffers
import numpy as np
import tflite

from edgert.model.graph import DimensionMetadata, Quantization, Sparsity

__all__ = [
    "ModelBuilder",
    "Quantization",
    "Sparsity",
    "DimensionMetadata",
    "RESOURCE",
    "quant",
    "csr_sparsity",
    "options_table_for",
]

SCHEMA_VERSION = 3
FILE_IDENTIFIER = b"TFL3"
# The converter writes opcodes >= 127 as this placeholder in the deprecated int8 field.
_PLACEHOLDER_FOR_GREATER_OP_CODES = 127
_DATA_ALIGNMENT = 16

# dtype marker for resource tensors (VAR_HANDLE outputs); numpy has no resource dtype.
RESOURCE = "resource"
VARIANT = "variant"

_NUMPY_TO_TENSOR_TYPE: dict[np.dtype, int] = {
    np.dtype(np.float32): tflite.TensorType.FLOAT32,
    np.dtype(np.float16): tflite.TensorType.FLOAT16,
    np.dtype(np.float64): tflite.TensorType.FLOAT64,
    np.dtype(np.int32): tflite.TensorType.INT32,
    np.dtype(np.uint8): tflite.TensorType.UINT8,
    np.dtype(np.int64): tflite.TensorType.INT64,
    np.dtype(np.bool_): tflite.TensorType.BOOL,
    np.dtype(np.int16): tflite.TensorType.INT16,
    np.dtype(np.complex64): tflite.TensorType.COMPLEX64,
    np.dtype(np.complex128): tflite.TensorType.COMPLEX128,
    np.dtype(np.int8): tflite.TensorType.INT8,
    np.dtype(np.uint64): tflite.TensorType.UINT64,
    np.dtype(np.uint32): tflite.TensorType.UINT32,
    np.dtype(np.uint16): tflite.TensorType.UINT16,
}

# Ops whose options table is not simply CamelCase(op name) + "Options", or that have none.
# None = the op takes no builtin options.
_OPTIONS_TABLE: dict[str, str | None] = {
    "CONV_2D": "Conv2DOptions",
    "DEPTHWISE_CONV_2D": "DepthwiseConv2DOptions",
    "TRANSPOSE_CONV": "TransposeConvOptions",
    "FULLY_CONNECTED": "FullyConnectedOptions",
    "BATCH_MATMUL": "BatchMatMulOptions",
    "ADD": "AddOptions",
    "SUB": "SubOptions",
    "MUL": "MulOptions",
    "DIV": "DivOptions",
    "MAXIMUM": "MaximumMinimumOptions",
    "MINIMUM": "MaximumMinimumOptions",
    "SQUARED_DIFFERENCE": "SquaredDifferenceOptions",
    "RSQRT": None,
    "SQRT": None,
    "RELU": None,
    "RELU6": None,
    "RELU_N1_TO_1": None,
    "RELU_0_TO_1": None,
    "LEAKY_RELU": "LeakyReluOptions",
    "PRELU": None,
    "HARD_SWISH": "HardSwishOptions",
    "LOGISTIC": None,
    "TANH": None,
    "EXP": "ExpOptions",
    "LOG": None,
    "ABS": "AbsOptions",
    "NEG": "NegOptions",
    "SOFTMAX": "SoftmaxOptions",
    "LOG_SOFTMAX": "LogSoftmaxOptions",
    "L2_NORMALIZATION": "L2NormOptions",
    "LOCAL_RESPONSE_NORMALIZATION": "LocalResponseNormalizationOptions",
    "MEAN": "ReducerOptions",
    "SUM": "ReducerOptions",
    "REDUCE_MAX": "ReducerOptions",
    "REDUCE_MIN": "ReducerOptions",
    "REDUCE_PROD": "ReducerOptions",
    "REDUCE_ANY": "ReducerOptions",
    "REDUCE_ALL": "ReducerOptions",
    "AVERAGE_POOL_2D": "Pool2DOptions",
    "MAX_POOL_2D": "Pool2DOptions",
    "L2_POOL_2D": "Pool2DOptions",
    "PAD": "PadOptions",
    "PADV2": "PadV2Options",
    "MIRROR_PAD": "MirrorPadOptions",
    "RESHAPE": "ReshapeOptions",
    "SQUEEZE": "SqueezeOptions",
    "EXPAND_DIMS": "ExpandDimsOptions",
    "CONCATENATION": "ConcatenationOptions",
    "STRIDED_SLICE": "StridedSliceOptions",
    "SLICE": "SliceOptions",
    "TRANSPOSE": "TransposeOptions",
    "GATHER": "GatherOptions",
    "GATHER_ND": "GatherNdOptions",
    "RESIZE_BILINEAR": "ResizeBilinearOptions",
    "RESIZE_NEAREST_NEIGHBOR": "ResizeNearestNeighborOptions",
    "DEPTH_TO_SPACE": "DepthToSpaceOptions",
    "SPACE_TO_DEPTH": "SpaceToDepthOptions",
    "BATCH_TO_SPACE_ND": "BatchToSpaceNDOptions",
    "SPACE_TO_BATCH_ND": "SpaceToBatchNDOptions",
    "DEQUANTIZE": "DequantizeOptions",
    "QUANTIZE": "QuantizeOptions",
    "DENSIFY": "DensifyOptions",
    "CAST": "CastOptions",
    "SPLIT": "SplitOptions",
    "SPLIT_V": "SplitVOptions",
    "PACK": "PackOptions",
    "UNPACK": "UnpackOptions",
    "SHAPE": "ShapeOptions",
    "TILE": "TileOptions",
    "ARG_MAX": "ArgMaxOptions",
    "ARG_MIN": "ArgMinOptions",
    "GELU": "GeluOptions",
    "VAR_HANDLE": "VarHandleOptions",
    "READ_VARIABLE": "ReadVariableOptions",
    "ASSIGN_VARIABLE": "AssignVariableOptions",
    "CALL_ONCE": "CallOnceOptions",
    "IF": "IfOptions",
    "WHILE": "WhileOptions",
    "SVDF": "SVDFOptions",
    "RNN": "RNNOptions",
    "LSTM": "LSTMOptions",
    "UNIDIRECTIONAL_SEQUENCE_LSTM": "UnidirectionalSequenceLSTMOptions",
    "CUSTOM": None,
}

# Option fields whose values are schema enums: field name -> enum class name in `tflite`.
_ENUM_FIELDS: dict[str, str] = {
    "padding": "Padding",
    "fused_activation_function": "ActivationFunctionType",
    "weights_format": "FullyConnectedOptionsWeightsFormat",
    "kernel_type": "LSTMKernelType",
    "combiner": "CombinerType",
    "mode": "MirrorPadMode",
    "in_data_type": "TensorType",
    "out_data_type": "TensorType",
    "output_type": "TensorType",
    "out_type": "TensorType",
    "idx_out_type": "TensorType",
    "quantized_bias_type": "TensorType",
}
_ENUM_FIELDS_BY_TABLE: dict[tuple[str, str], str] = {
    ("LSHProjectionOptions", "type"): "LSHProjectionType",
}


def quant(scale: float | Sequence[float], zero_point: int | Sequence[int] = 0, axis: int = 0) -> Quantization:
    """Shorthand for a Quantization: scalars give per-tensor, sequences per-channel along `axis`."""
    scales = tuple(float(s) for s in np.atleast_1d(np.asarray(scale, dtype=np.float64)))
    zps = tuple(int(z) for z in np.atleast_1d(np.asarray(zero_point, dtype=np.int64)))
    if len(zps) == 1 and len(scales) > 1:
        zps = zps * len(scales)
    if len(zps) != len(scales):
        raise ValueError(f"quantization has {len(scales)} scales but {len(zps)} zero points")
    return Quantization(scales=scales, zero_points=zps, quantized_dimension=int(axis))


def csr_sparsity(dense: np.ndarray, block_shape: tuple[int, int] | None = None) -> tuple[np.ndarray, Sparsity]:
    """Encodes a 2-D matrix as TFLite stores sparse weights: rows dense, columns CSR.

    Returns (values, sparsity). Without `block_shape` the values are the non-zero elements in
    row-major order. With `block_shape=(bh, bw)` the matrix is tiled into blocks, a block is kept
    when any of its elements is non-zero, and values are the kept blocks flattened (the layout
    DENSIFY and the sparse FULLY_CONNECTED kernels read: traversal (0, 1, 2, 3), block_map (0, 1)).
    """
    dense = np.asarray(dense)
    if dense.ndim != 2:
        raise ValueError(f"csr_sparsity needs a 2-D matrix, got shape {dense.shape}")
    rows, cols = dense.shape
    if block_shape is None:
        segments, indices, values = [0], [], []
        for r in range(rows):
            nz = np.flatnonzero(dense[r])
            indices.extend(int(c) for c in nz)
            values.extend(dense[r, nz])
            segments.append(len(indices))
        dims = (
            DimensionMetadata("DENSE", rows, None, None),
            DimensionMetadata("SPARSE_CSR", 0, np.asarray(segments, np.int32), np.asarray(indices, np.int32)),
        )
        return np.asarray(values, dtype=dense.dtype), Sparsity((0, 1), (), dims)
    bh, bw = block_shape
    if rows % bh or cols % bw:
        raise ValueError(f"matrix shape {dense.shape} is not a multiple of block shape {block_shape}")
    brows, bcols = rows // bh, cols // bw
    blocks = dense.reshape(brows, bh, bcols, bw).transpose(0, 2, 1, 3)
    segments, indices, kept = [0], [], []
    for r in range(brows):
        for c in range(bcols):
            if np.any(blocks[r, c]):
                indices.append(c)
                kept.append(blocks[r, c].reshape(-1))
        segments.append(len(indices))
    dims = (
        DimensionMetadata("DENSE", brows, None, None),
        DimensionMetadata("SPARSE_CSR", 0, np.asarray(segments, np.int32), np.asarray(indices, np.int32)),
        DimensionMetadata("DENSE", bh, None, None),
        DimensionMetadata("DENSE", bw, None, None),
    )
    values = np.concatenate(kept) if kept else np.zeros(0, dense.dtype)
    return values.astype(dense.dtype), Sparsity((0, 1, 2, 3), (0, 1), dims)


def options_table_for(opcode: str) -> str | None:
    """Name of the builtin options table of `opcode` (e.g. MAXIMUM -> MaximumMinimumOptions), None if it has none."""
    if opcode in _OPTIONS_TABLE:
        return _OPTIONS_TABLE[opcode]
    guess = "".join(p.capitalize() if not p[0].isdigit() else p.upper() for p in opcode.split("_")) + "Options"
    return guess if hasattr(tflite.BuiltinOptions, guess) else None


def _builtin_code(opcode: str) -> int:
    code = getattr(tflite.BuiltinOperator, opcode, None)
    if not isinstance(code, int):
        raise ValueError(f"unknown builtin operator {opcode!r}")
    return code


def _tensor_type(dtype: Any) -> int:
    if isinstance(dtype, str) and dtype in (RESOURCE, VARIANT):
        return tflite.TensorType.RESOURCE if dtype == RESOURCE else tflite.TensorType.VARIANT
    dt = np.dtype(dtype)
    if dt not in _NUMPY_TO_TENSOR_TYPE:
        raise ValueError(f"dtype {dt} has no TFLite tensor type")
    return _NUMPY_TO_TENSOR_TYPE[dt]


def _camel(snake: str) -> str:
    return "".join(p[:1].upper() + p[1:] for p in snake.split("_"))


@dataclass(frozen=True)
class _FieldInfo:
    camel: str  # the generated accessor name, e.g. "StrideW"
    kind: str  # "scalar", "string", "vector"
    element: np.dtype | None = None


def _m(name: str) -> Any:
    # `tflite.X` is the class X (the package star-imports it); the builder functions live in module tflite.X.
    return importlib.import_module(f"tflite.{name}")


_FLAGS_TO_DTYPE = {
    "Int8": np.int8, "Uint8": np.uint8, "Int16": np.int16, "Uint16": np.uint16, "Int32": np.int32,
    "Uint32": np.uint32, "Int64": np.int64, "Uint64": np.uint64, "Float32": np.float32,
    "Float64": np.float64, "Bool": np.bool_,
}


@lru_cache(maxsize=None)  # a pure function of the installed schema package
def _table_fields(table: str) -> dict[str, _FieldInfo]:
    """Fields of an options table, found from the generated module: snake_case name -> kind."""
    mod = importlib.import_module(f"tflite.{table}")
    cls = getattr(mod, table)
    prefix = f"{table}Add"
    fields: dict[str, _FieldInfo] = {}
    for fn_name in dir(mod):
        if not fn_name.startswith(prefix):
            continue
        camel = fn_name[len(prefix):]
        snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", camel).lower()
        accessor = getattr(cls, camel, None)
        src = inspect.getsource(accessor) if accessor is not None else ""
        if "self._tab.String(" in src:
            fields[snake] = _FieldInfo(camel, "string")
        elif hasattr(mod, f"{table}Start{camel}Vector"):
            # The element type is only visible in the generated reader's source.
            src = inspect.getsource(getattr(cls, camel + "AsNumpy"))
            m = re.search(r"GetVectorAsNumpy\(flatbuffers\.number_types\.(\w+)Flags", src)
            fields[snake] = _FieldInfo(camel, "vector", np.dtype(_FLAGS_TO_DTYPE[m.group(1)]))
        else:
            fields[snake] = _FieldInfo(camel, "scalar")
    return fields


def _enum_value(table: str, field_name: str, value: Any) -> Any:
    if not isinstance(value, str):
        return value
    enum_name = _ENUM_FIELDS_BY_TABLE.get((table, field_name)) or _ENUM_FIELDS.get(field_name)
    if enum_name is None:
        raise ValueError(f"{table}.{field_name}: got string {value!r} but the field is not an enum")
    enum_cls = getattr(tflite, enum_name)
    v = getattr(enum_cls, value.upper(), None)
    if not isinstance(v, int):
        names = sorted(k for k, x in vars(enum_cls).items() if isinstance(x, int) and not k.startswith("_"))
        raise ValueError(f"{table}.{field_name}: {value!r} is not one of {names}")
    return v


def _options_dict(options: Any) -> dict[str, Any]:
    if options is None:
        return {}
    if dataclasses.is_dataclass(options) and not isinstance(options, type):
        return {f.name: getattr(options, f.name) for f in dataclasses.fields(options) if getattr(options, f.name) is not None}
    return dict(options)


def _validate_options(table: str, options: Mapping[str, Any]) -> None:
    fields = _table_fields(table)
    for key in options:
        if key not in fields:
            valid = sorted(fields)
            raise ValueError(f"{table} has no field {key!r}; fields are {valid}")


@dataclass
class _TensorDraft:
    name: str
    shape: tuple[int, ...]
    tensor_type: int
    quantization: Quantization | None
    buffer: int
    is_variable: bool = False
    shape_signature: tuple[int, ...] | None = None
    sparsity: Sparsity | None = None


@dataclass
class _OpDraft:
    opcode_index: int
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    options_table: str | None
    options: dict[str, Any]
    custom_options: bytes | None
    intermediates: tuple[int, ...]


@dataclass
class _SubgraphDraft:
    name: str
    tensors: list[_TensorDraft] = field(default_factory=list)
    operators: list[_OpDraft] = field(default_factory=list)
    inputs: list[int] = field(default_factory=list)
    outputs: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class _SignatureDraft:
    key: str
    subgraph: int
    inputs: dict[str, int]
    outputs: dict[str, int]


class ModelBuilder:
    """Collects tensors, constants and operators, then serializes a TFLite flatbuffer with `build()`.

    All tensor methods act on the *current* subgraph (subgraph 0 unless inside `with b.subgraph()`)
    and return the tensor's index in it. Optional operator inputs are given as -1.
    """

    def __init__(self, description: str = "edgert test model", main_name: str = "main"):
        self.description = description
        self._subgraphs: list[_SubgraphDraft] = [_SubgraphDraft(main_name)]
        self._current = 0
        self._buffers: list[bytes] = [b""]  # buffer 0: the empty buffer every model starts with
        self._opcodes: list[tuple[int, str | None, int]] = []
        self._metadata: list[tuple[str, bytes]] = []
        self._signatures: list[_SignatureDraft] = []

    # -- subgraphs -------------------------------------------------------------------------
    @property
    def current_subgraph(self) -> int:
        return self._current

    @contextlib.contextmanager
    def subgraph(self, name: str | None = None) -> Iterator[int]:
        """Adds a new subgraph; inside the block, tensor and op calls go to it. Yields its index."""
        index = len(self._subgraphs)
        self._subgraphs.append(_SubgraphDraft(name if name is not None else f"subgraph_{index}"))
        previous, self._current = self._current, index
        try:
            yield index
        finally:
            self._current = previous

    @property
    def _sg(self) -> _SubgraphDraft:
        return self._subgraphs[self._current]

    # -- tensors ---------------------------------------------------------------------------
    def tensor(
        self,
        name: str,
        shape: Sequence[int],
        dtype: Any,
        quant: Quantization | None = None,
        *,
        is_variable: bool = False,
        shape_signature: Sequence[int] | None = None,
    ) -> int:
        """An activation (no data). `shape_signature` marks dynamic dims with -1."""
        return self._add_tensor(
            _TensorDraft(
                name=name,
                shape=tuple(int(d) for d in shape),
                tensor_type=_tensor_type(dtype),
                quantization=quant,
                buffer=0,
                is_variable=is_variable,
                shape_signature=None if shape_signature is None else tuple(int(d) for d in shape_signature),
            )
        )

    def input(self, name: str, shape: Sequence[int], dtype: Any, quant: Quantization | None = None,
              *, shape_signature: Sequence[int] | None = None) -> int:
        """An activation that is also an input of the current subgraph (in call order)."""
        t = self.tensor(name, shape, dtype, quant, shape_signature=shape_signature)
        self._sg.inputs.append(t)
        return t

    def output(self, *tensors: int) -> None:
        """Marks tensors as outputs of the current subgraph, in order."""
        for t in tensors:
            self._check_tensor(t)
            self._sg.outputs.append(t)

    def const(self, name: str, data: np.ndarray, quant: Quantization | None = None, *, dtype: Any = None) -> int:
        """A constant tensor holding `data` (cast to `dtype` if given), shape = data.shape."""
        arr = np.asarray(data) if dtype is None else np.asarray(data).astype(dtype)
        if arr.dtype == np.float64 and dtype is None and not isinstance(data, np.ndarray):
            arr = arr.astype(np.float32)  # Python float lists mean float32, as in every TFLite model
        little_endian = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))  # flatbuffers are little-endian
        buf = self._add_buffer(little_endian.tobytes())
        return self._add_tensor(_TensorDraft(name, tuple(arr.shape), _tensor_type(arr.dtype), quant, buf))

    def sparse_const(self, name: str, values: np.ndarray, dense_shape: Sequence[int], sparsity: Sparsity,
                     quant: Quantization | None = None) -> int:
        """A sparse constant: `values` are the stored elements, `dense_shape` the shape DENSIFY produces."""
        arr = np.ascontiguousarray(values)
        buf = self._add_buffer(arr.tobytes())
        return self._add_tensor(
            _TensorDraft(name, tuple(int(d) for d in dense_shape), _tensor_type(arr.dtype), quant, buf, sparsity=sparsity)
        )

    def variable(self, name: str, shape: Sequence[int], dtype: Any, quant: Quantization | None = None,
                 initial: np.ndarray | None = None) -> int:
        """A variable tensor (is_variable; e.g. LSTM/SVDF state), optionally with initial data."""
        t = self.tensor(name, shape, dtype, quant, is_variable=True)
        if initial is not None:
            arr = np.asarray(initial, dtype=dtype).reshape(tuple(shape))
            self._sg.tensors[t].buffer = self._add_buffer(arr.tobytes())
        return t

    # -- operators -------------------------------------------------------------------------
    def op(self, opcode: str, inputs: Sequence[int], outputs: Sequence[int], options: Any = None,
           version: int = 1, *, intermediates: Sequence[int] = ()) -> int:
        """Adds a builtin operator. `options`: dict of schema field names (or an options dataclass).

        Enum fields take upper-case names ("SAME", "RELU6") or ints; vector fields take sequences.
        Ops that have an options table always get one (empty = schema defaults), as the converter
        writes them. Returns the operator's index in the current subgraph.
        """
        opcode = opcode.upper()
        code = _builtin_code(opcode)
        if opcode == "CUSTOM":
            raise ValueError("use custom_op() for custom operators")
        table = options_table_for(opcode)
        if dataclasses.is_dataclass(options) and type(options).__name__ != table:
            raise ValueError(f"{opcode} takes {table or 'no options'}, got a {type(options).__name__}")
        opts = _options_dict(options)
        if table is None and opts:
            raise ValueError(f"{opcode} takes no builtin options, got {sorted(opts)}")
        if table is not None:
            _validate_options(table, opts)
            for k, v in opts.items():
                if _table_fields(table)[k].kind == "scalar":
                    opts[k] = _enum_value(table, k, v)
        return self._add_op(self._opcode_index(code, None, version), inputs, outputs, table, opts, None, intermediates)

    def custom_op(self, custom_code: str, inputs: Sequence[int], outputs: Sequence[int],
                  custom_options: bytes = b"", version: int = 1) -> int:
        """Adds a CUSTOM operator named `custom_code` with opaque (flexbuffer) `custom_options`."""
        idx = self._opcode_index(tflite.BuiltinOperator.CUSTOM, custom_code, version)
        return self._add_op(idx, inputs, outputs, None, {}, bytes(custom_options), ())

    # -- model-level -----------------------------------------------------------------------
    def metadata(self, name: str, data: bytes) -> None:
        """Adds a metadata entry (e.g. "min_runtime_version" -> b"1.5.0")."""
        self._metadata.append((name, bytes(data)))

    def signature(self, key: str, inputs: Mapping[str, int], outputs: Mapping[str, int], subgraph: int = 0) -> None:
        """Adds a SignatureDef: signature names -> tensor indices of `subgraph`."""
        self._signatures.append(_SignatureDraft(key, subgraph, dict(inputs), dict(outputs)))

    def build(self) -> bytes:
        """Serializes the model: a TFLite flatbuffer with file identifier TFL3."""
        fb = flatbuffers.Builder(1024)
        buffers = list(self._buffers)
        metadata_entries = []
        for name, data in self._metadata:
            metadata_entries.append((name, len(buffers)))
            buffers.append(data)

        buffer_offsets = [self._write_buffer(fb, data) for data in buffers]
        opcode_offsets = [self._write_opcode(fb, *oc) for oc in self._opcodes]
        subgraph_offsets = [self._write_subgraph(fb, sg) for sg in self._subgraphs]
        metadata_offsets = []
        for name, buf in metadata_entries:
            n = fb.CreateString(name)
            _m("Metadata").MetadataStart(fb)
            _m("Metadata").MetadataAddName(fb, n)
            _m("Metadata").MetadataAddBuffer(fb, buf)
            metadata_offsets.append(_m("Metadata").MetadataEnd(fb))
        signature_offsets = [self._write_signature(fb, s) for s in self._signatures]
        description = fb.CreateString(self.description)

        vec_buffers = _offset_vector(fb, buffer_offsets)
        vec_opcodes = _offset_vector(fb, opcode_offsets)
        vec_subgraphs = _offset_vector(fb, subgraph_offsets)
        vec_metadata = _offset_vector(fb, metadata_offsets) if metadata_offsets else None
        vec_signatures = _offset_vector(fb, signature_offsets) if signature_offsets else None

        M = _m("Model")
        M.ModelStart(fb)
        M.ModelAddVersion(fb, SCHEMA_VERSION)
        M.ModelAddOperatorCodes(fb, vec_opcodes)
        M.ModelAddSubgraphs(fb, vec_subgraphs)
        M.ModelAddDescription(fb, description)
        M.ModelAddBuffers(fb, vec_buffers)
        if vec_metadata is not None:
            M.ModelAddMetadata(fb, vec_metadata)
        if vec_signatures is not None:
            M.ModelAddSignatureDefs(fb, vec_signatures)
        fb.Finish(M.ModelEnd(fb), file_identifier=FILE_IDENTIFIER)
        return bytes(fb.Output())

    # -- internals -------------------------------------------------------------------------
    def _check_tensor(self, t: int) -> None:
        if not 0 <= t < len(self._sg.tensors):
            raise ValueError(f"tensor index {t} out of range (subgraph {self._current} has {len(self._sg.tensors)} tensors)")

    def _add_tensor(self, draft: _TensorDraft) -> int:
        self._sg.tensors.append(draft)
        return len(self._sg.tensors) - 1

    def _add_buffer(self, data: bytes) -> int:
        self._buffers.append(data)
        return len(self._buffers) - 1

    def _opcode_index(self, code: int, custom_code: str | None, version: int) -> int:
        key = (int(code), custom_code, int(version))
        if key not in self._opcodes:
            self._opcodes.append(key)
        return self._opcodes.index(key)

    def _add_op(self, opcode_index, inputs, outputs, table, opts, custom_options, intermediates) -> int:
        for t in list(inputs) + list(outputs) + list(intermediates):
            if t != -1:
                self._check_tensor(t)
        self._sg.operators.append(
            _OpDraft(opcode_index, tuple(int(i) for i in inputs), tuple(int(o) for o in outputs), table, opts,
                     custom_options, tuple(int(i) for i in intermediates))
        )
        return len(self._sg.operators) - 1

    @staticmethod
    def _write_buffer(fb: flatbuffers.Builder, data: bytes) -> int:
        data_off = _aligned_bytes(fb, data) if data else None
        _m("Buffer").BufferStart(fb)
        if data_off is not None:
            _m("Buffer").BufferAddData(fb, data_off)
        return _m("Buffer").BufferEnd(fb)

    @staticmethod
    def _write_opcode(fb: flatbuffers.Builder, code: int, custom_code: str | None, version: int) -> int:
        custom = fb.CreateString(custom_code) if custom_code is not None else None
        O = _m("OperatorCode")
        O.OperatorCodeStart(fb)
        O.OperatorCodeAddDeprecatedBuiltinCode(fb, min(code, _PLACEHOLDER_FOR_GREATER_OP_CODES))
        if custom is not None:
            O.OperatorCodeAddCustomCode(fb, custom)
        O.OperatorCodeAddVersion(fb, version)
        O.OperatorCodeAddBuiltinCode(fb, code)
        return O.OperatorCodeEnd(fb)

    def _write_subgraph(self, fb: flatbuffers.Builder, sg: _SubgraphDraft) -> int:
        tensor_offsets = [_write_tensor(fb, t) for t in sg.tensors]
        op_offsets = [_write_operator(fb, op) for op in sg.operators]
        vec_tensors = _offset_vector(fb, tensor_offsets)
        vec_inputs = _int_vector(fb, sg.inputs, np.int32)
        vec_outputs = _int_vector(fb, sg.outputs, np.int32)
        vec_ops = _offset_vector(fb, op_offsets)
        name = fb.CreateString(sg.name)
        S = _m("SubGraph")
        S.SubGraphStart(fb)
        S.SubGraphAddTensors(fb, vec_tensors)
        S.SubGraphAddInputs(fb, vec_inputs)
        S.SubGraphAddOutputs(fb, vec_outputs)
        S.SubGraphAddOperators(fb, vec_ops)
        S.SubGraphAddName(fb, name)
        return S.SubGraphEnd(fb)

    @staticmethod
    def _write_signature(fb: flatbuffers.Builder, sig: _SignatureDraft) -> int:
        def tensor_maps(m: dict[str, int]) -> int:
            offs = []
            for name, index in m.items():
                n = fb.CreateString(name)
                _m("TensorMap").TensorMapStart(fb)
                _m("TensorMap").TensorMapAddName(fb, n)
                _m("TensorMap").TensorMapAddTensorIndex(fb, index)
                offs.append(_m("TensorMap").TensorMapEnd(fb))
            return _offset_vector(fb, offs)

        ins, outs = tensor_maps(sig.inputs), tensor_maps(sig.outputs)
        key = fb.CreateString(sig.key)
        D = _m("SignatureDef")
        D.SignatureDefStart(fb)
        D.SignatureDefAddInputs(fb, ins)
        D.SignatureDefAddOutputs(fb, outs)
        D.SignatureDefAddSignatureKey(fb, key)
        D.SignatureDefAddSubgraphIndex(fb, sig.subgraph)
        return D.SignatureDefEnd(fb)


# -- flatbuffer writing helpers (module level: they hold no state) -----------------------------

def _offset_vector(fb: flatbuffers.Builder, offsets: Sequence[int]) -> int:
    fb.StartVector(4, len(offsets), 4)
    for off in reversed(offsets):
        fb.PrependUOffsetTRelative(off)
    return fb.EndVector()


def _int_vector(fb: flatbuffers.Builder, values: Sequence[int], dtype: Any) -> int:
    return fb.CreateNumpyVector(np.asarray(list(values), dtype=dtype))


def _aligned_bytes(fb: flatbuffers.Builder, data: bytes) -> int:
    # Constant data 16-byte aligned (as the converter writes it) so kernels can map it in place.
    n = len(data)
    fb.StartVector(1, n, _DATA_ALIGNMENT)
    fb.head = fb.head - n
    fb.Bytes[fb.head:fb.head + n] = data
    return fb.EndVector()


def _write_quantization(fb: flatbuffers.Builder, q: Quantization) -> int:
    scale = fb.CreateNumpyVector(np.asarray(q.scales, dtype=np.float32))
    zp = fb.CreateNumpyVector(np.asarray(q.zero_points, dtype=np.int64))
    Q = _m("QuantizationParameters")
    Q.QuantizationParametersStart(fb)
    Q.QuantizationParametersAddScale(fb, scale)
    Q.QuantizationParametersAddZeroPoint(fb, zp)
    Q.QuantizationParametersAddQuantizedDimension(fb, q.quantized_dimension)
    return Q.QuantizationParametersEnd(fb)


_INDEX_VECTOR = {
    np.dtype(np.int32): (tflite.SparseIndexVector.Int32Vector, "Int32Vector"),
    np.dtype(np.uint16): (tflite.SparseIndexVector.Uint16Vector, "Uint16Vector"),
    np.dtype(np.uint8): (tflite.SparseIndexVector.Uint8Vector, "Uint8Vector"),
}


def _write_index_vector(fb: flatbuffers.Builder, arr: np.ndarray) -> tuple[int, int]:
    arr = np.asarray(arr)
    if arr.dtype not in _INDEX_VECTOR:
        arr = arr.astype(np.int32)
    union_type, table = _INDEX_VECTOR[arr.dtype]
    values = fb.CreateNumpyVector(arr)
    mod = _m(table)
    getattr(mod, f"{table}Start")(fb)
    getattr(mod, f"{table}AddValues")(fb, values)
    return union_type, getattr(mod, f"{table}End")(fb)


def _write_sparsity(fb: flatbuffers.Builder, sp: Sparsity) -> int:
    dim_offsets = []
    for dm in sp.dim_metadata:
        seg = _write_index_vector(fb, dm.segments) if dm.segments is not None else None
        idx = _write_index_vector(fb, dm.indices) if dm.indices is not None else None
        D = _m("DimensionMetadata")
        D.DimensionMetadataStart(fb)
        D.DimensionMetadataAddFormat(fb, getattr(tflite.DimensionType, dm.format))
        D.DimensionMetadataAddDenseSize(fb, dm.dense_size)
        if seg is not None:
            D.DimensionMetadataAddArraySegmentsType(fb, seg[0])
            D.DimensionMetadataAddArraySegments(fb, seg[1])
        if idx is not None:
            D.DimensionMetadataAddArrayIndicesType(fb, idx[0])
            D.DimensionMetadataAddArrayIndices(fb, idx[1])
        dim_offsets.append(D.DimensionMetadataEnd(fb))
    traversal = _int_vector(fb, sp.traversal_order, np.int32)
    block_map = _int_vector(fb, sp.block_map, np.int32)
    dims = _offset_vector(fb, dim_offsets)
    P = _m("SparsityParameters")
    P.SparsityParametersStart(fb)
    P.SparsityParametersAddTraversalOrder(fb, traversal)
    P.SparsityParametersAddBlockMap(fb, block_map)
    P.SparsityParametersAddDimMetadata(fb, dims)
    return P.SparsityParametersEnd(fb)


def _write_tensor(fb: flatbuffers.Builder, t: _TensorDraft) -> int:
    shape = _int_vector(fb, t.shape, np.int32)
    signature = _int_vector(fb, t.shape_signature, np.int32) if t.shape_signature is not None else None
    name = fb.CreateString(t.name)
    q = _write_quantization(fb, t.quantization) if t.quantization is not None else None
    sp = _write_sparsity(fb, t.sparsity) if t.sparsity is not None else None
    T = _m("Tensor")
    T.TensorStart(fb)
    T.TensorAddShape(fb, shape)
    T.TensorAddType(fb, t.tensor_type)
    T.TensorAddBuffer(fb, t.buffer)
    T.TensorAddName(fb, name)
    if q is not None:
        T.TensorAddQuantization(fb, q)
    if t.is_variable:
        T.TensorAddIsVariable(fb, True)
    if sp is not None:
        T.TensorAddSparsity(fb, sp)
    if signature is not None:
        T.TensorAddShapeSignature(fb, signature)
    return T.TensorEnd(fb)


def _write_options(fb: flatbuffers.Builder, table: str, opts: Mapping[str, Any]) -> int:
    mod = importlib.import_module(f"tflite.{table}")
    fields = _table_fields(table)
    values: list[tuple[Any, Any]] = []
    # Strings and vectors must be written before the table is started.
    for key, value in opts.items():
        info = fields[key]
        add = getattr(mod, f"{table}Add{info.camel}")
        if info.kind == "string":
            value = fb.CreateString(str(value))
        elif info.kind == "vector":
            value = fb.CreateNumpyVector(np.asarray(list(value), dtype=info.element))
        values.append((add, value))
    getattr(mod, f"{table}Start")(fb)
    for add, value in values:
        add(fb, value)
    return getattr(mod, f"{table}End")(fb)


def _write_operator(fb: flatbuffers.Builder, op: _OpDraft) -> int:
    options = _write_options(fb, op.options_table, op.options) if op.options_table is not None else None
    inputs = _int_vector(fb, op.inputs, np.int32)
    outputs = _int_vector(fb, op.outputs, np.int32)
    intermediates = _int_vector(fb, op.intermediates, np.int32) if op.intermediates else None
    custom = fb.CreateNumpyVector(np.frombuffer(op.custom_options, dtype=np.uint8)) if op.custom_options else None
    O = _m("Operator")
    O.OperatorStart(fb)
    O.OperatorAddOpcodeIndex(fb, op.opcode_index)
    O.OperatorAddInputs(fb, inputs)
    O.OperatorAddOutputs(fb, outputs)
    if options is not None:
        O.OperatorAddBuiltinOptionsType(fb, getattr(tflite.BuiltinOptions, op.options_table))
        O.OperatorAddBuiltinOptions(fb, options)
    if custom is not None:
        O.OperatorAddCustomOptions(fb, custom)
        O.OperatorAddCustomOptionsFormat(fb, tflite.CustomOptionsFormat.FLEXBUFFERS)
    if intermediates is not None:
        O.OperatorAddIntermediates(fb, intermediates)
    return O.OperatorEnd(fb)
