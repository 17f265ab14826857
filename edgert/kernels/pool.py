"""Pooling float32 kernels: AVERAGE_POOL_2D, MAX_POOL_2D, L2_POOL_2D (SAME/VALID padding, fused clamp).

int8/uint8/int16 AVERAGE_POOL_2D and MAX_POOL_2D follow reference_integer_ops/pooling.h (and the
uint8 reference_ops versions): an int32 sum divided by the tap count rounding half away from zero,
or the max, then the quantized activation clamp; input and output share scale and zero point.

Numerics of the float kernels follow TFLite's reference pooling: windows are clipped to the image (padding is never
read and never counted), average = sum / number of in-image taps, L2 = sqrt(sum of squares / taps),
max starts from the lowest float; then the fused activation clamps as CalculateActivationRange
does. The loops keep channels innermost (contiguous) with a per-channel accumulator in scratch,
and index the output N-D, so a channel-sliced output view is fine.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from edgert.kernels.conv import (
    clamp,
    conv_geometry,
    f32_scratch,
    float_only,
    fused_activation_problem,
    fused_clamp,
    option,
    quantized_out_range,
    version_ok,
)
from edgert.kernels.registry import KernelEntry, KernelRegistry, OpContext, Step
from edgert.kernels.simd import F32_IR, array_bytes, byte_ptr, splat, stack_buf, vclamp

MAX_VERSION = {"AVERAGE_POOL_2D": 3, "MAX_POOL_2D": 3, "L2_POOL_2D": 1}

AVG, MAX, L2 = 0, 1, 2
_KIND = {"AVERAGE_POOL_2D": AVG, "MAX_POOL_2D": MAX, "L2_POOL_2D": L2}


@njit(inline="always")
def _clipped(o, stride, pad, k, size):
    # (first input index i0, filter taps [f0, f1)) of output index o: the window clipped to the
    # image, so padding is never read and never counted
    i0 = o * stride - pad
    return i0, max(0, -i0), min(k, size - i0)


@njit(nogil=True, cache=True)
def _pool(inp, out, acc, kind, kh, kw, sh, sw, pt, pl, lo, hi):
    n_b, h, wd, c = inp.shape
    oh, ow = out.shape[1], out.shape[2]
    lowest = np.float32(-3.4028234663852886e38)
    for n in range(n_b):
        for oy in range(oh):
            iy0, fy0, fy1 = _clipped(oy, sh, pt, kh, h)
            for ox in range(ow):
                ix0, fx0, fx1 = _clipped(ox, sw, pl, kw, wd)
                start = lowest if kind == MAX else np.float32(0.0)
                for ci in range(c):
                    acc[ci] = start
                for fy in range(fy0, fy1):
                    for fx in range(fx0, fx1):
                        src = inp[n, iy0 + fy, ix0 + fx]
                        if kind == MAX:
                            for ci in range(c):
                                v = src[ci]
                                acc[ci] = v if v > acc[ci] else acc[ci]
                        elif kind == AVG:
                            for ci in range(c):
                                acc[ci] += src[ci]
                        else:
                            for ci in range(c):
                                acc[ci] += src[ci] * src[ci]
                count = np.float32((fy1 - fy0) * (fx1 - fx0))
                dst = out[n, oy, ox]
                for ci in range(c):
                    v = acc[ci]
                    if kind == AVG:
                        v = v / count
                    elif kind == L2:
                        v = np.float32(math.sqrt(v / count))
                    dst[ci] = clamp(v, lo, hi)


# ---------------------------------------------------------------- vector path (AVG / MAX, float32)
#
# The channel loops above stay scalar under numba for the short channel counts of pooling layers
# (8-64); these intrinsics keep one <width x float> accumulator (a stack slot SROA turns into a
# register) per 16 or 8 channels. Same operations and order as _pool: max by `v > acc` select,
# average as the in-order sum divided by the tap count.


def _acc_ptr(builder, acc, vt):
    return builder.bitcast(acc, vt.as_pointer())


@intrinsic
def _vp_init(typingctx, acc, kind, width):
    """acc[0:width] = lowest float (MAX) or 0 (AVG); kind and width literal."""
    if not isinstance(kind, types.IntegerLiteral) or not isinstance(width, types.IntegerLiteral):
        return None
    k, wdt = kind.literal_value, width.literal_value

    def codegen(context, builder, sig, args):
        vt = ir.VectorType(F32_IR, wdt)
        start = float(np.float32(-3.4028234663852886e38)) if k == MAX else 0.0
        builder.store(ir.Constant(vt, [ir.Constant(F32_IR, start)] * wdt), _acc_ptr(builder, args[0], vt), align=4)
        return context.get_dummy_value()

    return types.none(acc, kind, width), codegen


@intrinsic
def _vp_tap(typingctx, acc, x, xbyte, kind, width):
    """acc = max(acc, x lanes) (MAX) or acc + x lanes (AVG), the lanes at byte xbyte of x's data."""
    if not isinstance(kind, types.IntegerLiteral) or not isinstance(width, types.IntegerLiteral):
        return None
    k, wdt = kind.literal_value, width.literal_value

    def codegen(context, builder, sig, args):
        vt = ir.VectorType(F32_IR, wdt)
        base = array_bytes(context, builder, sig.args[1], args[1])
        v = builder.load(byte_ptr(builder, base, args[2], vt), align=4)
        ap = _acc_ptr(builder, args[0], vt)
        a = builder.load(ap, align=4)
        r = builder.select(builder.fcmp_ordered(">", v, a), v, a) if k == MAX else builder.fadd(a, v)
        builder.store(r, ap, align=4)
        return context.get_dummy_value()

    return types.none(acc, x, types.int64, kind, width), codegen


@intrinsic
def _vp_out(typingctx, acc, out, obyte, count, lo, hi, kind, width):
    """out lanes at byte obyte = clamp(acc (/ count for AVG), lo, hi), NaN kept as clamp() does."""
    if not isinstance(kind, types.IntegerLiteral) or not isinstance(width, types.IntegerLiteral):
        return None
    k, wdt = kind.literal_value, width.literal_value

    def codegen(context, builder, sig, args):
        vt = ir.VectorType(F32_IR, wdt)
        v = builder.load(_acc_ptr(builder, args[0], vt), align=4)
        if k == AVG:
            v = builder.fdiv(v, splat(builder, args[3], vt))
        v = vclamp(builder, v, splat(builder, args[4], vt), splat(builder, args[5], vt))
        base = array_bytes(context, builder, sig.args[1], args[1])
        builder.store(v, byte_ptr(builder, base, args[2], vt), align=4)
        return context.get_dummy_value()

    f = types.float32
    return types.none(acc, out, types.int64, f, f, f, kind, width), codegen


@njit(inline="always")
def _pool_window(acc_p, inp, out, rowb, s_h, s_w, fy0, fy1, fx0, fx1, ob, count, lo, hi, kind, width):
    # kind and width literal at every call site (the intrinsics specialize on them)
    _vp_init(acc_p, kind, width)
    for fy in range(fy0, fy1):
        for fx in range(fx0, fx1):
            _vp_tap(acc_p, inp, rowb + fy * s_h + fx * s_w, kind, width)
    _vp_out(acc_p, out, ob, count, lo, hi, kind, width)


@njit(inline="always")
def _pool_lanes(acc_p, inp, out, rowb, s_h, s_w, fy0, fy1, fx0, fx1, ob, count, lo, hi, kind, width):
    # one output pixel, one block of `width` channels starting at byte offset rowb of the window's
    # corner: _pool_window with the literal (kind, width) picked from the runtime values
    if kind == MAX:
        if width == 16:
            _pool_window(acc_p, inp, out, rowb, s_h, s_w, fy0, fy1, fx0, fx1, ob, count, lo, hi, 1, 16)
        else:
            _pool_window(acc_p, inp, out, rowb, s_h, s_w, fy0, fy1, fx0, fx1, ob, count, lo, hi, 1, 8)
    elif width == 16:
        _pool_window(acc_p, inp, out, rowb, s_h, s_w, fy0, fy1, fx0, fx1, ob, count, lo, hi, 0, 16)
    else:
        _pool_window(acc_p, inp, out, rowb, s_h, s_w, fy0, fy1, fx0, fx1, ob, count, lo, hi, 0, 8)


@njit(nogil=True, cache=True)
def _pool_simd(inp, out, acc, kind, kh, kw, sh, sw, pt, pl, lo, hi):
    # AVG / MAX with unit channel stride in input and output; channels past the last multiple of 8
    # run _pool's scalar loop.
    n_b, h, wd, c = inp.shape
    oh, ow = out.shape[1], out.shape[2]
    s_n, s_h, s_w = inp.strides[0], inp.strides[1], inp.strides[2]
    o_n, o_h, o_w = out.strides[0], out.strides[1], out.strides[2]
    acc_p = stack_buf(16, np.float32)
    lowest = np.float32(-3.4028234663852886e38)
    for n in range(n_b):
        for oy in range(oh):
            iy0, fy0, fy1 = _clipped(oy, sh, pt, kh, h)
            for ox in range(ow):
                ix0, fx0, fx1 = _clipped(ox, sw, pl, kw, wd)
                count = np.float32((fy1 - fy0) * (fx1 - fx0))
                corner = n * s_n + iy0 * s_h + ix0 * s_w
                ob = n * o_n + oy * o_h + ox * o_w
                k = 0
                while k + 16 <= c:
                    _pool_lanes(acc_p, inp, out, corner + 4 * k, s_h, s_w, fy0, fy1, fx0, fx1, ob + 4 * k, count,
                                lo, hi, kind, 16)
                    k += 16
                if k + 8 <= c:
                    _pool_lanes(acc_p, inp, out, corner + 4 * k, s_h, s_w, fy0, fy1, fx0, fx1, ob + 4 * k, count,
                                lo, hi, kind, 8)
                    k += 8
                for ci in range(k, c):
                    v = lowest if kind == MAX else np.float32(0.0)
                    for fy in range(fy0, fy1):
                        for fx in range(fx0, fx1):
                            x = inp[n, iy0 + fy, ix0 + fx, ci]
                            if kind == MAX:
                                v = x if x > v else v
                            else:
                                v += x
                    if kind == AVG:
                        v = v / count
                    out[n, oy, ox, ci] = clamp(v, lo, hi)


def _params(ctx: OpContext) -> tuple[int, int, int, int, int, int, int, int]:
    _, h, wd, _ = ctx.inputs[0].shape
    kh, kw = option(ctx, "filter_height", 1), option(ctx, "filter_width", 1)
    sh, sw = option(ctx, "stride_h", 1), option(ctx, "stride_w", 1)
    padding = option(ctx, "padding", "SAME")
    oh, pt = conv_geometry(padding, h, kh, sh)
    ow, pl = conv_geometry(padding, wd, kw, sw)
    return oh, ow, kh, kw, sh, sw, pt, pl


def _shape_problem(ctx: OpContext) -> str | None:
    """Rank, fused activation and window geometry checks shared by the float and quantized kernels."""
    inp, out = ctx.inputs[0], ctx.outputs[0]
    if len(inp.shape) != 4 or len(out.shape) != 4:
        return "only 4-D input and output"
    reason = fused_activation_problem(ctx)
    if reason:
        return reason
    oh, ow, kh, kw, sh, sw, pt, pl = _params(ctx)
    if min(kh, kw, sh, sw) < 1:
        return f"filter {kh}x{kw} / stride {sh}x{sw} must be positive"
    want = (inp.shape[0], oh, ow, inp.shape[3])
    if tuple(out.shape) != want:
        return f"output shape {tuple(out.shape)} does not match computed {want}"
    # A window wholly in the padding has no taps; TFLite fails such an op at run time.
    if (oh - 1) * sh - pt >= inp.shape[1] or (ow - 1) * sw - pl >= inp.shape[2]:
        return "a pooling window lies entirely in the padding"
    return None


def _supports(ctx: OpContext) -> str | None:
    return version_ok(ctx, MAX_VERSION) or float_only(ctx, (0,)) or _shape_problem(ctx)


def _scratch(ctx: OpContext) -> int:
    return ctx.inputs[0].shape[3] * 4


def _bind(ctx: OpContext, ins: list, outs: list, scratch: np.ndarray | None) -> Step:
    _, _, kh, kw, sh, sw, pt, pl = _params(ctx)
    _, lo, hi = fused_clamp(ctx)
    acc = f32_scratch(scratch, ins[0].shape[3])
    kind = _KIND[ctx.op.opcode]
    if kind != L2 and ins[0].strides[3] == 4 and outs[0].strides[3] == 4:
        return _pool_simd, (ins[0], outs[0], acc, kind, kh, kw, sh, sw, pt, pl, lo, hi)
    return _pool, (ins[0], outs[0], acc, kind, kh, kw, sh, sw, pt, pl, lo, hi)


# ---------------------------------------------------------------- quantized (int8 / uint8 / int16)

QUANT_DTYPES = (np.dtype(np.int8), np.dtype(np.uint8), np.dtype(np.int16))


@njit(nogil=True, cache=True)
def _qpool(inp, out, acc, kind, kh, kw, sh, sw, pt, pl, lo, hi):
    n_b, h, wd, c = inp.shape
    oh, ow = out.shape[1], out.shape[2]
    for n in range(n_b):
        for oy in range(oh):
            iy0, fy0, fy1 = _clipped(oy, sh, pt, kh, h)
            for ox in range(ow):
                ix0, fx0, fx1 = _clipped(ox, sw, pl, kw, wd)
                start = np.int32(-2147483648) if kind == MAX else np.int32(0)
                for ci in range(c):
                    acc[ci] = start
                for fy in range(fy0, fy1):
                    for fx in range(fx0, fx1):
                        src = inp[n, iy0 + fy, ix0 + fx]
                        if kind == MAX:
                            for ci in range(c):
                                v = np.int32(src[ci])
                                acc[ci] = v if v > acc[ci] else acc[ci]
                        else:
                            for ci in range(c):
                                acc[ci] += np.int32(src[ci])
                count = (fy1 - fy0) * (fx1 - fx0)
                half = count // 2
                dst = out[n, oy, ox]
                for ci in range(c):
                    v = np.int64(acc[ci])
                    if kind == AVG:
                        # C++ integer division truncates toward zero; the +-half makes it round half away.
                        v = (v + half) // count if v > 0 else -((-v + half) // count)
                    v = lo if v < lo else v
                    dst[ci] = hi if v > hi else v


def _qsupports(ctx: OpContext) -> str | None:
    reason = version_ok(ctx, MAX_VERSION)
    if reason:
        return reason
    inp, out = ctx.inputs[0], ctx.outputs[0]
    if ctx.op.opcode == "L2_POOL_2D":
        return f"{inp.dtype} L2_POOL_2D not supported (float32 only)"
    if inp.dtype not in QUANT_DTYPES:
        return f"{inp.dtype} input not supported (int8/uint8/int16 kernel)"
    if out.dtype != inp.dtype:
        return f"{inp.dtype} input with {out.dtype} output not supported"
    qi, qo = inp.quantization, out.quantization
    if qi is None or qo is None or not qi.scales or not qo.scales:
        return "input and output need quantization parameters"
    if qi.scales[0] != qo.scales[0] or (qi.zero_points or (0,))[0] != (qo.zero_points or (0,))[0]:
        return "input and output quantization differ (TFLite requires them equal)"
    return _shape_problem(ctx)


def _qbind(ctx: OpContext, ins: list, outs: list, scratch: np.ndarray | None) -> Step:
    _, _, kh, kw, sh, sw, pt, pl = _params(ctx)
    _, lo, hi = quantized_out_range(ctx)
    acc = scratch[: ins[0].shape[3] * 4].view(np.int32)
    return _qpool, (ins[0], outs[0], acc, _KIND[ctx.op.opcode], kh, kw, sh, sw, pt, pl, lo, hi)


def register(registry: KernelRegistry) -> None:
    """Add the float32 pooling kernels, then the quantized AVERAGE_POOL_2D / MAX_POOL_2D ones."""
    for op in _KIND:
        registry.add(KernelEntry(op, _supports, _bind, _scratch, strided_output=True))
    for op in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        registry.add(KernelEntry(op, _qsupports, _qbind, _scratch, strided_output=True))
