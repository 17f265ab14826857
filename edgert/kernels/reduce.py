"""Reduction kernels: SOFTMAX, LOG_SOFTMAX, MEAN, SUM, REDUCE_MAX/MIN/PROD over any axis set, ARG_MAX/ARG_MIN.

float32 throughout; int8/uint8 MEAN, SUM, REDUCE_MAX and REDUCE_MIN as TFLite's reference kernels.

Reductions walk the input once in row-major order and fold every element into its output element,
as TFLite's reference kernels do, so float sums accumulate in the same order. The walk runs on the
canonical strided form of elementwise.py: the input's dims are collapsed into runs of kept and
reduced dims, and the output is addressed with stride 0 along reduced dims. The hot case, MEAN
over H,W of NHWC (global average pool), becomes "for each pixel, add a C-long row into the output
row", which LLVM vectorizes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from numba import njit

from edgert.kernels import fixedpoint as fp
from edgert.kernels.activations import expf_fast
from edgert.kernels.elementwise import (CHUNK_ELEMENTS, MAX_RANK, SHORT_ROW, QuantParams, _contiguous_strides, collapse,
                                        flat_view, operand_reason, q8_reason, same_shape_reason, skip_empty)
from edgert.kernels.registry import KernelEntry, KernelRegistry, OpContext, Step

_F32 = np.dtype(np.float32)

SUM, PROD, MAX, MIN = range(4)


@njit(inline="always")
def _fold(acc, x, op):
    if op == SUM:
        return acc + x
    if op == PROD:
        return acc * x
    if op == MAX:
        return acc if acc > x else x
    return acc if acc < x else x


@njit(inline="always")
def _fill(o, shape, so, value):
    for i0 in range(shape[0]):
        for i1 in range(shape[1]):
            for i2 in range(shape[2]):
                for i3 in range(shape[3]):
                    for i4 in range(shape[4]):
                        po = i0 * so[0] + i1 * so[1] + i2 * so[2] + i3 * so[3] + i4 * so[4]
                        for j in range(shape[5]):
                            o[po + j * so[5]] = value


@njit(inline="always")
def _scale(o, shape, so, divisor):
    for i0 in range(shape[0]):
        for i1 in range(shape[1]):
            for i2 in range(shape[2]):
                for i3 in range(shape[3]):
                    for i4 in range(shape[4]):
                        po = i0 * so[0] + i1 * so[1] + i2 * so[2] + i3 * so[3] + i4 * so[4]
                        for j in range(shape[5]):
                            o[po + j * so[5]] = o[po + j * so[5]] / divisor


def _make_reduce(op: int) -> Callable:
    @njit(nogil=True, cache=True, error_model="numpy")
    def reduce_kernel(x, o, shape, sx, sr, oshape, so, init, divisor, mean, acc, k):
        """o[k] = fold of x over the reduced dims (sr is o's stride, 0 along reduced dims); mean divides.

        k > 0: the last two collapsed dims are (reduced rows, short kept row) and x is contiguous
        over them; k rows at a time fold into `acc` (k * n long, vectorizable), which then folds
        into the output row. This regroups the float sum (within tolerance, not bit-equal).
        """
        _fill(o, oshape, so, init)
        n = shape[5]
        x5, r5 = sx[5], sr[5]
        if k > 0:
            rows = shape[4]
            for i0 in range(shape[0]):
                for i1 in range(shape[1]):
                    for i2 in range(shape[2]):
                        for i3 in range(shape[3]):
                            px = i0 * sx[0] + i1 * sx[1] + i2 * sx[2] + i3 * sx[3]
                            po = i0 * sr[0] + i1 * sr[1] + i2 * sr[2] + i3 * sr[3]
                            full = min(k, rows) * n
                            for t in range(full):
                                acc[t] = init
                            for r0 in range(0, rows, k):
                                m = min(k, rows - r0) * n
                                xv = x[px + r0 * n:px + r0 * n + m]
                                for t in range(m):
                                    acc[t] = _fold(acc[t], xv[t], op)
                            ov = o[po:po + n]
                            for r in range(min(k, rows)):
                                av = acc[r * n:(r + 1) * n]
                                for j in range(n):
                                    ov[j] = _fold(ov[j], av[j], op)
            if mean:
                _scale(o, oshape, so, divisor)
            return
        for i0 in range(shape[0]):
            for i1 in range(shape[1]):
                for i2 in range(shape[2]):
                    for i3 in range(shape[3]):
                        for i4 in range(shape[4]):
                            px = i0 * sx[0] + i1 * sx[1] + i2 * sx[2] + i3 * sx[3] + i4 * sx[4]
                            po = i0 * sr[0] + i1 * sr[1] + i2 * sr[2] + i3 * sr[3] + i4 * sr[4]
                            if r5 == 0:
                                acc = o[po]
                                if x5 == 1:
                                    xv = x[px:px + n]
                                    for j in range(n):
                                        acc = _fold(acc, xv[j], op)
                                else:
                                    for j in range(n):
                                        acc = _fold(acc, x[px + j * x5], op)
                                o[po] = acc
                            elif r5 == 1 and x5 == 1:
                                ov = o[po:po + n]
                                xv = x[px:px + n]
                                for j in range(n):
                                    ov[j] = _fold(ov[j], xv[j], op)
                            else:
                                for j in range(n):
                                    o[po + j * r5] = _fold(o[po + j * r5], x[px + j * x5], op)
        if mean:
            _scale(o, oshape, so, divisor)

    return reduce_kernel


_REDUCE_KERNELS = {op: _make_reduce(op) for op in range(4)}


def resolve_axes(axes: np.ndarray, rank: int) -> tuple[int, ...] | str:
    """Sorted distinct non-negative axes, or a reason they are invalid."""
    out = set()
    for a in np.asarray(axes).reshape(-1).tolist():
        if not -rank <= a < max(rank, 1):
            return f"axis {a} out of range for rank {rank}"
        out.add(a % rank if rank else 0)
    return tuple(sorted(out))


def reduced_shape(shape: tuple[int, ...], axes: tuple[int, ...], keep_dims: bool) -> tuple[int, ...]:
    if keep_dims:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


@dataclass(frozen=True)
class ReduceSpec:
    op: int
    max_version: int
    mean: bool = False


REDUCE_OPS: dict[str, ReduceSpec] = {
    "MEAN": ReduceSpec(SUM, 3, mean=True),
    "SUM": ReduceSpec(SUM, 2),
    "REDUCE_PROD": ReduceSpec(PROD, 2),
    "REDUCE_MAX": ReduceSpec(MAX, 3),
    "REDUCE_MIN": ReduceSpec(MIN, 3),
}

_INIT = {SUM: 0.0, PROD: 1.0, MAX: float(np.finfo(np.float32).min), MIN: float(np.finfo(np.float32).max)}


def _float_reason(ctx: OpContext, tensors) -> str | None:
    for t in tensors:
        if t is not None and t.dtype != _F32:
            return f"{t.dtype} not supported"
    return None


def _axes_of(ctx: OpContext) -> tuple[int, ...] | str:
    axis_t = ctx.inputs[1] if len(ctx.inputs) > 1 else None
    if axis_t is None:
        return "axis input missing"
    if axis_t.size == 0:  # no axes: a copy (an empty constant has no buffer data)
        return ()
    if axis_t.data is None:
        return "axis input is not a constant"
    if axis_t.dtype != np.int32:  # TFLite's Prepare accepts int32 axes only
        return f"axis dtype {axis_t.dtype} not supported"
    return resolve_axes(axis_t.data, len(ctx.inputs[0].shape))


def _reduce_operands_reason(ctx: OpContext, max_version: int) -> str | None:
    return operand_reason(ctx, max_version, 2, 1, "expects input, axis and 1 output")


def _reduce_shape_reason(ctx: OpContext) -> str | None:
    """Rank, constant axes, and an output of the reduced shape's size (keep_dims or not)."""
    x = ctx.inputs[0]
    if len(x.shape) > MAX_RANK:
        return f"rank above {MAX_RANK}"
    axes = _axes_of(ctx)
    if isinstance(axes, str):
        return axes
    keep = bool(getattr(ctx.op.options, "keep_dims", False))
    want = reduced_shape(x.shape, axes, keep)
    if int(np.prod(want, dtype=np.int64)) != ctx.outputs[0].size:
        return f"output shape {ctx.outputs[0].shape} != reduced shape {want}"
    return None


def _reduce_supports(spec: ReduceSpec) -> Callable[[OpContext], str | None]:
    def supports(ctx: OpContext) -> str | None:
        return (_reduce_operands_reason(ctx, spec.max_version)
                or _float_reason(ctx, [ctx.inputs[0], ctx.outputs[0]]) or _reduce_shape_reason(ctx))

    return supports


def chunk_rows(shape: np.ndarray, sx: np.ndarray, sr: np.ndarray) -> int:
    """Rows per accumulator chunk when the walk ends in (reduced rows, short contiguous kept row), else 0."""
    n, rows = int(shape[5]), int(shape[4])
    if rows < 2 or n >= SHORT_ROW or sx[5] != 1 or sx[4] != n or sr[5] != 1 or sr[4] != 0:
        return 0
    return max(1, CHUNK_ELEMENTS // n)


def _walk(ctx: OpContext, x_strides, out_strides, out_shape) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Collapsed (shape, input strides, output strides with 0 on reduced dims) of the reduction walk."""
    x = ctx.inputs[0]
    axes = _axes_of(ctx)
    # Kept dims take the output's strides in order (size-1 output dims carry none), reduced dims 0.
    kept_strides = [s for d, s in zip(out_shape, out_strides) if d != 1]
    kept_dims = [i for i, d in enumerate(x.shape) if i not in axes and d != 1]
    assert len(kept_strides) == len(kept_dims), (out_shape, x.shape, axes)
    sr = [0] * len(x.shape)
    for i, s in zip(kept_dims, kept_strides):
        sr[i] = s
    shape, (cx, cr) = collapse(tuple(x.shape), [list(x_strides), sr])
    return shape, cx, cr


def _chunk(ctx: OpContext) -> tuple[int, int]:
    """(k, n): rows per chunk of the walk's (reduced rows, short kept row) ending, and the row length; k 0 if none.

    Decided on contiguous tensors, as the scratch size must be known before the arena places them.
    """
    out = ctx.outputs[0]
    shape, cx, cr = _walk(ctx, _contiguous_strides(ctx.inputs[0].shape), _contiguous_strides(out.shape), out.shape)
    return chunk_rows(shape, cx, cr), int(shape[5])


def _reduce_scratch(ctx: OpContext) -> int:
    """Bytes for reduce_kernel's accumulator rows (output dtype) when the walk ends in chunked rows."""
    out = ctx.outputs[0]
    if out.size == 0:
        return 0
    k, n = _chunk(ctx)
    return k * n * out.dtype.itemsize


def _reduce_walk(ctx: OpContext, x: np.ndarray, out: np.ndarray, scratch: np.ndarray | None) -> tuple:
    """reduce_kernel's arguments but the fold's init, divisor and mean flag: (x, o, shape, sx, sr, oshape, so), acc, k.

    acc is k accumulator rows of the output's dtype in scratch; k = 0 (no chunking) without room for them.
    """
    fx, sx = flat_view(x, False)
    fo, so = flat_view(out, True)
    shape, cx, cr = _walk(ctx, sx, so, out.shape)
    oshape, (co,) = collapse(tuple(out.shape), [list(so)])
    k = chunk_rows(shape, cx, cr) if scratch is not None else 0
    nbytes = k * int(shape[5]) * out.dtype.itemsize
    if nbytes > (0 if scratch is None else scratch.nbytes):
        k = nbytes = 0
    acc = scratch[:nbytes].view(out.dtype) if k else np.empty(0, out.dtype)
    return (fx, fo, shape, cx, cr, oshape, co), acc, np.int64(k)


def _reduce_bind(spec: ReduceSpec) -> Callable:
    kernel = _REDUCE_KERNELS[spec.op]

    @skip_empty
    def bind(ctx: OpContext, ins: list, outs: list, scratch: np.ndarray | None) -> Step:
        x, out = ins[0], outs[0]
        axes = _axes_of(ctx)
        assert not isinstance(axes, str), axes
        count = int(np.prod([x.shape[a] for a in axes], dtype=np.int64)) if axes else 1
        walk, acc, k = _reduce_walk(ctx, x, out, scratch)
        return kernel, (*walk, np.float32(_INIT[spec.op]), np.float32(max(count, 1)), spec.mean, acc, k)

    return bind


# ---------------------------------------------------------------------------------------------
# Quantized (int8/uint8) MEAN and SUM: reference_ops::QuantizedMeanOrSum, what BUILTIN_REF runs
#
# LiteRT's reduce.cc sends int8/uint8 MEAN (every axis set, keep_dims or not) and SUM to
# reference_ops::QuantizedMeanOrSum under the reference resolver; the 4-D H,W fast path
# (optimized_integer_ops::Mean) belongs to the optimized kernel only. The reference sums raw
# values into int32, subtracts zero_point * count, and applies one multiplier: input_scale /
# output_scale (QuantizeMultiplier at Prepare), for MEAN with 1/count folded in as
# (multiplier << s) / count and shift - s, s = floor(log2 count) clamped to <= 32 and <= 31 + shift.


def mean_multiplier(multiplier: int, shift: int, count: int) -> tuple[int, int]:
    """QuantizedMeanOrSum's rescaling of (multiplier, shift) by 1/count (integer division, as the C++)."""
    s = min(count.bit_length() - 1, 32, 31 + shift)
    return int((multiplier << s) // count), shift - s


@njit(nogil=True, cache=True)
def qmean_kernel(x, o, shape, sx, sr, acc, oshape, sa, so, zp_count, multiplier, shift, ozp, lo, hi, rows, k):
    """acc (int32, the output's shape, contiguous; sr its strides on the walk) = sum of x; o = requantized acc.

    k > 0: the walk ends in (reduced rows, short contiguous kept row); k rows at a time are summed
    into `rows` (k * n int32, one long vectorizable loop), which then folds into acc. Integer sums
    do not depend on the order, so this stays exact.
    """
    acc[:] = 0
    n = shape[5]
    x5, r5 = sx[5], sr[5]
    if k > 0:
        nrows = shape[4]
        for i0 in range(shape[0]):
            for i1 in range(shape[1]):
                for i2 in range(shape[2]):
                    for i3 in range(shape[3]):
                        px = i0 * sx[0] + i1 * sx[1] + i2 * sx[2] + i3 * sx[3]
                        pr = i0 * sr[0] + i1 * sr[1] + i2 * sr[2] + i3 * sr[3]
                        rows[:] = 0
                        for r0 in range(0, nrows, k):
                            m = min(k, nrows - r0) * n
                            xv = x[px + r0 * n:px + r0 * n + m]
                            for t in range(m):
                                rows[t] += np.int32(xv[t])
                        av = acc[pr:pr + n]
                        for r in range(min(k, nrows)):
                            rv = rows[r * n:(r + 1) * n]
                            for j in range(n):
                                av[j] += rv[j]
    else:
        for i0 in range(shape[0]):
            for i1 in range(shape[1]):
                for i2 in range(shape[2]):
                    for i3 in range(shape[3]):
                        for i4 in range(shape[4]):
                            px = i0 * sx[0] + i1 * sx[1] + i2 * sx[2] + i3 * sx[3] + i4 * sx[4]
                            pr = i0 * sr[0] + i1 * sr[1] + i2 * sr[2] + i3 * sr[3] + i4 * sr[4]
                            if r5 == 0:
                                total = np.int64(acc[pr])
                                for j in range(n):
                                    total += np.int64(x[px + j * x5])
                                acc[pr] = total
                            elif r5 == 1 and x5 == 1:
                                av = acc[pr:pr + n]
                                xv = x[px:px + n]
                                for j in range(n):
                                    av[j] += np.int32(xv[j])
                            else:
                                for j in range(n):
                                    acc[pr + j * r5] += np.int32(x[px + j * x5])
    for i0 in range(oshape[0]):
        for i1 in range(oshape[1]):
            for i2 in range(oshape[2]):
                for i3 in range(oshape[3]):
                    for i4 in range(oshape[4]):
                        pa = i0 * sa[0] + i1 * sa[1] + i2 * sa[2] + i3 * sa[3] + i4 * sa[4]
                        po = i0 * so[0] + i1 * so[1] + i2 * so[2] + i3 * so[3] + i4 * so[4]
                        for j in range(oshape[5]):
                            v = fp.wrap32(np.int64(acc[pa + j * sa[5]]) - zp_count)
                            r = fp.multiply_by_quantized_multiplier(v, multiplier, shift) + ozp
                            r = lo if r < lo else r
                            o[po + j * so[5]] = hi if r > hi else r


def _qreduce_common(ctx: OpContext, max_version: int) -> str | None:
    reason = _reduce_operands_reason(ctx, max_version) or q8_reason(ctx.inputs[0], ctx.outputs[0])
    if reason:
        return reason
    if ctx.inputs[0].size == 0:
        return "empty input"
    return _reduce_shape_reason(ctx)


def _qmean_supports(max_version: int) -> Callable[[OpContext], str | None]:
    def supports(ctx: OpContext) -> str | None:
        return _qreduce_common(ctx, max_version)

    return supports


def _qmean_scratch(ctx: OpContext) -> int:
    k, n = _chunk(ctx)
    return ctx.outputs[0].size * 4 + k * n * 4


def _qmean_bind(mean: bool) -> Callable:
    @skip_empty
    def bind(ctx: OpContext, ins: list, outs: list, scratch: np.ndarray | None) -> Step:
        x, out = ins[0], outs[0]
        axes = _axes_of(ctx)
        assert not isinstance(axes, str), axes
        qx, qo = QuantParams.of(ctx.inputs[0]), QuantParams.of(ctx.outputs[0])
        count = int(np.prod([x.shape[a] for a in axes], dtype=np.int64)) if axes else 1
        multiplier, shift = fp.quantize_multiplier(qx.scale / qo.scale)
        if mean:
            multiplier, shift = mean_multiplier(multiplier, shift, count)
        lo, hi = fp.int_range(out.dtype)
        acc = scratch[:out.size * 4].view(np.int32)
        contiguous = _contiguous_strides(out.shape)
        fx, sx = flat_view(x, False)
        fo, so = flat_view(out, True)
        shape, cx, cr = _walk(ctx, sx, contiguous, out.shape)
        k = chunk_rows(shape, cx, cr)  # x may be a strided view: decide on its real strides
        if k * int(shape[5]) * 4 > scratch.nbytes - out.size * 4:
            k = 0
        rows = scratch[out.size * 4:out.size * 4 + k * int(shape[5]) * 4].view(np.int32)
        oshape, (ca, co) = collapse(tuple(out.shape), [contiguous, list(so)])
        return qmean_kernel, (fx, fo, shape, cx, cr, acc, oshape, ca, co, np.int64(qx.zero_point * count),
                              np.int64(multiplier), np.int64(shift), np.int64(qo.zero_point), np.int64(lo),
                              np.int64(hi), rows, np.int64(k))

    return bind


def _qminmax_supports(max_version: int) -> Callable[[OpContext], str | None]:
    def supports(ctx: OpContext) -> str | None:
        reason = _qreduce_common(ctx, max_version)
        if reason:
            return reason
        qx, qo = QuantParams.of(ctx.inputs[0]), QuantParams.of(ctx.outputs[0])
        if qx != qo:  # TFLite's EvalType: TF_LITE_ENSURE_EQ on scale and zero point
            return "input and output quantization differ"
        return None

    return supports


def _qminmax_bind(op: int) -> Callable:
    kernel = _REDUCE_KERNELS[op]

    @skip_empty
    def bind(ctx: OpContext, ins: list, outs: list, scratch: np.ndarray | None) -> Step:
        x, out = ins[0], outs[0]
        info = np.iinfo(out.dtype)
        init = out.dtype.type(info.min if op == MAX else info.max)
        walk, acc, k = _reduce_walk(ctx, x, out, scratch)
        return kernel, (*walk, init, np.float32(1), False, acc, k)

    return bind


# ---------------------------------------------------------------------------------------------
# SOFTMAX / LOG_SOFTMAX over the last axis


@njit(nogil=True, cache=True)
def softmax_kernel(x, o, shape, sx, so, depth, dx, do, beta, log):
    """Rows of `depth` elements (strides dx/do) at the collapsed outer positions; TFLite's reference order."""
    for i0 in range(shape[0]):
        for i1 in range(shape[1]):
            for i2 in range(shape[2]):
                for i3 in range(shape[3]):
                    for i4 in range(shape[4]):
                        px = i0 * sx[0] + i1 * sx[1] + i2 * sx[2] + i3 * sx[3] + i4 * sx[4]
                        po = i0 * so[0] + i1 * so[1] + i2 * so[2] + i3 * so[3] + i4 * so[4]
                        for i5 in range(shape[5]):
                            _softmax_row(x, px + i5 * sx[5], dx, o, po + i5 * so[5], do, depth, beta, log)


@njit(nogil=True, cache=True, error_model="numpy")
def softmax_contiguous_kernel(x, o, shape, sx, so, depth, beta):
    """SOFTMAX over contiguous rows of `depth` >= SOFTMAX_FAST_DEPTH elements, exps by expf_fast.

    A kernel of its own: with this path inside softmax_kernel, LLVM made the short-row loop (unet's
    2 classes) 1.6-3x slower.
    """
    for i0 in range(shape[0]):
        for i1 in range(shape[1]):
            for i2 in range(shape[2]):
                for i3 in range(shape[3]):
                    for i4 in range(shape[4]):
                        px = i0 * sx[0] + i1 * sx[1] + i2 * sx[2] + i3 * sx[3] + i4 * sx[4]
                        po = i0 * so[0] + i1 * so[1] + i2 * so[2] + i3 * so[3] + i4 * so[4]
                        for i5 in range(shape[5]):
                            p = px + i5 * sx[5]
                            q = po + i5 * so[5]
                            _softmax_row_contiguous(x[p:p + depth], o[q:q + depth], beta)


# Rows at least this long take softmax_contiguous_kernel (libm's expf is faster one element at a time).
SOFTMAX_FAST_DEPTH = 16


@njit(inline="always")
def _softmax_row(x, px, dx, o, po, do, depth, beta, log):
    m = np.float32(-3.4028234663852886e38)
    for c in range(depth):
        v = x[px + c * dx]
        m = v if v > m else m
    total = np.float32(0)
    if log:
        for c in range(depth):
            total += np.exp(x[px + c * dx] - m)
        log_sum = np.log(total)
        for c in range(depth):
            o[po + c * do] = x[px + c * dx] - m - log_sum
    else:
        for c in range(depth):
            e = np.exp((x[px + c * dx] - m) * beta)
            o[po + c * do] = e
            total += e
        for c in range(depth):
            o[po + c * do] = o[po + c * do] / total


@njit(inline="always")
def _softmax_row_contiguous(xv, ov, beta):
    """SOFTMAX of one contiguous row: exps first, in a loop LLVM vectorizes with expf_fast, then the
    sum in the reference's order (the same float32 total as summing while exponentiating)."""
    m = np.float32(-3.4028234663852886e38)
    for c in range(xv.shape[0]):
        v = xv[c]
        m = v if v > m else m
    for c in range(xv.shape[0]):
        ov[c] = expf_fast((xv[c] - m) * beta)
    total = np.float32(0)
    for c in range(ov.shape[0]):
        total += ov[c]
    for c in range(ov.shape[0]):
        ov[c] = ov[c] / total


def _softmax_supports(max_version: int) -> Callable[[OpContext], str | None]:
    def supports(ctx: OpContext) -> str | None:
        reason = (operand_reason(ctx, max_version, 1, 1, "expects 1 input and 1 output")
                  or _float_reason(ctx, [ctx.inputs[0], ctx.outputs[0]])
                  or same_shape_reason(ctx.inputs[0], ctx.outputs[0]))
        if reason:
            return reason
        x = ctx.inputs[0]
        if not 1 <= len(x.shape) <= MAX_RANK + 1:
            return f"rank {len(x.shape)} not supported"
        return None

    return supports


def _softmax_bind(log: bool) -> Callable:
    @skip_empty
    def bind(ctx: OpContext, ins: list, outs: list, scratch: np.ndarray | None) -> Step:
        x, out = ins[0], outs[0]
        beta = 1.0 if log else float(getattr(ctx.op.options, "beta", 1.0) or 0.0)
        fx, sx = flat_view(x, False)
        fo, so = flat_view(out, True)
        shape, (cx, co) = collapse(tuple(x.shape[:-1]), [list(sx[:-1]), list(so[:-1])])
        depth = x.shape[-1]
        if not log and sx[-1] == 1 and so[-1] == 1 and depth >= SOFTMAX_FAST_DEPTH:
            return softmax_contiguous_kernel, (fx, fo, shape, cx, co, np.int64(depth), np.float32(beta))
        return softmax_kernel, (fx, fo, shape, cx, co, np.int64(depth), np.int64(sx[-1]),
                                np.int64(so[-1]), np.float32(beta), log)

    return bind


def _inplace_0(ctx: OpContext) -> tuple[int, ...]:
    return (0,)


# ---------------------------------------------------------------------------------------------
# ARG_MAX / ARG_MIN over one axis


@njit(nogil=True, cache=True)
def arg_kernel(x, o, shape, sx, so, n, dx, is_max):
    """o[k] = index of the first extreme element along the axis (n elements, stride dx)."""
    for i0 in range(shape[0]):
        for i1 in range(shape[1]):
            for i2 in range(shape[2]):
                for i3 in range(shape[3]):
                    for i4 in range(shape[4]):
                        px = i0 * sx[0] + i1 * sx[1] + i2 * sx[2] + i3 * sx[3] + i4 * sx[4]
                        po = i0 * so[0] + i1 * so[1] + i2 * so[2] + i3 * so[3] + i4 * so[4]
                        for i5 in range(shape[5]):
                            base = px + i5 * sx[5]
                            best = x[base]
                            k = 0
                            for j in range(1, n):
                                v = x[base + j * dx]
                                if (v > best) if is_max else (v < best):
                                    best = v
                                    k = j
                            o[po + i5 * so[5]] = k


def _arg_supports(ctx: OpContext) -> str | None:
    reason = _reduce_operands_reason(ctx, 3)
    if reason:
        return reason
    x, out = ctx.inputs[0], ctx.outputs[0]
    if x.dtype != _F32:
        return f"{x.dtype} not supported"
    if out.dtype not in (np.int32, np.int64):
        return f"output {out.dtype} not supported"
    if not 1 <= len(x.shape) <= MAX_RANK + 1:
        return f"rank {len(x.shape)} not supported"
    axes = _axes_of(ctx)
    if isinstance(axes, str):
        return axes
    if len(axes) != 1 or ctx.inputs[1].size != 1:
        return "exactly one axis supported"
    if x.shape[axes[0]] == 0:
        return "empty axis"
    if out.shape != reduced_shape(x.shape, axes, False):
        return f"output shape {out.shape} != {reduced_shape(x.shape, axes, False)}"
    return None


def _arg_bind(is_max: bool) -> Callable:
    @skip_empty
    def bind(ctx: OpContext, ins: list, outs: list, scratch: np.ndarray | None) -> Step:
        x, out = ins[0], outs[0]
        (axis,) = _axes_of(ctx)
        fx, sx = flat_view(x, False)
        fo, so = flat_view(out, True)
        outer_sx = [s for i, s in enumerate(sx) if i != axis]
        outer_shape = tuple(d for i, d in enumerate(x.shape) if i != axis)
        shape, (cx, co) = collapse(outer_shape, [outer_sx, list(so)])
        return arg_kernel, (fx, fo, shape, cx, co, np.int64(x.shape[axis]), np.int64(sx[axis]), is_max)

    return bind


def register(registry: KernelRegistry) -> None:
    """Adds the float32 reduction, softmax and arg-min/max kernels, and int8/uint8 MEAN, SUM, REDUCE_MAX/MIN."""
    for name, spec in REDUCE_OPS.items():
        registry.add(KernelEntry(op=name, supports=_reduce_supports(spec), bind=_reduce_bind(spec),
                                 scratch_bytes=_reduce_scratch, strided_output=True))
    registry.add(KernelEntry(op="MEAN", supports=_qmean_supports(3), bind=_qmean_bind(True),
                             scratch_bytes=_qmean_scratch, strided_output=True))
    registry.add(KernelEntry(op="SUM", supports=_qmean_supports(2), bind=_qmean_bind(False),
                             scratch_bytes=_qmean_scratch, strided_output=True))
    for name, op in (("REDUCE_MAX", MAX), ("REDUCE_MIN", MIN)):
        registry.add(KernelEntry(op=name, supports=_qminmax_supports(3), bind=_qminmax_bind(op),
                                 scratch_bytes=_reduce_scratch, strided_output=True))
    registry.add(KernelEntry(op="SOFTMAX", supports=_softmax_supports(3), bind=_softmax_bind(False),
                             inplace=_inplace_0, strided_output=True))
    registry.add(KernelEntry(op="LOG_SOFTMAX", supports=_softmax_supports(2), bind=_softmax_bind(True),
                             inplace=_inplace_0, strided_output=True))
    registry.add(KernelEntry(op="ARG_MAX", supports=_arg_supports, bind=_arg_bind(True), strided_output=True))
    registry.add(KernelEntry(op="ARG_MIN", supports=_arg_supports, bind=_arg_bind(False), strided_output=True))
