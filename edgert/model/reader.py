"""Read a .tflite file into a Graph: mmap the file, parse the flatbuffer, validate, zero-copy constants.

Every way a file can be wrong ends in a ModelError that names the file and the problem; constant
data stays in the mapped file (read-only numpy views), so weights cost file-backed, evictable
pages rather than private memory.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np
import tflite

from edgert.errors import ModelError
from edgert.model.graph import (
    DimensionMetadata,
    Graph,
    Operator,
    Quantization,
    SignatureDef,
    Sparsity,
    Subgraph,
    Tensor,
)
from edgert.model.options import parse_options

SUPPORTED_SCHEMA_VERSIONS = (3,)
MAX_RANK = 8
MAX_DIM = 1 << 31  # no sane tensor dimension is larger
MAX_TENSOR_BYTES = 1 << 40

# TensorType code -> (name, numpy dtype used for storage). RESOURCE/VARIANT tensors hold an int32
# handle; STRING and INT4 constants are kept as raw bytes.
TENSOR_TYPES: dict[int, tuple[str, np.dtype]] = {
    0: ("FLOAT32", np.dtype(np.float32)),
    1: ("FLOAT16", np.dtype(np.float16)),
    2: ("INT32", np.dtype(np.int32)),
    3: ("UINT8", np.dtype(np.uint8)),
    4: ("INT64", np.dtype(np.int64)),
    5: ("STRING", np.dtype(np.uint8)),
    6: ("BOOL", np.dtype(np.bool_)),
    7: ("INT16", np.dtype(np.int16)),
    8: ("COMPLEX64", np.dtype(np.complex64)),
    9: ("INT8", np.dtype(np.int8)),
    10: ("FLOAT64", np.dtype(np.float64)),
    11: ("COMPLEX128", np.dtype(np.complex128)),
    12: ("UINT64", np.dtype(np.uint64)),
    13: ("RESOURCE", np.dtype(np.int32)),
    14: ("VARIANT", np.dtype(np.int32)),
    15: ("UINT32", np.dtype(np.uint32)),
    16: ("UINT16", np.dtype(np.uint16)),
    17: ("INT4", np.dtype(np.int8)),
    18: ("BFLOAT16", np.dtype(np.uint16)),
}
_PACKED_TYPES = {"STRING", "INT4"}  # data length is not shape x itemsize
BUILTIN_NAMES: dict[int, str] = {
    v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_") and isinstance(v, int)
}
_SPARSE_VECTOR_TYPES = {1: np.int32, 2: np.uint16, 3: np.uint8}  # SparseIndexVector union


def load_model(source: str | os.PathLike | bytes | bytearray | memoryview) -> Graph:
    """Parse a .tflite file (path: memory-mapped) or an in-memory model into a Graph."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        return _parse(data, "<memory>", hashlib.sha256(data).hexdigest(), keep=None)
    path = Path(source)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ModelError(f"{path}: model file not found") from None
    except OSError as exc:
        raise ModelError(f"{path}: cannot read model file: {exc.strerror}") from None
    if path.is_dir():
        raise ModelError(f"{path}: is a directory, not a .tflite file")
    if size == 0:
        raise ModelError(f"{path}: model file is empty")
    try:
        with open(path, "rb") as f:
            mapping = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as exc:
        raise ModelError(f"{path}: cannot map model file: {exc.strerror}") from None
    digest = hashlib.sha256(mapping).hexdigest()
    return _parse(mapping, str(path), digest, keep=mapping)


def _parse(buf: Any, where: str, digest: str, keep: Any) -> Graph:
    size = len(buf)
    if size < 8:
        raise ModelError(f"{where}: truncated file ({size} bytes); a .tflite file is a flatbuffer of at least 8 bytes")
    if bytes(buf[4:8]) != b"TFL3":
        raise ModelError(f"{where}: not a TensorFlow Lite model (file identifier {bytes(buf[4:8])!r}, expected b'TFL3')")
    try:
        return _Parser(buf, where, digest, keep).graph()
    except ModelError:
        raise
    except (struct.error, IndexError, ValueError, TypeError, OverflowError, UnicodeDecodeError, MemoryError) as exc:
        # The flatbuffer library reads offsets blindly; anything it trips on is a corrupt file.
        raise ModelError(f"{where}: corrupt flatbuffer ({type(exc).__name__}: {exc})") from None


class _Parser:
    """One parse of one file; holds the buffer and bounds every read against its size."""

    def __init__(self, buf: Any, where: str, digest: str, keep: Any):
        self.buf = buf
        self.size = len(buf)
        self.where = where
        self.digest = digest
        self.keep = keep
        self.root = tflite.Model.GetRootAs(buf, 0)

    def fail(self, message: str) -> ModelError:
        return ModelError(f"{self.where}: {message}")

    def count(self, n: int, what: str, min_bytes: int = 4) -> int:
        """A vector length read from the file, checked against the file size."""
        if n < 0 or n * min_bytes > self.size:
            raise self.fail(f"{what} count {n} is impossible for a {self.size}-byte file")
        return n

    def ints(self, arr: Any, what: str) -> tuple[int, ...]:
        if not isinstance(arr, np.ndarray):
            return ()
        return tuple(int(x) for x in arr)

    def graph(self) -> Graph:
        m = self.root
        version = m.Version()
        if version not in SUPPORTED_SCHEMA_VERSIONS:
            raise self.fail(f"unsupported schema version {version} (edgert reads version 3)")
        self.buffers = [m.Buffers(i) for i in range(self.count(m.BuffersLength(), "buffer"))]
        self.opcodes = [self.opcode(m.OperatorCodes(i), i) for i in range(self.count(m.OperatorCodesLength(), "opcode"))]
        n_sub = self.count(m.SubgraphsLength(), "subgraph")
        if n_sub == 0:
            raise self.fail("model has no subgraphs")
        subgraphs = [self.subgraph(m.Subgraphs(i), i) for i in range(n_sub)]
        for sg in subgraphs:
            for op in sg.operators:
                self.check_subgraph_refs(op, n_sub, sg)
        description = m.Description()
        return Graph(
            path=self.where,
            sha256=self.digest,
            schema_version=version,
            description=description.decode("utf-8", "replace") if description else "",
            subgraphs=subgraphs,
            signature_defs=[self.signature(m.SignatureDefs(i), subgraphs) for i in range(self.count(m.SignatureDefsLength(), "signature def"))],
            metadata=self.metadata(),
            file_bytes=self.size,
            _mapping=self.keep,
        )

    def opcode(self, oc: Any, i: int) -> tuple[str, int, str | None]:
        code = max(oc.DeprecatedBuiltinCode(), oc.BuiltinCode())
        name = BUILTIN_NAMES.get(code, f"BUILTIN_{code}")
        custom = oc.CustomCode()
        return name, oc.Version(), custom.decode("utf-8", "replace") if custom else None

    def buffer_data(self, index: int, tensor_name: str) -> np.ndarray | None:
        """The bytes of a buffer as a read-only uint8 view into the file, or None when empty."""
        if not 0 <= index < len(self.buffers):
            raise self.fail(f"tensor {tensor_name!r}: buffer index {index} out of range (model has {len(self.buffers)} buffers)")
        b = self.buffers[index]
        offset, length = b.Offset(), b.Size()
        if offset > 1:  # large models keep data outside the flatbuffer, addressed from the file start
            if offset + length > self.size:
                raise self.fail(f"tensor {tensor_name!r}: buffer {index} data [{offset}, {offset + length}) lies past the end of the file ({self.size} bytes)")
            start = offset
        else:
            length = b.DataLength()
            if length == 0:
                return None
            pos = b._tab.Vector(b._tab.Offset(4))
            if pos + length > self.size:
                raise self.fail(f"tensor {tensor_name!r}: buffer {index} data ({length} bytes at {pos}) lies past the end of the file ({self.size} bytes)")
            start = pos
        if length == 0:
            return None
        arr = np.frombuffer(self.buf, dtype=np.uint8, count=length, offset=start)
        arr.flags.writeable = False
        return arr

    def tensor(self, t: Any, index: int, n_tensors: int) -> Tensor:
        raw_name = t.Name()
        name = raw_name.decode("utf-8", "replace") if raw_name else f"tensor_{index}"
        type_code = t.Type()
        if type_code not in TENSOR_TYPES:
            raise self.fail(f"tensor {name!r}: unknown tensor type {type_code}")
        type_name, dtype = TENSOR_TYPES[type_code]
        shape = self.ints(t.ShapeAsNumpy(), "shape")
        signature = self.ints(t.ShapeSignatureAsNumpy(), "shape signature") or shape
        if len(shape) > MAX_RANK:
            raise self.fail(f"tensor {name!r}: rank {len(shape)} exceeds {MAX_RANK}")
        if any(d < 0 or d > MAX_DIM for d in shape):
            raise self.fail(f"tensor {name!r}: invalid shape {list(shape)}")
        if len(signature) != len(shape) or any(d < -1 or d > MAX_DIM for d in signature):
            raise self.fail(f"tensor {name!r}: shape signature {list(signature)} does not match shape {list(shape)}")
        n_elems = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if n_elems * dtype.itemsize > MAX_TENSOR_BYTES:
            raise self.fail(f"tensor {name!r}: shape {list(shape)} is absurdly large")
        sparsity = self.sparsity(t.Sparsity(), name, len(shape))
        raw = self.buffer_data(t.Buffer(), name)
        data = None
        if raw is not None:
            if sparsity is not None or type_name in _PACKED_TYPES:
                if raw.nbytes % dtype.itemsize:
                    raise self.fail(f"tensor {name!r}: {raw.nbytes} data bytes is not a whole number of {type_name} values")
                data = raw.view(dtype)
            else:
                expected = n_elems * dtype.itemsize
                if raw.nbytes != expected:
                    raise self.fail(
                        f"tensor {name!r}: constant data is {raw.nbytes} bytes but shape {list(shape)} x {type_name} needs {expected}")
                if raw.ctypes.data % dtype.itemsize:
                    # flatbuffers aligns vectors to 16 bytes; a misaligned one is copied once, read-only
                    raw = raw.copy()
                data = raw.view(dtype).reshape(shape)
            data.flags.writeable = False
        return Tensor(
            index=index,
            name=name,
            shape=shape,
            shape_signature=signature,
            dtype=dtype,
            quantization=self.quantization(t.Quantization(), name, shape),
            is_variable=bool(t.IsVariable()),
            data=data,
            sparsity=sparsity,
            buffer=t.Buffer(),
            type_name=type_name,
        )

    def quantization(self, q: Any, name: str, shape: tuple[int, ...]) -> Quantization | None:
        if q is None:
            return None
        scales = q.ScaleAsNumpy()
        zps = q.ZeroPointAsNumpy()
        if not isinstance(scales, np.ndarray) or scales.size == 0:
            return None
        zps = zps if isinstance(zps, np.ndarray) else np.zeros(0, np.int64)
        dim = q.QuantizedDimension()
        if zps.size not in (0, scales.size):
            raise self.fail(f"tensor {name!r}: {scales.size} quantization scales but {zps.size} zero points")
        if scales.size > 1 and not (0 <= dim < len(shape) and shape[dim] == scales.size):
            raise self.fail(f"tensor {name!r}: {scales.size} per-channel scales do not match dimension {dim} of shape {list(shape)}")
        return Quantization(
            scales=tuple(float(s) for s in scales),
            zero_points=tuple(int(z) for z in zps) if zps.size else (0,) * scales.size,
            quantized_dimension=dim,
        )

    def sparsity(self, sp: Any, name: str, rank: int) -> Sparsity | None:
        if sp is None:
            return None
        order = self.ints(sp.TraversalOrderAsNumpy(), "traversal order")
        block_map = self.ints(sp.BlockMapAsNumpy(), "block map")
        dims = []
        for i in range(self.count(sp.DimMetadataLength(), "sparsity dimension")):
            d = sp.DimMetadata(i)
            fmt = "SPARSE_CSR" if d.Format() == 1 else "DENSE"
            segments = indices = None
            if fmt == "SPARSE_CSR":
                segments = self.sparse_vector(d.ArraySegmentsType(), d.ArraySegments(), name)
                indices = self.sparse_vector(d.ArrayIndicesType(), d.ArrayIndices(), name)
            dims.append(DimensionMetadata(format=fmt, dense_size=d.DenseSize(), segments=segments, indices=indices))
        if len(order) != len(dims) or sorted(order) != list(range(len(order))) or len(order) < rank:
            raise self.fail(f"tensor {name!r}: inconsistent sparsity parameters (traversal order {list(order)}, {len(dims)} dimensions, rank {rank})")
        if any(not 0 <= b < rank for b in block_map):
            raise self.fail(f"tensor {name!r}: sparsity block map {list(block_map)} out of range for rank {rank}")
        return Sparsity(traversal_order=order, block_map=block_map, dim_metadata=tuple(dims))

    def sparse_vector(self, type_code: int, table: Any, name: str) -> np.ndarray:
        if type_code not in _SPARSE_VECTOR_TYPES or table is None:
            raise self.fail(f"tensor {name!r}: sparse dimension without index vector")
        cls = {1: tflite.Int32Vector, 2: tflite.Uint16Vector, 3: tflite.Uint8Vector}[type_code]
        v = cls()
        v.Init(table.Bytes, table.Pos)
        self.count(v.ValuesLength(), "sparse index", 1)
        arr = v.ValuesAsNumpy()
        return np.asarray(arr if isinstance(arr, np.ndarray) else [], dtype=np.int64)

    def subgraph(self, s: Any, index: int) -> Subgraph:
        n_tensors = self.count(s.TensorsLength(), "tensor")
        tensors = [self.tensor(s.Tensors(i), i, n_tensors) for i in range(n_tensors)]
        raw_name = s.Name()
        name = raw_name.decode("utf-8", "replace") if raw_name else f"subgraph_{index}"

        def refs(values: tuple[int, ...], what: str, optional: bool) -> tuple[int, ...]:
            for v in values:
                if not (-1 if optional else 0) <= v < n_tensors:
                    raise self.fail(f"subgraph {name!r}: {what} refers to tensor {v}, but the subgraph has {n_tensors} tensors")
            return values

        operators = []
        for i in range(self.count(s.OperatorsLength(), "operator")):
            o = s.Operators(i)
            opcode_index = o.OpcodeIndex()
            if not 0 <= opcode_index < len(self.opcodes):
                raise self.fail(f"subgraph {name!r} operator {i}: opcode index {opcode_index} out of range (model has {len(self.opcodes)} opcodes)")
            opname, version, custom = self.opcodes[opcode_index]
            label = f"subgraph {name!r} operator {i} ({custom or opname})"
            custom_options = b""
            if o.CustomOptionsLength():
                custom_options = bytes(o.CustomOptionsAsNumpy())
            elif o.LargeCustomOptionsSize():
                off, sz = o.LargeCustomOptionsOffset(), o.LargeCustomOptionsSize()
                if off + sz > self.size:
                    raise self.fail(f"{label}: custom options lie past the end of the file")
                custom_options = bytes(self.buf[off:off + sz])
            options = parse_options("BuiltinOptions", o.BuiltinOptionsType(), o.BuiltinOptions(), self.size)
            if options is None:
                options = parse_options("BuiltinOptions2", o.BuiltinOptions2Type(), o.BuiltinOptions2(), self.size)
            operators.append(Operator(
                index=i,
                opcode=opname,
                version=version,
                inputs=refs(self.ints(o.InputsAsNumpy(), "inputs"), f"{label} input", True),
                outputs=refs(self.ints(o.OutputsAsNumpy(), "outputs"), f"{label} output", False),
                options=options,
                custom_code=custom,
                custom_options=custom_options,
                intermediates=refs(self.ints(o.IntermediatesAsNumpy(), "intermediates"), f"{label} intermediate", True),
            ))
        return Subgraph(
            index=index,
            name=name,
            tensors=tensors,
            operators=operators,
            inputs=refs(self.ints(s.InputsAsNumpy(), "inputs"), "graph input", False),
            outputs=refs(self.ints(s.OutputsAsNumpy(), "outputs"), "graph output", False),
        )

    def check_subgraph_refs(self, op: Operator, n_sub: int, sg: Subgraph) -> None:
        """Control-flow ops name other subgraphs; an index out of range is a corrupt model."""
        if op.options is None:
            return
        for field in ("init_subgraph_index", "then_subgraph_index", "else_subgraph_index",
                      "cond_subgraph_index", "body_subgraph_index", "subgraph"):
            v = getattr(op.options, field, None)
            if isinstance(v, int) and not 0 <= v < n_sub:
                raise self.fail(f"subgraph {sg.name!r} operator {op.index} ({op.opcode}): {field} {v} out of range (model has {n_sub} subgraphs)")

    def signature(self, s: Any, subgraphs: list[Subgraph]) -> SignatureDef:
        idx = s.SubgraphIndex()
        if not 0 <= idx < len(subgraphs):
            raise self.fail(f"signature def refers to subgraph {idx}, but the model has {len(subgraphs)}")
        n_tensors = len(subgraphs[idx].tensors)

        def tensor_map(length: int, get: Any, what: str) -> dict[str, int]:
            out = {}
            for i in range(self.count(length, what)):
                tm = get(i)
                ti = tm.TensorIndex()
                if not 0 <= ti < n_tensors:
                    raise self.fail(f"signature {what} refers to tensor {ti} out of range")
                out[(tm.Name() or b"").decode("utf-8", "replace")] = ti
            return out

        key = s.SignatureKey()
        return SignatureDef(
            key=key.decode("utf-8", "replace") if key else "",
            subgraph_index=idx,
            inputs=tensor_map(s.InputsLength(), s.Inputs, "input"),
            outputs=tensor_map(s.OutputsLength(), s.Outputs, "output"),
        )

    def metadata(self) -> dict[str, bytes]:
        out = {}
        m = self.root
        for i in range(self.count(m.MetadataLength(), "metadata")):
            md = m.Metadata(i)
            name = (md.Name() or b"").decode("utf-8", "replace")
            data = self.buffer_data(md.Buffer(), f"metadata {name}")
            out[name] = bytes(data) if data is not None else b""
        return out
