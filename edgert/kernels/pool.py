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
from numba import njit

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

MAX_VERSION = {"AVERAGE_POOL_2D": 3, "MAX_POOL_2D": 3, "L2_POOL_2D": 1}

AVG, MAX, L2 = 0, 1, 2
_KIND = {"AVERAGE_POOL_2D": AVG, "MAX_POOL_2D": MAX, "L2_POOL_2D": L2}


@njit(nogil=True, cache=True)
def _pool(inp, out, acc, kind, kh, kw, sh, sw, pt, pl, lo, hi):
    n_b, h, wd, c = inp.shape
    oh, ow = out.shape[1], out.shape[2]
    lowest = np.float32(-3.4028234663852886e38)
    for n in range(n_b):
        for oy in range(oh):
            iy0 = oy * sh - pt
            fy0, fy1 = max(0, -iy0), min(kh, h - iy0)
            for ox in range(ow):
                ix0 = ox * sw - pl
                fx0, fx1 = max(0, -ix0), min(kw, wd - ix0)
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
    return _pool, (ins[0], outs[0], acc, _KIND[ctx.op.opcode], kh, kw, sh, sw, pt, pl, lo, hi)


# ---------------------------------------------------------------- quantized (int8 / uint8 / int16)

QUANT_DTYPES = (np.dtype(np.int8), np.dtype(np.uint8), np.dtype(np.int16))


@njit(nogil=True, cache=True)
def _qpool(inp, out, acc, kind, kh, kw, sh, sw, pt, pl, lo, hi):
    n_b, h, wd, c = inp.shape
    oh, ow = out.shape[1], out.shape[2]
    for n in range(n_b):
        for oy in range(oh):
            iy0 = oy * sh - pt
            fy0, fy1 = max(0, -iy0), min(kh, h - iy0)
            for ox in range(ow):
                ix0 = ox * sw - pl
                fx0, fx1 = max(0, -ix0), min(kw, wd - ix0)
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
