"""RESIZE_BILINEAR and RESIZE_NEAREST_NEIGHBOR kernels, index math as TFLite's reference kernels.

Source coordinates are computed in float32 exactly as reference_ops does (scale = in/out, or
(in-1)/(out-1) with align_corners; +0.5/-0.5 with half_pixel_centers), so the chosen input pixels
match LiteRT bit for bit. Bilinear runs in float32 for float32 and uint8 tensors (uint8 rounds half
away from zero, as LiteRT 2.x does) and in TFLite's 10-bit fixed point for int8/int16. Nearest neighbour
only moves elements, so it reinterprets any dtype as unsigned ints of the same width.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from edgert.kernels.quant import round_half_away
from edgert.kernels.registry import KernelEntry, KernelRegistry, OpContext, Step
from edgert.kernels.simd import F32_IR, array_bytes, byte_ptr, splat

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


@intrinsic
def _vlerp4(typingctx, x, out, ob, o00, o10, o01, o11, a, bb, dy, dx, width):
    """out at byte ob, `width` (literal) float32 lanes = x00*a*bb + x10*dy*bb + x01*a*dx + x11*dy*dx
    with x.. the lanes at byte offsets o.. of x: the reference's expression and order, as vectors.

    Why an intrinsic: numba's loop vectorizer leaves this channel loop scalar (about 4 cycles an
    element on the U-Net's upsampling layers)."""
    if not isinstance(width, types.IntegerLiteral):
        return None
    wdt = width.literal_value

    def codegen(context, builder, sig, args):
        a_x, a_out, ob_v, q00, q10, q01, q11, av, bv, dyv, dxv, _ = args
        vt = ir.VectorType(F32_IR, wdt)
        xb = array_bytes(context, builder, sig.args[0], a_x)
        obase = array_bytes(context, builder, sig.args[1], a_out)

        def lanes(off):
            return builder.load(byte_ptr(builder, xb, off, vt), align=4)

        a_s, b_s, dy_s, dx_s = (splat(builder, s, vt) for s in (av, bv, dyv, dxv))
        v = builder.fmul(builder.fmul(lanes(q00), a_s), b_s)
        v = builder.fadd(v, builder.fmul(builder.fmul(lanes(q10), dy_s), b_s))
        v = builder.fadd(v, builder.fmul(builder.fmul(lanes(q01), a_s), dx_s))
        v = builder.fadd(v, builder.fmul(builder.fmul(lanes(q11), dy_s), dx_s))
        builder.store(v, byte_ptr(builder, obase, ob_v, vt), align=4)
        return context.get_dummy_value()

    i64, f = types.int64, types.float32
    return types.none(x, out, i64, i64, i64, i64, i64, f, f, f, f, width), codegen


@njit(nogil=True, cache=True, fastmath=False)
def _bilinear_f32(x, out, hscale, wscale, half):
    """_bilinear_float for float32 with unit channel stride: 16 and 8 channels at a time as vectors."""
    one = np.float32(1.0)
    h, w, c = x.shape[1], x.shape[2], x.shape[3]
    s_b, s_h, s_w = x.strides[0], x.strides[1], x.strides[2]
    t_b, t_h, t_w = out.strides[0], out.strides[1], out.strides[2]
    for b in range(out.shape[0]):
        for y in range(out.shape[1]):
            iy, y0, y1 = _source(y, hscale, half, h)
            dy = iy - np.float32(y0)
            a = one - dy
            r0, r1 = b * s_b + y0 * s_h, b * s_b + y1 * s_h
            for xx in range(out.shape[2]):
                ix, x0, x1 = _source(xx, wscale, half, w)
                dx = ix - np.float32(x0)
                bb = one - dx
                o00, o10, o01, o11 = r0 + x0 * s_w, r1 + x0 * s_w, r0 + x1 * s_w, r1 + x1 * s_w
                ob = b * t_b + y * t_h + xx * t_w
                k = 0
                while k + 16 <= c:
                    _vlerp4(x, out, ob + 4 * k, o00 + 4 * k, o10 + 4 * k, o01 + 4 * k, o11 + 4 * k, a, bb, dy, dx, 16)
                    k += 16
                if k + 8 <= c:
                    _vlerp4(x, out, ob + 4 * k, o00 + 4 * k, o10 + 4 * k, o01 + 4 * k, o11 + 4 * k, a, bb, dy, dx, 8)
                    k += 8
                for ch in range(k, c):
                    out[b, y, xx, ch] = (x[b, y0, x0, ch] * a * bb + x[b, y1, x0, ch] * dy * bb
                                         + x[b, y0, x1, ch] * a * dx + x[b, y1, x1, ch] * dy * dx)


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
    hs, ws = _scale(x.shape[1], y.shape[1], align), _scale(x.shape[2], y.shape[2], align)
    if x.dtype == np.float32 and x.strides[3] == 4 and y.strides[3] == 4:
        return _bilinear_f32, (x, y, hs, ws, half)
    return _bilinear_float, (x, y, hs, ws, half, x.dtype == np.uint8)


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
