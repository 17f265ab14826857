"""RESIZE_BILINEAR and RESIZE_NEAREST_NEIGHBOR kernels, index math as TFLite's reference kernels.

Source coordinates are computed in float32 exactly as reference_ops does (scale = in/out, or
(in-1)/(out-1) with align_corners; +0.5/-0.5 with half_pixel_centers), so the chosen input pixels
match LiteRT bit for bit. Bilinear runs in float32 for float32 and uint8 tensors (uint8 rounds half
away from zero, as LiteRT 2.x does) and in TFLite's 10-bit fixed point for int8/int16. Nearest neighbour
only moves elements, so it reinterprets any dtype as unsigned ints of the same width.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from edgert.kernels.quant import round_half_away
from edgert.kernels.registry import KernelEntry, KernelRegistry, OpContext, Step

_UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


@njit(nogil=True, cache=True, fastmath=False, inline="always")
def _source(v, scale, half, size):
    """(scaled value, lower, upper) of reference_ops::ComputeInterpolationValues (float32)."""
    if half:
        s = (np.float32(v) + np.float32(0.5)) * scale - np.float32(0.5)
    else:
        s = np.float32(v) * scale
    lo = max(int(np.floor(s)), 0)
    hi = min(int(np.ceil(s)), size - 1)
    return s, lo, hi


@njit(nogil=True, cache=True, fastmath=False)
def _bilinear_float(x, out, hscale, wscale, half, rounding):
    """x (N, H, W, C), out (N, OH, OW, C); float32 math, stored by assignment (truncation for ints)."""
    one = np.float32(1.0)
    h, w = x.shape[1], x.shape[2]
    for b in range(out.shape[0]):
        for y in range(out.shape[1]):
            iy, y0, y1 = _source(y, hscale, half, h)
            dy = iy - np.float32(y0)
            for xx in range(out.shape[2]):
                ix, x0, x1 = _source(xx, wscale, half, w)
                dx = ix - np.float32(x0)
                for c in range(out.shape[3]):
                    v = (np.float32(x[b, y0, x0, c]) * (one - dy) * (one - dx)
                         + np.float32(x[b, y1, x0, c]) * dy * (one - dx)
                         + np.float32(x[b, y0, x1, c]) * (one - dy) * dx
                         + np.float32(x[b, y1, x1, c]) * dy * dx)
                    if rounding:
                        v = round_half_away(v)
                    out[b, y, xx, c] = v


@njit(nogil=True, cache=True, fastmath=False, inline="always")
def _source_fixed(v, scale10, half, size):
    if half:
        s = v * scale10 + scale10 // 2 - (1 << 9)
    else:
        s = v * scale10
    # s >= -512, so floor and C++'s truncating division agree wherever the max/min keep the value
    lo = max(s // 1024, 0)
    hi = min((s + 1023) // 1024, size - 1)
    return s, lo, hi


@njit(nogil=True, cache=True, fastmath=False)
def _bilinear_fixed(x, out, hscale10, wscale10, half):
    """reference_ops::ResizeBilinearInteger: 10-bit fixed point weights, round half away from zero."""
    h, w = x.shape[1], x.shape[2]
    for b in range(out.shape[0]):
        for y in range(out.shape[1]):
            iy, y0, y1 = _source_fixed(y, hscale10, half, h)
            for xx in range(out.shape[2]):
                ix, x0, x1 = _source_fixed(xx, wscale10, half, w)
                wy1 = np.int64(iy - 1024 * y0)
                wy0 = np.int64(1024) - wy1
                wx1 = np.int64(ix - 1024 * x0)
                wx0 = np.int64(1024) - wx1
                for c in range(out.shape[3]):
                    acc = (np.int64(x[b, y0, x0, c]) * wy0 * wx0 + np.int64(x[b, y1, x0, c]) * wy1 * wx0
                           + np.int64(x[b, y0, x1, c]) * wy0 * wx1 + np.int64(x[b, y1, x1, c]) * wy1 * wx1)
                    r = acc + (1 << 19) if acc > 0 else acc - (1 << 19)
                    q = r // (1 << 20) if r >= 0 else -((-r) // (1 << 20))  # C++ division truncates
                    out[b, y, xx, c] = q


@njit(nogil=True, cache=True, fastmath=False, inline="always")
def _nearest_index(v, in_size, scale, align, half):
    offset = np.float32(0.5) if half else np.float32(0.0)
    s = (np.float32(v) + offset) * scale
    if align:
        i = int(round_half_away(s))
    else:
        i = int(np.floor(s))
    i = min(i, in_size - 1)
    if half:
        i = max(i, 0)
    return i


@njit(nogil=True, cache=True, fastmath=False)
def _nearest(x, out, hscale, wscale, align, half):
    h, w = x.shape[1], x.shape[2]
    for b in range(out.shape[0]):
        for y in range(out.shape[1]):
            iy = _nearest_index(y, h, hscale, align, half)
            for xx in range(out.shape[2]):
                ix = _nearest_index(xx, w, wscale, align, half)
                for c in range(out.shape[3]):
                    out[b, y, xx, c] = x[b, iy, ix, c]


def _scale(in_size: int, out_size: int, align: bool) -> np.float32:
    if align and out_size > 1:
        return np.float32(in_size - 1) / np.float32(out_size - 1)
    return np.float32(in_size) / np.float32(out_size)


def _scale10(in_size: int, out_size: int, align: bool) -> int:
    if align and out_size > 1:
        return ((1 << 10) * (in_size - 1) + (out_size - 1) // 2) // (out_size - 1)
    return ((1 << 10) * in_size + out_size // 2) // out_size


def _as4d(a: np.ndarray) -> np.ndarray:
    return a[(None,) * (4 - a.ndim)] if a.ndim < 4 else a


def _supports(ctx: OpContext, dtypes: tuple) -> str | None:
    x, y = ctx.inputs[0], ctx.outputs[0]
    if x.dtype not in dtypes:
        return f"{x.dtype} not supported"
    if y.dtype != x.dtype:
        return f"output dtype {y.dtype} != input dtype {x.dtype}"
    if len(x.shape) != 4 or len(y.shape) != 4:
        return "needs 4-D NHWC tensors"
    if x.shape[0] != y.shape[0] or x.shape[3] != y.shape[3] or min(y.shape) < 0:
        return "batch/channels differ between input and output"
    if x.quantization is not None and y.quantization is not None and x.dtype.kind in "iu":
        if (x.quantization.scales, x.quantization.zero_points) != (y.quantization.scales, y.quantization.zero_points):
            return "input and output quantization differ"
    size = ctx.inputs[1]
    if size is not None and size.data is not None:
        if tuple(int(v) for v in np.asarray(size.data).reshape(-1)) != tuple(y.shape[1:3]):
            return "size input does not match the output shape"
    o = ctx.op.options
    if o is not None and o.align_corners and o.half_pixel_centers and ctx.op.opcode == "RESIZE_BILINEAR":
        return "align_corners with half_pixel_centers is invalid"
    return None


_BILINEAR_DTYPES = (np.dtype(np.float32), np.dtype(np.uint8), np.dtype(np.int8), np.dtype(np.int16))
_NEAREST_DTYPES = tuple(np.dtype(t) for t in (np.float32, np.uint8, np.int8, np.int16, np.int32, np.int64, np.float16))


def _flags(ctx: OpContext) -> tuple[bool, bool]:
    o = ctx.op.options
    return (bool(o.align_corners), bool(o.half_pixel_centers)) if o is not None else (False, False)


def _bind_bilinear(ctx: OpContext, ins: list, outs: list, scratch) -> Step:
    x, y = _as4d(ins[0]), _as4d(outs[0])
    align, half = _flags(ctx)
    if x.dtype in (np.int8, np.int16):
        return _bilinear_fixed, (x, y, _scale10(x.shape[1], y.shape[1], align), _scale10(x.shape[2], y.shape[2], align), half)
    return _bilinear_float, (x, y, _scale(x.shape[1], y.shape[1], align), _scale(x.shape[2], y.shape[2], align), half,
                             x.dtype == np.uint8)


def _bind_nearest(ctx: OpContext, ins: list, outs: list, scratch) -> Step:
    x, y = _as4d(ins[0]), _as4d(outs[0])
    align, half = _flags(ctx)
    u = _UINT[x.dtype.itemsize]
    return _nearest, (x.view(u), y.view(u), _scale(x.shape[1], y.shape[1], align),
                      _scale(x.shape[2], y.shape[2], align), align, half)


def register(registry: KernelRegistry) -> None:
    registry.add(KernelEntry("RESIZE_BILINEAR", lambda ctx: _supports(ctx, _BILINEAR_DTYPES), _bind_bilinear,
                             strided_output=True))
    registry.add(KernelEntry("RESIZE_NEAREST_NEIGHBOR", lambda ctx: _supports(ctx, _NEAREST_DTYPES), _bind_nearest,
                             strided_output=True))
