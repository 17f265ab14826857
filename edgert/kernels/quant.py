"""DEQUANTIZE, QUANTIZE (float -> int and requantize) and DENSIFY kernels, numerics as TFLite's reference kernels.

The runtime folds DEQUANTIZE/DENSIFY of constant weights once at load into the persistent region
with these same kernels, so every kernel here accepts read-only inputs. float16 is handled as its
uint16 bit pattern (numba has no float16 arithmetic); the conversion to float32 is exact.
Requantizing uses the shared TFLite fixed-point helpers of edgert.kernels.fixedpoint;
`round_half_away` (std::round for run-time float32 values) lives here.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from edgert.kernels.fixedpoint import multiply_by_quantized_multiplier, quantize_multiplier
from edgert.kernels.registry import KernelEntry, KernelRegistry, OpContext, Step

_INT_RANGE = {np.dtype(np.int8): (-128, 127), np.dtype(np.uint8): (0, 255), np.dtype(np.int16): (-32768, 32767)}


# ----------------------------------------------------------------------------------------------


@njit(nogil=True, cache=True, inline="always")
def round_half_away(x):
    """std::round / TfLiteRound: to nearest, halves away from zero (exact, no x + 0.5 rounding trap)."""
    t = np.trunc(x)
    if abs(x - t) >= 0.5:
        t += 1.0 if x > 0 else -1.0
    return t


# ----------------------------------------------------------------------------------------------
# DEQUANTIZE


@njit(nogil=True, cache=True, inline="always")
def _half_bits_to_float_bits(h):
    sign = np.uint32(h >> 15) << np.uint32(31)
    exp = np.int64((h >> 10) & 0x1F)
    mant = np.uint32(h & 0x3FF)
    if exp == 0:
        if mant == 0:
            return sign
        e = -14
        while (mant & np.uint32(0x400)) == 0:
            mant <<= np.uint32(1)
            e -= 1
        mant &= np.uint32(0x3FF)
        return sign | (np.uint32(e + 127) << np.uint32(23)) | (mant << np.uint32(13))
    if exp == 31:
        return sign | np.uint32(0x7F800000) | (mant << np.uint32(13))
    return sign | (np.uint32(exp - 15 + 127) << np.uint32(23)) | (mant << np.uint32(13))


@njit(nogil=True, cache=True, fastmath=False)
def _dequantize_f16(src, dst):
    """src: float16 bits as uint16 (1-D), dst: float32 bits as uint32 (1-D)."""
    for i in range(src.shape[0]):
        dst[i] = _half_bits_to_float_bits(src[i])


@njit(nogil=True, cache=True, fastmath=False)
def _dequantize(src, dst, scale, zero_point):
    """Per tensor: float(double(scale) * (q - zp)), as reference_ops::Dequantize."""
    for i in range(src.shape[0]):
        dst[i] = np.float32(scale * np.float64(np.int64(src[i]) - zero_point))


@njit(nogil=True, cache=True, fastmath=False)
def _dequantize_per_channel(src, dst, scales, zero_points):
    """src/dst (outer, channels, inner): float(scale[c]) * float(q - zp[c]), all float32."""
    for o in range(src.shape[0]):
        for c in range(src.shape[1]):
            s = scales[c]
            z = zero_points[c]
            for i in range(src.shape[2]):
                dst[o, c, i] = s * np.float32(np.int64(src[o, c, i]) - z)


def _flat(a: np.ndarray, dtype=None) -> np.ndarray:
    v = a.view()
    v.shape = (a.size,)
    return v if dtype is None else v.view(dtype)


def _supports_dequantize(ctx: OpContext) -> str | None:
    x, y = ctx.inputs[0], ctx.outputs[0]
    if y.dtype != np.float32:
        return f"output {y.dtype} not supported"
    if x.sparsity is not None:
        return "sparse input (needs DENSIFY first)"
    if tuple(x.shape) != tuple(y.shape):
        return "input and output shapes differ"
    if x.dtype == np.float16:
        return None
    if x.dtype not in _INT_RANGE:
        return f"input {x.dtype} not supported"
    q = x.quantization
    if q is None:
        return "quantized input without quantization parameters"
    if q.per_channel and x.dtype == np.int16:
        return "per-channel int16 not supported"
    return None


def _bind_dequantize(ctx: OpContext, ins: list, outs: list, scratch) -> Step:
    x, y = ins[0], outs[0]
    if x.dtype == np.float16:
        return _dequantize_f16, (_flat(x, np.uint16), _flat(y, np.uint32))
    q = ctx.inputs[0].quantization
    if not q.per_channel:
        return _dequantize, (_flat(x), _flat(y), float(np.float32(q.scale)), int(q.zero_point))
    axis = q.quantized_dimension
    outer = int(np.prod(x.shape[:axis], dtype=np.int64))
    inner = int(np.prod(x.shape[axis + 1:], dtype=np.int64))
    shape3 = (outer, x.shape[axis], inner)
    xs, ys = x.view(), y.view()
    xs.shape = shape3
    ys.shape = shape3
    return _dequantize_per_channel, (xs, ys, np.asarray(q.scales, np.float32), np.asarray(q.zero_points, np.int64))


# ----------------------------------------------------------------------------------------------
# QUANTIZE


@njit(nogil=True, cache=True, fastmath=False)
def _quantize(src, dst, scale, zero_point, lo, hi):
    """reference_ops::AffineQuantize: round(x / float(scale)) + zp, clamped."""
    for i in range(src.shape[0]):
        v = np.float64(round_half_away(src[i] / scale)) + zero_point
        dst[i] = min(max(v, lo), hi)


@njit(nogil=True, cache=True, fastmath=False)
def _requantize(src, dst, in_zp, out_zp, multiplier, shift, lo, hi):
    """reference_ops::Requantize: MultiplyByQuantizedMultiplier(q - in_zp) + out_zp, clamped."""
    for i in range(src.shape[0]):
        v = multiply_by_quantized_multiplier(np.int64(src[i]) - in_zp, multiplier, shift) + out_zp
        dst[i] = min(max(v, lo), hi)


_REQUANT_PAIRS = {
    (np.dtype(np.int8), np.dtype(np.int8)), (np.dtype(np.int8), np.dtype(np.uint8)),
    (np.dtype(np.uint8), np.dtype(np.int8)), (np.dtype(np.uint8), np.dtype(np.uint8)),
    (np.dtype(np.int16), np.dtype(np.int8)), (np.dtype(np.int16), np.dtype(np.int16)),
}


def _supports_quantize(ctx: OpContext) -> str | None:
    x, y = ctx.inputs[0], ctx.outputs[0]
    if tuple(x.shape) != tuple(y.shape):
        return "input and output shapes differ"
    if y.dtype not in _INT_RANGE:
        return f"output {y.dtype} not supported"
    qy = y.quantization
    if qy is None or qy.per_channel:
        return "output needs per-tensor quantization"
    if y.dtype == np.int16 and qy.zero_point != 0:
        return "int16 output needs zero point 0"
    if x.dtype == np.float32:
        return None
    if (x.dtype, y.dtype) not in _REQUANT_PAIRS:
        return f"requantize {x.dtype} -> {y.dtype} not supported"
    qx = x.quantization
    if qx is None or qx.per_channel:
        return "input needs per-tensor quantization"
    if x.dtype == np.int16 and qx.zero_point != 0:
        return "int16 input needs zero point 0"
    return None


def _bind_quantize(ctx: OpContext, ins: list, outs: list, scratch) -> Step:
    x, y = ins[0], outs[0]
    qy = ctx.outputs[0].quantization
    lo, hi = _INT_RANGE[y.dtype]
    if x.dtype == np.float32:
        return _quantize, (_flat(x), _flat(y), np.float32(qy.scale), float(qy.zero_point), float(lo), float(hi))
    qx = ctx.inputs[0].quantization
    multiplier, shift = quantize_multiplier(float(np.float32(qx.scale)) / float(np.float32(qy.scale)))
    return _requantize, (_flat(x), _flat(y), int(qx.zero_point), int(qy.zero_point), multiplier, shift, lo, hi)


def _quantize_inplace(ctx: OpContext) -> tuple[int, ...]:
    return (0,) if ctx.inputs[0].dtype.itemsize == ctx.outputs[0].dtype.itemsize else ()


# ----------------------------------------------------------------------------------------------
# DENSIFY (tensorflow/lite/kernels/internal/utils/sparsity_format_converter.cc, SparseToDense)


@njit(nogil=True, cache=True, fastmath=False)
def _densify(src, dst, meta, seg, idx, block, strides, state, orig):
    """FormatConverter::Populate as an explicit-stack walk; dst (flat, dense row-major) is zeroed first.

    meta rows: format (1 = CSR), dense size, segment start, index start, traversal order (per level);
    block rows: block map, block size; state rows: loop position, loop end, prev index, index per level.
    """
    fmt, dsize, seg_start, idx_start, traversal = meta[0], meta[1], meta[2], meta[3], meta[4]
    block_map, block_size = block[0], block[1]
    cur, stop, prev, indices = state[0], state[1], state[2], state[3]
    for i in range(dst.shape[0]):
        dst[i] = 0
    levels = traversal.shape[0] - 1
    orig_rank = strides.shape[0]
    ptr = 0
    level = 0
    # enter level 0 with prev index 0
    prev[0] = 0
    if fmt[0] == 0:
        cur[0] = 0
        stop[0] = dsize[0]
    elif 1 < seg_start[1] - seg_start[0]:
        cur[0] = seg[seg_start[0]]
        stop[0] = seg[seg_start[0] + 1]
    else:
        cur[0] = 0
        stop[0] = 0
    while level >= 0:
        if cur[level] >= stop[level]:
            level -= 1
            continue
        i = cur[level]
        cur[level] += 1
        if fmt[level] == 0:
            indices[level] = i
            child_prev = prev[level] * dsize[level] + i
        else:
            if i >= idx_start[level + 1] - idx_start[level]:
                continue
            indices[level] = idx[idx_start[level] + i]
            child_prev = i
        if level + 1 == levels:
            for k in range(orig_rank):
                orig[traversal[k]] = indices[k]
            for k in range(orig_rank, levels):
                b = traversal[k] - orig_rank
                d = block_map[b]
                orig[d] = orig[d] * block_size[b] + indices[k]
            flat = 0
            for d in range(orig_rank):
                flat += orig[d] * strides[d]
            if flat < 0 or flat >= dst.shape[0] or ptr >= src.shape[0]:
                raise ValueError("DENSIFY: sparse metadata points outside the dense tensor or values")
            dst[flat] = src[ptr]
            ptr += 1
            continue
        level += 1
        prev[level] = child_prev
        if fmt[level] == 0:
            cur[level] = 0
            stop[level] = dsize[level]
        elif child_prev + 1 < seg_start[level + 1] - seg_start[level]:
            cur[level] = seg[seg_start[level] + child_prev]
            stop[level] = seg[seg_start[level] + child_prev + 1]
        else:
            cur[level] = 0
            stop[level] = 0


_DENSIFY_DTYPES = {np.dtype(np.float32), np.dtype(np.float16), np.dtype(np.int8), np.dtype(np.int32)}
_UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32}


def _supports_densify(ctx: OpContext) -> str | None:
    x, y = ctx.inputs[0], ctx.outputs[0]
    if x.sparsity is None:
        return "input has no sparsity parameters"
    if x.dtype not in _DENSIFY_DTYPES or y.dtype != x.dtype:
        return f"{x.dtype} -> {y.dtype} not supported"
    if tuple(x.shape) != tuple(y.shape):
        return "output shape differs from the dense input shape"
    sp = x.sparsity
    if len(sp.traversal_order) != len(x.shape) + len(sp.block_map):
        return "traversal order does not cover the dense and block dimensions"
    return None


def densify_args(sparsity, dense_shape: tuple[int, ...]) -> tuple:
    """The metadata arrays _densify walks (built once at bind time from Tensor.sparsity)."""
    dims = sparsity.dim_metadata
    levels = len(sparsity.traversal_order)
    fmt = np.asarray([1 if d.format == "SPARSE_CSR" else 0 for d in dims], np.int64)
    dsize = np.asarray([d.dense_size for d in dims], np.int64)
    segs = [np.asarray(d.segments if d.segments is not None and d.format == "SPARSE_CSR" else [], np.int64)
            for d in dims]
    idxs = [np.asarray(d.indices if d.indices is not None and d.format == "SPARSE_CSR" else [], np.int64)
            for d in dims]
    seg_start = np.concatenate([[0], np.cumsum([len(s) for s in segs])]).astype(np.int64)
    idx_start = np.concatenate([[0], np.cumsum([len(s) for s in idxs])]).astype(np.int64)
    seg = np.concatenate(segs + [np.zeros(0, np.int64)]).astype(np.int64)
    idx = np.concatenate(idxs + [np.zeros(0, np.int64)]).astype(np.int64)
    traversal = np.asarray(sparsity.traversal_order, np.int64)
    block_map = np.asarray(sparsity.block_map, np.int64)
    orig_rank = len(dense_shape)
    block_size = np.ones(max(len(block_map), 1), np.int64)
    block_dim = 0
    for i in range(orig_rank):  # InitSparseToDenseConverter
        if block_dim < len(block_map) and block_map[block_dim] == i:
            if orig_rank + block_dim < levels:
                block_size[block_dim] = dsize[traversal[orig_rank + block_dim]]
                block_dim += 1
    strides = np.ones(orig_rank, np.int64)
    for d in range(orig_rank - 2, -1, -1):
        strides[d] = strides[d + 1] * dense_shape[d + 1]
    if len(block_map) == 0:
        block_map = np.zeros(1, np.int64)
    meta = np.zeros((5, levels + 1), np.int64)
    meta[0, :levels], meta[1, :levels], meta[2], meta[3], meta[4, :levels] = fmt, dsize, seg_start, idx_start, traversal
    block = np.stack([block_map, block_size]).astype(np.int64)
    state = np.zeros((4, levels + 1), np.int64)
    return meta, seg, idx, block, strides, state, np.zeros(orig_rank, np.int64)


def _bind_densify(ctx: OpContext, ins: list, outs: list, scratch) -> Step:
    x, y = ins[0], outs[0]
    u = _UINT[x.dtype.itemsize]
    return _densify, (_flat(x, u), _flat(y, u)) + densify_args(ctx.inputs[0].sparsity, tuple(y.shape))


def register(registry: KernelRegistry) -> None:
    registry.add(KernelEntry("DEQUANTIZE", _supports_dequantize, _bind_dequantize))
    registry.add(KernelEntry("QUANTIZE", _supports_quantize, _bind_quantize, inplace=_quantize_inplace))
    registry.add(KernelEntry("DENSIFY", _supports_densify, _bind_densify))
