"""Convolution-family float32 kernels: CONV_2D, DEPTHWISE_CONV_2D, TRANSPOSE_CONV, FULLY_CONNECTED, BATCH_MATMUL.

Which kernels use BLAS (numpy's OpenBLAS via `np.matmul(..., out=arena_view)`, no temporaries):
- CONV_2D 1x1 stride 1: one GEMM on the [N*H*W, C] view of the input against the [O, C] view of
  the filter (transposed view, no copy).
- CONV_2D general: im2col into kernel scratch, tiled so the scratch stays small, then GEMM per tile
  straight into the output rows; the tile's bias + activation pass runs while it is in cache.
- TRANSPOSE_CONV: one GEMM input[N*H*W, I] x filter[O*KH*KW, I]^T into scratch ("columns"), then a
  numba gather pass (col2im) that sums the columns per output pixel and adds bias + activation.
- FULLY_CONNECTED (unless tiny) and BATCH_MATMUL: GEMM on views.
Numba-only loops: DEPTHWISE_CONV_2D (inner loop over contiguous channels), CONV_2D when the input
has few channels (first layers, C <= 4) or when a view cannot be collapsed to GEMM rows, tiny
FULLY_CONNECTED, and every bias + fused-activation pass. All write N-D indexed outputs, so every
kernel here accepts a non-contiguous (channel-sliced) output view.

Quantized (int8/uint8) entries sit beside the float ones in `register`, each with its own
supports(); their arithmetic is described at the "quantized" section below.
"""

from __future__ import annotations

from typing import Callable

import numba
import numpy as np
from numba import get_thread_id, njit, prange

from edgert.kernels.activations import activation_code, activation_range, activation_supported, clamp_code
from edgert.kernels.fixedpoint import (
    activation_range_quantized,
    quantize_multiplier_array,
    wrap32,
)
from edgert.kernels.qgemm import KV as QGEMM_KV
from edgert.kernels.qgemm import MR as QGEMM_MR
from edgert.kernels.qgemm import gemm_block, k_chunks, operand_max
from edgert.kernels.registry import KernelEntry, KernelRegistry, OpContext, Step
from edgert.model.graph import Tensor

F32 = np.dtype(np.float32)

# im2col tiles are kept near this size: big enough that OpenBLAS's per-call packing of the filter
# is amortised, small enough to stay in L2 and to keep the planned scratch modest.
IM2COL_TILE_BYTES = 256 * 1024
# Input channel count at or below which CONV_2D runs the direct numba loop instead of im2col+GEMM
# (GEMM with K = KH*KW*C this small wastes most of each BLAS micro-kernel).
DIRECT_CONV_MAX_CHANNELS = 0
# FULLY_CONNECTED with at most this many multiply-adds runs as one numba call (BLAS call overhead
# plus a separate bias pass would dominate).
SMALL_FC_MACS = 4096

MAX_VERSION = {
    "CONV_2D": 8,
    "DEPTHWISE_CONV_2D": 7,
    "TRANSPOSE_CONV": 5,
    "FULLY_CONNECTED": 13,
    "BATCH_MATMUL": 4,
}


# ---------------------------------------------------------------- shared geometry and checks


def conv_geometry(padding: str, in_size: int, k: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """(output size, padding before) along one axis, by TFLite's ComputePaddingHeightWidth rules."""
    eff = (k - 1) * dilation + 1
    if padding == "SAME":
        out = (in_size + stride - 1) // stride
    else:
        out = (in_size + stride - eff) // stride
    total = max(0, (out - 1) * stride + eff - in_size)
    return out, total // 2


def float_only(ctx: OpContext, positions: tuple[int, ...]) -> str | None:
    """None if the given inputs (absent ones skipped) and all outputs are float32, else a reason."""
    for i in positions:
        t = ctx.inputs[i] if i < len(ctx.inputs) else None
        if t is not None and t.dtype != F32:
            return f"{t.dtype} {'weights' if i == 1 else f'input {i}'} not supported (float32 kernel)"
    for t in ctx.outputs:
        if t.dtype != F32:
            return f"{t.dtype} output not supported (float32 kernel)"
    return None


def version_ok(ctx: OpContext, max_version: dict[str, int] = MAX_VERSION) -> str | None:
    """None when the op's version is within 1..max_version[opcode] (or the opcode is not listed)."""
    top = max_version.get(ctx.op.opcode)
    if top is not None and not 1 <= ctx.op.version <= top:
        return f"version {ctx.op.version} not supported (1..{top})"
    return None


def option(ctx: OpContext, name: str, default):
    value = getattr(ctx.op.options, name, None) if ctx.op.options is not None else None
    return default if value is None else value


def fused_activation_problem(ctx: OpContext) -> str | None:
    """None when the kernels can apply the op's fused activation, else the reason."""
    return activation_supported(option(ctx, "fused_activation_function", "NONE"))


def fused_clamp(ctx: OpContext) -> tuple[int, np.float32, np.float32]:
    """(clamp code, lo, hi) of the op's fused activation, as TFLite's CalculateActivationRange.

    Float conv-family kernels only clamp (TANH there means no clamp); NONE still clamps to
    +-FLT_MAX, so an inf becomes FLT_MAX exactly as in TFLite.
    """
    code = clamp_code(activation_code(option(ctx, "fused_activation_function", "NONE")))
    lo, hi = activation_range(code)
    return code, np.float32(lo), np.float32(hi)


@njit(inline="always", cache=True)
def clamp(x, lo, hi):
    # Selects, not branches: vectorizes, and a ReLU over random signs does not mispredict.
    # NaN passes through, as std::min(std::max(x, lo), hi) lets it.
    x = lo if x < lo else x
    return hi if x > hi else x


def _no_bias() -> np.ndarray:
    """A read-only stand-in for an absent bias, so kernels keep one numba signature."""
    b = np.zeros(1, np.float32)
    b.flags.writeable = False
    return b


def _optional(ins: list, pos: int) -> np.ndarray | None:
    """Input `pos` (an optional bias), None when absent or beyond the op's inputs."""
    return ins[pos] if len(ins) > pos else None


def _float_bias(ins: list, pos: int) -> tuple[np.ndarray, bool]:
    """(bias or the _no_bias stand-in, whether there is a bias) for the float kernels."""
    bias = _optional(ins, pos)
    return (_no_bias(), False) if bias is None else (bias, True)


def rows_view(a: np.ndarray) -> np.ndarray | None:
    """a as a 2-D [prod(leading dims), last dim] view without copying, or None if the strides forbid it."""
    if a.ndim == 0 or (a.ndim > 1 and a.strides[-1] != a.itemsize):
        return None
    cols = a.shape[-1] if a.ndim else 1
    try:
        return np.reshape(a, (-1, cols) if cols else (a.size, 0), copy=False)
    except ValueError:
        return None


def _gemm_ok(*views: np.ndarray | None) -> bool:
    """Views BLAS takes without numpy copying: unit stride along the last axis."""
    return all(v is not None and v.strides[-1] == v.itemsize for v in views)


def f32_scratch(scratch: np.ndarray, count: int, offset_floats: int = 0) -> np.ndarray:
    start = offset_floats * 4
    return scratch[start : start + count * 4].view(np.float32)


# ---------------------------------------------------------------- numba loops


@njit(nogil=True, cache=True)
def _bias_act_rows(rows, bias, has_bias, lo, hi):
    for r in range(rows.shape[0]):
        row = rows[r]
        for o in range(row.shape[0]):
            v = row[o]
            if has_bias:
                v += bias[o]
            row[o] = clamp(v, lo, hi)


@njit(nogil=True, cache=True)
def _conv_direct(inp, w, bias, has_bias, out, sh, sw, dh, dw, pt, pl, lo, hi):
    # Reference loop order (ky, kx, ci) per output element; supports grouped convs.
    n_b, h, wd, c = inp.shape
    n_o, kh, kw, n_i = w.shape
    oh, ow = out.shape[1], out.shape[2]
    per_group = n_o // (c // n_i)
    for n in range(n_b):
        for oy in range(oh):
            iy0 = oy * sh - pt
            for ox in range(ow):
                ix0 = ox * sw - pl
                for o in range(n_o):
                    c0 = (o // per_group) * n_i
                    acc = np.float32(0.0)
                    for ky in range(kh):
                        iy = iy0 + ky * dh
                        if iy < 0 or iy >= h:
                            continue
                        for kx in range(kw):
                            ix = ix0 + kx * dw
                            if ix < 0 or ix >= wd:
                                continue
                            src = inp[n, iy, ix]
                            wv = w[o, ky, kx]
                            for i in range(n_i):
                                acc += src[c0 + i] * wv[i]
                    if has_bias:
                        acc += bias[o]
                    out[n, oy, ox, o] = clamp(acc, lo, hi)


@njit(nogil=True, cache=True)
def _im2col(inp, col, r0, oh, ow, kh, kw, sh, sw, dh, dw, pt, pl):
    h, wd, c = inp.shape[1], inp.shape[2], inp.shape[3]
    plane = oh * ow
    for r in range(col.shape[0]):
        p = r0 + r
        n = p // plane
        rem = p - n * plane
        oy = rem // ow
        ox = rem - oy * ow
        iy0 = oy * sh - pt
        ix0 = ox * sw - pl
        dst = col[r]
        k = 0
        for ky in range(kh):
            iy = iy0 + ky * dh
            for kx in range(kw):
                ix = ix0 + kx * dw
                if iy >= 0 and iy < h and ix >= 0 and ix < wd:
                    src = inp[n, iy, ix]
                    for ci in range(c):
                        dst[k + ci] = src[ci]
                else:
                    for ci in range(c):
                        dst[k + ci] = np.float32(0.0)
                k += c


@njit(nogil=True, cache=True, parallel=True)
def _depthwise(inp, w, bias, has_bias, out, sh, sw, dh, dw, pt, pl, mult, lo, hi):
    # Why prange and only scalar N-D indexing (no row views): numba marks the arguments of a
    # parfor body noalias when the body makes no array aliases, and only then does LLVM vectorize
    # the channel loops without per-loop overlap checks and keep loads out of the stores' way.
    # With threads=1 the prange runs on one thread (about 1 us launch cost). Interior pixels of a 3x3
    # multiplier-1 filter (most depthwise layers) sum their 9 taps in registers, in the
    # reference's (ky, kx) order; the rest accumulate into the output row, then add bias and clamp.
    n_b, h, wd, c = inp.shape
    kh, kw = w.shape[1], w.shape[2]
    oh, ow, oc = out.shape[1], out.shape[2], out.shape[3]
    fast3 = kh == 3 and kw == 3 and mult == 1
    for n in range(n_b):
        for oy in prange(oh):
            iy0 = oy * sh - pt
            # taps whose input row/column is inside the image (the rest read zero padding)
            ky0, ky1 = max(0, (dh - 1 - iy0) // dh), min(kh, (h - iy0 + dh - 1) // dh)
            for ox in range(ow):
                ix0 = ox * sw - pl
                kx0, kx1 = max(0, (dw - 1 - ix0) // dw), min(kw, (wd - ix0 + dw - 1) // dw)
                if fast3 and ky0 == 0 and ky1 == 3 and kx0 == 0 and kx1 == 3:
                    iy1, iy2 = iy0 + dh, iy0 + 2 * dh
                    ix1, ix2 = ix0 + dw, ix0 + 2 * dw
                    for ci in range(c):
                        v = inp[n, iy0, ix0, ci] * w[0, 0, 0, ci]
                        v += inp[n, iy0, ix1, ci] * w[0, 0, 1, ci]
                        v += inp[n, iy0, ix2, ci] * w[0, 0, 2, ci]
                        v += inp[n, iy1, ix0, ci] * w[0, 1, 0, ci]
                        v += inp[n, iy1, ix1, ci] * w[0, 1, 1, ci]
                        v += inp[n, iy1, ix2, ci] * w[0, 1, 2, ci]
                        v += inp[n, iy2, ix0, ci] * w[0, 2, 0, ci]
                        v += inp[n, iy2, ix1, ci] * w[0, 2, 1, ci]
                        v += inp[n, iy2, ix2, ci] * w[0, 2, 2, ci]
                        if has_bias:
                            v += bias[ci]
                        out[n, oy, ox, ci] = clamp(v, lo, hi)
                    continue
                for o in range(oc):
                    out[n, oy, ox, o] = np.float32(0.0)
                for ky in range(ky0, ky1):
                    iy = iy0 + ky * dh
                    for kx in range(kx0, kx1):
                        ix = ix0 + kx * dw
                        if mult == 1:
                            for ci in range(c):
                                out[n, oy, ox, ci] += inp[n, iy, ix, ci] * w[0, ky, kx, ci]
                        else:
                            for ci in range(c):
                                for m in range(mult):
                                    out[n, oy, ox, ci * mult + m] += inp[n, iy, ix, ci] * w[0, ky, kx, ci * mult + m]
                for o in range(oc):
                    v = out[n, oy, ox, o]
                    if has_bias:
                        v += bias[o]
                    out[n, oy, ox, o] = clamp(v, lo, hi)


@njit(nogil=True, cache=True)
def _col2im_gather(col, bias, has_bias, out, in_h, in_w, kh, kw, sh, sw, pt, pl, lo, hi):
    # col: [N*in_h*in_w, O*kh*kw] GEMM result; output pixel (oy, ox) gathers every input pixel
    # (iy, ix) and tap (ky, kx) with iy*sh - pt + ky == oy (the reference's scatter, inverted).
    n_b, oh, ow, n_o = out.shape
    taps = kh * kw
    for n in range(n_b):
        for oy in range(oh):
            for ox in range(ow):
                dst = out[n, oy, ox]
                for o in range(n_o):
                    dst[o] = np.float32(0.0)
                for ky in range(kh):
                    ty = oy + pt - ky
                    if ty < 0 or ty % sh != 0:
                        continue
                    iy = ty // sh
                    if iy >= in_h:
                        continue
                    for kx in range(kw):
                        tx = ox + pl - kx
                        if tx < 0 or tx % sw != 0:
                            continue
                        ix = tx // sw
                        if ix >= in_w:
                            continue
                        src = col[(n * in_h + iy) * in_w + ix]
                        t = ky * kw + kx
                        for o in range(n_o):
                            dst[o] += src[o * taps + t]
                for o in range(n_o):
                    v = dst[o]
                    if has_bias:
                        v += bias[o]
                    dst[o] = clamp(v, lo, hi)


@njit(nogil=True, cache=True)
def _fc_direct(x, w, bias, has_bias, out, lo, hi):
    # x: [B, I], w: [O, I], out: [B, O]; reference order per output element.
    for b in range(x.shape[0]):
        xb = x[b]
        for o in range(w.shape[0]):
            wo = w[o]
            acc = np.float32(0.0)
            for i in range(w.shape[1]):
                acc += xb[i] * wo[i]
            if has_bias:
                acc += bias[o]
            out[b, o] = clamp(acc, lo, hi)


# ---------------------------------------------------------------- python drivers (BLAS paths)


def _gemm_bias_act(x, w_t, out_rows, bias, has_bias, lo, hi, post):
    np.matmul(x, w_t, out=out_rows)
    if post:
        _bias_act_rows(out_rows, bias, has_bias, lo, hi)


def _im2col_gemm(inp, tiles, geom, w_t, bias, has_bias, lo, hi, post):
    oh, ow, kh, kw, sh, sw, dh, dw, pt, pl = geom
    for r0, col, out_rows in tiles:
        _im2col(inp, col, r0, oh, ow, kh, kw, sh, sw, dh, dw, pt, pl)
        np.matmul(col, w_t, out=out_rows)
        if post:
            _bias_act_rows(out_rows, bias, has_bias, lo, hi)


def _transpose_conv_gemm(x_rows, w_t, col, bias, has_bias, out, geom):
    np.matmul(x_rows, w_t, out=col)
    _col2im_gather(col, bias, has_bias, out, *geom)


# The same calls as separate steps, so the executor can make each a direct call (see executor.py).
_gemm_bias_act.as_steps = lambda x, w_t, out_rows, bias, has_bias, lo, hi, post: [
    (np.matmul, (x, w_t, out_rows)), *([(_bias_act_rows, (out_rows, bias, has_bias, lo, hi))] if post else [])]
_im2col_gemm.as_steps = lambda inp, tiles, geom, w_t, bias, has_bias, lo, hi, post: [
    step for r0, col, out_rows in tiles for step in (
        (_im2col, (inp, col, r0, *geom)), (np.matmul, (col, w_t, out_rows)),
        *([(_bias_act_rows, (out_rows, bias, has_bias, lo, hi))] if post else []))]
_transpose_conv_gemm.as_steps = lambda x_rows, w_t, col, bias, has_bias, out, geom: [
    (np.matmul, (x_rows, w_t, col)), (_col2im_gather, (col, bias, has_bias, out, *geom))]


# ---------------------------------------------------------------- CONV_2D


def _conv_params(ctx: OpContext) -> dict:
    inp, w = ctx.inputs[0], ctx.inputs[1]
    _, h, wd, _ = inp.shape
    _, kh, kw, _ = w.shape
    sh, sw = option(ctx, "stride_h", 1), option(ctx, "stride_w", 1)
    dh, dw = option(ctx, "dilation_h_factor", 1), option(ctx, "dilation_w_factor", 1)
    padding = option(ctx, "padding", "SAME")
    oh, pt = conv_geometry(padding, h, kh, sh, dh)
    ow, pl = conv_geometry(padding, wd, kw, sw, dw)
    return dict(oh=oh, ow=ow, kh=kh, kw=kw, sh=sh, sw=sw, dh=dh, dw=dw, pt=pt, pl=pl)


# Checks shared by the float and quantized supports() of the conv family. Each returns None or a
# reason; a supports() chains them with `or` in the order the problems should be reported, so
# every check may assume the ones before it passed.


def _four_d(ctx: OpContext, x_pos: int) -> str | None:
    if any(len(t.shape) != 4 for t in (ctx.inputs[x_pos], ctx.inputs[1], ctx.outputs[0])):
        return "only 4-D input, filter and output"
    return None


def _dense(ctx: OpContext, what: str) -> str | None:
    return f"sparse {what} not supported" if ctx.inputs[1].sparsity is not None else None


def _conv_output_problem(ctx: OpContext, channels: int) -> str | None:
    """None when output 0 has the shape the conv geometry gives with `channels` channels."""
    p = _conv_params(ctx)
    want = (ctx.inputs[0].shape[0], p["oh"], p["ow"], channels)
    if tuple(ctx.outputs[0].shape) != want:
        return f"output shape {tuple(ctx.outputs[0].shape)} does not match computed {want}"
    return None


def _conv_groups_problem(ctx: OpContext) -> str | None:
    c, w = ctx.inputs[0].shape[3], ctx.inputs[1].shape
    if w[3] == 0 or c % w[3] or w[0] % (c // w[3]):
        return f"filter depth {w[3]} does not divide input depth {c} into groups"
    return None


def _dw_geometry_problem(ctx: OpContext) -> str | None:
    c, w = ctx.inputs[0].shape[3], ctx.inputs[1].shape
    if w[0] != 1 or c == 0 or w[3] % c:
        return f"filter shape {tuple(w)} is not [1, KH, KW, {c}*multiplier]"
    return _conv_output_problem(ctx, w[3])


def _tc_constant_shape(ctx: OpContext) -> str | None:
    shape_t = ctx.inputs[0]
    if shape_t is None or not shape_t.is_constant:
        return "output_shape must be a constant"
    return None


def _tc_geometry_problem(ctx: OpContext) -> str | None:
    shape_t, w, inp = ctx.inputs[0], ctx.inputs[1], ctx.inputs[2]
    out = ctx.outputs[0]
    if tuple(int(v) for v in np.asarray(shape_t.data).ravel()) != tuple(out.shape):
        return "output_shape tensor disagrees with the output tensor's shape"
    if w.shape[3] != inp.shape[3] or w.shape[0] != out.shape[3] or inp.shape[0] != out.shape[0]:
        return f"filter {tuple(w.shape)} does not match input {tuple(inp.shape)} / output {tuple(out.shape)}"
    return None


def _fc_weights_format(ctx: OpContext) -> str | None:
    if option(ctx, "weights_format", "DEFAULT") != "DEFAULT":
        return f"weights_format {option(ctx, 'weights_format', '')} not supported"
    return None


def _fc_weights_2d(ctx: OpContext) -> str | None:
    return "weights must be 2-D [O, I]" if len(ctx.inputs[1].shape) != 2 else None


def _fc_shape_problem(ctx: OpContext) -> str | None:
    inp, out = ctx.inputs[0], ctx.outputs[0]
    o, i = ctx.inputs[1].shape
    if i == 0 or inp.size % i:
        return f"input size {inp.size} is not a multiple of weights depth {i}"
    if out.size != (inp.size // i) * o or (out.shape and out.shape[-1] != o):
        return f"output shape {tuple(out.shape)} does not match [{inp.size // i}, {o}]"
    return None


def _conv_supports(ctx: OpContext) -> str | None:
    return (version_ok(ctx) or float_only(ctx, (0, 1, 2)) or _four_d(ctx, 0) or _dense(ctx, "filter")
            or fused_activation_problem(ctx) or _conv_groups_problem(ctx)
            or _conv_output_problem(ctx, ctx.inputs[1].shape[0]))


def _conv_path(ctx: OpContext) -> str:
    inp, w = ctx.inputs[0], ctx.inputs[1]
    p = _conv_params(ctx)
    if inp.shape[3] != w.shape[3]:
        return "direct"  # grouped
    if inp.shape[3] <= DIRECT_CONV_MAX_CHANNELS:
        return "direct"
    if p["kh"] == 1 and p["kw"] == 1 and p["sh"] == 1 and p["sw"] == 1:
        return "gemm1x1"
    return "im2col"


def _im2col_tile_rows(ctx: OpContext) -> tuple[int, int]:
    """(rows per tile, K) of the im2col scratch for ctx."""
    _, kh, kw, c = ctx.inputs[1].shape
    k = kh * kw * c
    rows_total = ctx.outputs[0].size // ctx.outputs[0].shape[3]
    rows = max(1, min(rows_total, max(64, IM2COL_TILE_BYTES // (4 * k))))
    return rows, k


def _conv_scratch(ctx: OpContext) -> int:
    if _conv_path(ctx) != "im2col":
        return 0
    rows, k = _im2col_tile_rows(ctx)
    return rows * k * 4


def _conv_bind(ctx: OpContext, ins: list, outs: list, scratch: np.ndarray | None) -> Step:
    inp, w = ins[0], ins[1]
    b, has_bias = _float_bias(ins, 2)
    out = outs[0]
    p = _conv_params(ctx)
    code, lo, hi = fused_clamp(ctx)
    post = has_bias or code != 0
    path = _conv_path(ctx)
    o = w.shape[0]
    w_t = np.reshape(w, (o, -1), copy=False).T if path != "direct" else None
    out_rows = rows_view(out)
    if path == "gemm1x1":
        in_rows = rows_view(inp)
        if _gemm_ok(in_rows, out_rows):
            return _gemm_bias_act, (in_rows, w_t, out_rows, b, has_bias, lo, hi, post)
    elif path == "im2col" and _gemm_ok(out_rows):
        rows, k = _im2col_tile_rows(ctx)
        total = out_rows.shape[0]
        tiles = []
        for r0 in range(0, total, rows):
            n = min(rows, total - r0)
            col = f32_scratch(scratch, n * k).reshape(n, k)
            tiles.append((r0, col, out_rows[r0 : r0 + n]))
        geom = (p["oh"], p["ow"], p["kh"], p["kw"], p["sh"], p["sw"], p["dh"], p["dw"], p["pt"], p["pl"])
        return _im2col_gemm, (inp, tuple(tiles), geom, w_t, b, has_bias, lo, hi, post)
    return _conv_direct, (inp, w, b, has_bias, out, p["sh"], p["sw"], p["dh"], p["dw"], p["pt"], p["pl"], lo, hi)


# ---------------------------------------------------------------- DEPTHWISE_CONV_2D


def _dw_supports(ctx: OpContext) -> str | None:
    return (version_ok(ctx) or float_only(ctx, (0, 1, 2)) or _four_d(ctx, 0) or _dense(ctx, "filter")
            or fused_activation_problem(ctx) or _dw_geometry_problem(ctx))


def _dw_bind(ctx: OpContext, ins: list, outs: list, scratch: np.ndarray | None) -> Step:
    inp, w = ins[0], ins[1]
    b, has_bias = _float_bias(ins, 2)
    out = outs[0]
    p = _conv_params(ctx)
    # The multiplier follows from the shapes; the option is redundant and older converters left it 0.
    mult = w.shape[3] // inp.shape[3]
    return _depthwise, (
        inp, w, b, has_bias, out,
        p["sh"], p["sw"], p["dh"], p["dw"], p["pt"], p["pl"], mult, *fused_clamp(ctx)[1:],
    )


# ---------------------------------------------------------------- TRANSPOSE_CONV


def _tc_supports(ctx: OpContext) -> str | None:
    return (version_ok(ctx) or float_only(ctx, (1, 2, 3)) or _tc_constant_shape(ctx) or _four_d(ctx, 2)
            or _tc_geometry_problem(ctx) or fused_activation_problem(ctx))


def _tc_params(ctx: OpContext) -> tuple[int, int, int, int]:
    w, out = ctx.inputs[1], ctx.outputs[0]
    sh, sw = option(ctx, "stride_h", 1), option(ctx, "stride_w", 1)
    padding = option(ctx, "padding", "SAME")
    # TFLite pads as for a forward conv whose *input* is this op's output.
    _, pt = conv_geometry(padding, out.shape[1], w.shape[1], sh)
    _, pl = conv_geometry(padding, out.shape[2], w.shape[2], sw)
    return sh, sw, pt, pl


def transpose_conv_scratch(inp: Tensor, w: Tensor) -> int:
    """Scratch bytes of transpose_conv_step: the GEMM's float32 columns, [input pixels, O*KH*KW]."""
    return (inp.size // inp.shape[3]) * w.shape[0] * w.shape[1] * w.shape[2] * 4


def transpose_conv_step(inp: np.ndarray, w: np.ndarray, bias: np.ndarray | None, out: np.ndarray,
                        scratch: np.ndarray, stride_hw: tuple[int, int], pad_tl: tuple[int, int],
                        lo: np.float32, hi: np.float32, op_name: str) -> Step:
    """The float transpose conv as one step: input[N*H*W, I] x filter[O*KH*KW, I]^T into scratch
    columns (transpose_conv_scratch bytes), then the col2im gather adds the bias and clamps to [lo, hi]."""
    o, kh, kw, i = w.shape
    x_rows = rows_view(inp)
    if not _gemm_ok(x_rows):
        raise ValueError(f"{op_name} input view cannot be collapsed to GEMM rows")
    col = f32_scratch(scratch, x_rows.shape[0] * o * kh * kw).reshape(x_rows.shape[0], o * kh * kw)
    w_t = np.reshape(w, (o * kh * kw, i), copy=False).T
    b = bias if bias is not None else _no_bias()
    geom = (inp.shape[1], inp.shape[2], kh, kw, *stride_hw, *pad_tl, lo, hi)
    return _transpose_conv_gemm, (x_rows, w_t, col, b, bias is not None, out, geom)


def _tc_scratch(ctx: OpContext) -> int:
    return transpose_conv_scratch(ctx.inputs[2], ctx.inputs[1])


def _tc_bind(ctx: OpContext, ins: list, outs: list, scratch: np.ndarray | None) -> Step:
    sh, sw, pt, pl = _tc_params(ctx)
    _, lo, hi = fused_clamp(ctx)
    return transpose_conv_step(ins[2], ins[1], _optional(ins, 3), outs[0], scratch, (sh, sw), (pt, pl), lo, hi,
                               "TRANSPOSE_CONV")


# ---------------------------------------------------------------- FULLY_CONNECTED


def _fc_supports(ctx: OpContext) -> str | None:
    return (version_ok(ctx) or float_only(ctx, (0, 1, 2)) or _fc_weights_format(ctx) or _dense(ctx, "weights")
            or _fc_weights_2d(ctx) or fused_activation_problem(ctx) or _fc_shape_problem(ctx))


def _fc_bind(ctx: OpContext, ins: list, outs: list, scratch: np.ndarray | None) -> Step:
    inp, w = ins[0], ins[1]
    b, has_bias = _float_bias(ins, 2)
    out = outs[0]
    o, i = w.shape
    code, lo, hi = fused_clamp(ctx)
    x = _rows_of(inp, i)
    y = _rows_of(out, o)
    w_ok = w.strides[-1] == w.itemsize
    if x is None or y is None or not w_ok:
        raise ValueError("FULLY_CONNECTED operands cannot be viewed as matrices without a copy")
    if x.shape[0] * i * o <= SMALL_FC_MACS or not _gemm_ok(x, y):
        return _fc_direct, (x, w, b, has_bias, y, lo, hi)
    return _gemm_bias_act, (x, w.T, y, b, has_bias, lo, hi, has_bias or code != 0)


def _rows_of(a: np.ndarray, cols: int) -> np.ndarray | None:
    """a viewed as [size / cols, cols] (FC flattens every leading dim into the batch)."""
    if a.shape and a.shape[-1] == cols:
        return rows_view(a)
    try:
        return np.reshape(a, (-1, cols), copy=False)
    except ValueError:
        return None


# ---------------------------------------------------------------- BATCH_MATMUL


def _bmm_shapes(ctx: OpContext) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | str:
    lhs, rhs = ctx.inputs[0].shape, ctx.inputs[1].shape
    if len(lhs) < 2 or len(rhs) < 2:
        return "operands must be at least 2-D"
    adj_x, adj_y = bool(option(ctx, "adj_x", False)), bool(option(ctx, "adj_y", False))
    m, k = (lhs[-1], lhs[-2]) if adj_x else (lhs[-2], lhs[-1])
    k2, n = (rhs[-1], rhs[-2]) if adj_y else (rhs[-2], rhs[-1])
    if k != k2:
        return f"inner dimensions differ ({k} vs {k2})"
    try:
        batch = np.broadcast_shapes(tuple(lhs[:-2]), tuple(rhs[:-2]))
    except ValueError:
        return f"batch dimensions {lhs[:-2]} and {rhs[:-2]} do not broadcast"
    return tuple(lhs), tuple(rhs), tuple(batch) + (m, n)


def _bmm_supports(ctx: OpContext) -> str | None:
    reason = version_ok(ctx) or float_only(ctx, (0, 1))
    if reason:
        return reason
    shapes = _bmm_shapes(ctx)
    if isinstance(shapes, str):
        return shapes
    if tuple(ctx.outputs[0].shape) != shapes[2]:
        return f"output shape {tuple(ctx.outputs[0].shape)} does not match computed {shapes[2]}"
    return None


def _bmm_bind(ctx: OpContext, ins: list, outs: list, scratch: np.ndarray | None) -> Step:
    lhs, rhs = ins[0], ins[1]
    if option(ctx, "adj_x", False):
        lhs = np.swapaxes(lhs, -1, -2)
    if option(ctx, "adj_y", False):
        rhs = np.swapaxes(rhs, -1, -2)
    # numpy broadcasts batch dims as TFLite does and hands each matrix to BLAS with trans flags.
    return np.matmul, (lhs, rhs, outs[0])


# ---------------------------------------------------------------- quantized (int8 / uint8) kernels
#
# TFLite's integer conv family (reference_integer_ops/{conv,depthwise_conv,fully_connected,
# transpose_conv}.h and the uint8 reference_ops versions) computes, per output element,
#   acc = bias[o] + sum (x + in_off) * (w + w_off)        (int32, in_off = -zp_in)
#   out = clamp(MultiplyByQuantizedMultiplier(acc, mult[o], shift[o]) + zp_out, act_min, act_max)
# with w_off = -zp_w for uint8 and for per-tensor int8 FULLY_CONNECTED, and 0 for the int8
# conv/depthwise/transpose kernels (they ignore the filter zero point; we require it to be 0).
# Integer sums are exact modulo 2^32 in any order, so the loops below regroup freely:
# - GEMM-shaped work is a plain dot product of raw 8-bit values, the offsets folded into a
#   per-channel `bias_eff = bias + in_off * sum(w) + K * in_off * w_off` computed once in bind,
#   plus `w_off * sum(x)` per row when w_off != 0 (uint8);
# - padding taps are skipped (direct loops) or filled with zp_in, whose (x + in_off) is 0 (im2col).

Q8 = (np.dtype(np.int8), np.dtype(np.uint8))
I32 = np.dtype(np.int32)
# Below this many multiply-adds per output (K = KH*KW*C) with at least this many output channels,
# CONV_2D vectorizes over output channels (outer product) instead of over K (dot product): a dot of
# a few dozen bytes spends more on its horizontal sum than on the multiplies.
OUTER_MAX_K = 64
OUTER_MIN_O = 16
# Rows of the int8 im2col tile of the dot-product path (the tile is rows * K bytes of scratch).
QIM2COL_TILE_BYTES = 64 * 1024
# From this K = KH*KW*C on, CONV_2D runs the float32 GEMM of qgemm (exact, see there). Measured
# (tools/bench_ops.py int8, 1 thread): 1.6x faster than the int32 dot at K = 1152, but 0.7-1.0x
# at K = 144, where its per-output horizontal sums and the float im2col fill dominate.
QGEMM_MIN_K = 512


@njit(inline="always", cache=True)
def requantize(acc, mult, shift, out_zp, lo, hi, single):
    """int32 accumulator -> output code: MultiplyByQuantizedMultiplier, + zero point, activation clamp.

    Branch-free (selects only), so a loop over output channels vectorizes; bit-identical to
    fixedpoint.multiply_by_quantized_multiplier (double rounding) or its single-rounding variant.
    single: LiteRT 2.3's BUILTIN_REF rounds FULLY_CONNECTED (int8 per-tensor and per-channel,
    uint8) once and CONV_2D, DEPTHWISE_CONV_2D and TRANSPOSE_CONV twice: measured against the
    oracle on accumulators where the two differ (tests/test_kernels_conv_quant.py keeps that
    measurement).
    """
    x = np.int64(acc)
    m = np.int64(mult)
    sh = np.int64(shift)
    if single:
        total = np.int64(31) - sh
        v = (x * m + (np.int64(1) << (total - 1))) >> total
    else:
        left = sh if sh > 0 else np.int64(0)
        right = -sh if sh < 0 else np.int64(0)
        x = np.int64(np.int32(x << left))  # C++ int32 wrap of x * 2^left
        ab = x * m
        s = ab + (np.int64(1 << 30) if ab >= 0 else np.int64(1 - (1 << 30)))
        q = (s + ((s >> 63) & np.int64(0x7FFFFFFF))) >> 31  # division by 2^31 toward zero
        mask = (np.int64(1) << right) - 1
        threshold = (mask >> 1) + (np.int64(1) if q < 0 else np.int64(0))
        v = (q >> right) + (np.int64(1) if (q & mask) > threshold else np.int64(0))
    v = np.int64(np.int32(v)) + out_zp
    v = lo if v < lo else v
    return hi if v > hi else v


def quant_params_problem(ctx: OpContext, positions: tuple[int, ...]) -> str | None:
    """None when every given tensor (absent ones skipped) and output 0 carry quantization parameters."""
    for i in positions:
        t = ctx.inputs[i] if i < len(ctx.inputs) else None
        if t is None:
            continue
        q = t.quantization
        if q is None or not q.scales or any(s <= 0 or not np.isfinite(s) for s in q.scales):
            return f"tensor {t.name!r} has no usable quantization scale"
    q = ctx.outputs[0].quantization
    if q is None or not q.scales or q.scales[0] <= 0:
        return f"output {ctx.outputs[0].name!r} has no usable quantization scale"
    return None


def quant_conv_types(ctx: OpContext, x_pos: int, w_pos: int, b_pos: int | None, channel_axis: int) -> str | None:
    """Dtype and quantization checks shared by the quantized conv-family kernels."""
    x, w = ctx.inputs[x_pos], ctx.inputs[w_pos]
    b = ctx.inputs[b_pos] if b_pos is not None and b_pos < len(ctx.inputs) else None
    out = ctx.outputs[0]
    if x.dtype not in Q8:
        return f"{x.dtype} input not supported (int8/uint8 kernel)"
    if out.dtype != x.dtype:
        return f"{x.dtype} input with {out.dtype} output not supported"
    if w.dtype != x.dtype:
        return f"{w.dtype} weights with {x.dtype} input not supported"
    if not w.is_constant:
        return "weights must be constant"
    if b is not None and (b.dtype != I32 or not b.is_constant):
        return f"{b.dtype} {'constant ' if b.is_constant else 'non-constant '}bias not supported (int32 constant)"
    reason = quant_params_problem(ctx, (x_pos, w_pos))
    if reason:
        return reason
    q = w.quantization
    n_out = w.shape[channel_axis]
    if q.per_channel:
        if len(q.scales) != n_out or q.quantized_dimension != channel_axis:
            return f"per-channel weights must have {n_out} scales along axis {channel_axis}"
        if x.dtype == np.uint8:
            return "per-channel uint8 weights not supported"
    if w.sparsity is not None:
        return "sparse weights not supported"
    return None


def _filter_offset(ctx: OpContext, w_pos: int, allow_int8_zp: bool) -> int | str:
    """-zp_w as the kernel applies it, or a reason when the zero point cannot be honoured."""
    w = ctx.inputs[w_pos]
    zps = w.quantization.zero_points or (0,)
    if w.dtype == np.uint8 or allow_int8_zp:
        return -int(zps[0])
    if any(z != 0 for z in zps):
        return "int8 weights with a nonzero zero point not supported"
    return 0


def _filter_offset_problem(ctx: OpContext, w_pos: int, allow_int8_zp: bool) -> str | None:
    w_off = _filter_offset(ctx, w_pos, allow_int8_zp)
    return w_off if isinstance(w_off, str) else None


def _requant_arrays(ctx: OpContext, x_pos: int, w_pos: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-output-channel (multiplier, shift) int32 arrays, as PopulateConvolutionQuantizationParams.

    effective scale = double(input scale) * double(filter scale) / double(output scale).
    """
    s_in = float(ctx.inputs[x_pos].quantization.scales[0])
    s_out = float(ctx.outputs[0].quantization.scales[0])
    w_scales = ctx.inputs[w_pos].quantization.scales
    if len(w_scales) == 1:
        w_scales = w_scales * n_out
    return quantize_multiplier_array([s_in * float(s) / s_out for s in w_scales])


def quantized_out_range(ctx: OpContext) -> tuple[int, int, int]:
    """(zp_out, act_min, act_max) of output 0 with the op's fused activation."""
    out = ctx.outputs[0]
    q = out.quantization
    zp = int(q.zero_points[0]) if q.zero_points else 0
    lo, hi = activation_range_quantized(option(ctx, "fused_activation_function", "NONE"), q.scales[0], zp, out.dtype)
    return zp, lo, hi


def _in_offset(ctx: OpContext, x_pos: int) -> int:
    q = ctx.inputs[x_pos].quantization
    return -(int(q.zero_points[0]) if q.zero_points else 0)


def _bias_eff(bias: np.ndarray | None, wsum: np.ndarray, k: int, in_off: int, w_off: int) -> np.ndarray:
    """bias + in_off*sum(w) + K*in_off*w_off per output channel, wrapped to int32 as C++ sums wrap."""
    b = np.zeros(wsum.shape[0], np.int64) if bias is None else np.asarray(bias, np.int64).ravel()
    return (b + in_off * wsum + k * in_off * w_off).astype(np.int32)


def _int32_or_zeros(bias: np.ndarray | None, n: int) -> np.ndarray:
    return np.zeros(n, np.int32) if bias is None else bias


def _i32_scratch(scratch: np.ndarray, count: int, offset_bytes: int = 0) -> np.ndarray:
    return scratch[offset_bytes : offset_bytes + count * 4].view(np.int32)


@njit(nogil=True, cache=True)
def _qdot_rows(src, w2, bias_eff, w_off, out_rows, p0, mult, shift, out_zp, lo, hi, single, accs):
    """out_rows[p0 + r, o] = requantize(dot(src[r], w2[o]) + bias_eff[o] + w_off * sum(src[r])).

    accs: int32 scratch of one row's outputs; the dots and the requantization run as separate
    loops because LLVM vectorizes neither when they share one.
    """
    k_len = src.shape[1]
    n_o = w2.shape[0]
    for r in range(src.shape[0]):
        row = src[r]
        extra = np.int32(0)
        if w_off != 0:
            s = 0
            for k in range(k_len):
                s += np.int32(row[k])
            extra = np.int32(w_off * s)
        for o in range(n_o):
            wo = w2[o]
            acc = np.int32(0)
            for k in range(k_len):
                acc += np.int32(row[k]) * np.int32(wo[k])
            accs[o] = acc
        dst = out_rows[p0 + r]
        for o in range(n_o):
            dst[o] = requantize(np.int32(accs[o] + bias_eff[o] + extra), mult[o], shift[o], out_zp, lo, hi, single)


@njit(nogil=True, cache=True)
def _qconv_im2col(inp, col, w2, bias_eff, w_off, out_rows, mult, shift, out_zp, lo, hi,
                  oh, ow, kh, kw, sh, sw, dh, dw, pt, pl, fill, accs):
    # col: [tile rows, K] scratch of the input dtype; padding taps hold zp_in (x + in_off == 0).
    h, wd, c = inp.shape[1], inp.shape[2], inp.shape[3]
    plane = oh * ow
    total = inp.shape[0] * plane
    rows = col.shape[0]
    for r0 in range(0, total, rows):
        n_rows = min(rows, total - r0)
        for r in range(n_rows):
            p = r0 + r
            n = p // plane
            rem = p - n * plane
            oy = rem // ow
            ox = rem - oy * ow
            iy0 = oy * sh - pt
            ix0 = ox * sw - pl
            dst = col[r]
            k = 0
            for ky in range(kh):
                iy = iy0 + ky * dh
                for kx in range(kw):
                    ix = ix0 + kx * dw
                    if iy >= 0 and iy < h and ix >= 0 and ix < wd:
                        src = inp[n, iy, ix]
                        for ci in range(c):
                            dst[k + ci] = src[ci]
                    else:
                        for ci in range(c):
                            dst[k + ci] = fill
                    k += c
        _qdot_rows(col[:n_rows], w2, bias_eff, w_off, out_rows, r0, mult, shift, out_zp, lo, hi, False, accs)


@njit(nogil=True, cache=True, fastmath=True)
def _qconv_gemm(inp, tile, w2, wtail, w_off, bias, chunks, tail_chunks, acc, out_rows, mult, shift, out_zp, lo, hi,
                oh, ow, kh, kw, sh, sw, dh, dw, pt, pl, in_off):
    # tile: float32 [rows, Kp] scratch, rows a multiple of qgemm.MR, holding x + in_off (0.0 at
    # padding taps and in columns K..Kp); wtail: [O, Kp - K_main] scratch, the filter's last
    # columns zero-padded; qgemm.gemm_block's float sums are exact (see qgemm); acc: int32 [MR, O].
    # fastmath here too: numba compiles gemm_block inside this function with this function's
    # flags, and without them LLVM may not vectorize its float reductions. The only other float
    # operation is the exact int -> float32 conversion of the tile.
    h, wd, c = inp.shape[1], inp.shape[2], inp.shape[3]
    plane = oh * ow
    total = inp.shape[0] * plane
    rows, kp = tile.shape
    n_o, k_len = w2.shape
    k_main = chunks[chunks.shape[0] - 1]
    for r in range(rows):
        for k in range(k_len, kp):
            tile[r, k] = np.float32(0.0)
    for o in range(n_o):
        for j in range(wtail.shape[1]):
            wtail[o, j] = w2[o, k_main + j] if k_main + j < k_len else 0
    for r0 in range(0, total, rows):
        n_rows = min(rows, total - r0)
        for r in range(n_rows):
            p = r0 + r
            n = p // plane
            rem = p - n * plane
            oy = rem // ow
            ox = rem - oy * ow
            iy0 = oy * sh - pt
            ix0 = ox * sw - pl
            dst = tile[r]
            k = 0
            for ky in range(kh):
                iy = iy0 + ky * dh
                for kx in range(kw):
                    ix = ix0 + kx * dw
                    if iy >= 0 and iy < h and ix >= 0 and ix < wd:
                        src = inp[n, iy, ix]
                        for ci in range(c):
                            dst[k + ci] = np.float32(np.int32(src[ci]) + in_off)
                    else:
                        for ci in range(c):
                            dst[k + ci] = np.float32(0.0)
                    k += c
        # rows past n_rows in the last block are read (not stored): keep them finite
        for r in range(n_rows, min(rows, (n_rows + QGEMM_MR - 1) // QGEMM_MR * QGEMM_MR)):
            for k in range(kp):
                tile[r, k] = np.float32(0.0)
        for b0 in range(0, n_rows, QGEMM_MR):
            if k_main > 0:
                gemm_block(tile, b0, w2, 0, w_off, chunks, acc, False)
            if kp > k_main:
                gemm_block(tile, b0, wtail, k_main, w_off, tail_chunks, acc, k_main > 0)
            for i in range(min(QGEMM_MR, n_rows - b0)):
                dst = out_rows[r0 + b0 + i]
                ai = acc[i]
                for o in range(n_o):
                    dst[o] = requantize(np.int32(ai[o] + bias[o]), mult[o], shift[o], out_zp, lo, hi, False)


@njit(nogil=True, cache=True, parallel=True)
def _qconv_outer(inp, w, wt, bias, out, acc, mult, shift, in_off, w_off, out_zp, lo, hi,
                 sh, sw, dh, dw, pt, pl):
    # Vectorized over output channels: wt (scratch, [KH*KW*C, O] int16) is w + w_off repacked
    # on each call, cheap next to the P*K*O multiply-adds this path is chosen for. Four input
    # channels per pass over the accumulator row quarter its loads and stores, and int16 weights
    # let LLVM multiply with pmaddwd. prange over output rows (scalar indexing only, so numba
    # marks the arrays noalias; see _depthwise); acc has a row per numba thread.
    n_o, kh, kw, c = w.shape
    for ky in range(kh):
        for kx in range(kw):
            for ci in range(c):
                for o in range(n_o):
                    wt[(ky * kw + kx) * c + ci, o] = np.int16(np.int32(w[o, ky, kx, ci]) + w_off)
    n_b, h, wd = inp.shape[0], inp.shape[1], inp.shape[2]
    oh, ow = out.shape[1], out.shape[2]
    for n in range(n_b):
        for oy in prange(oh):
            t = get_thread_id()
            iy0 = oy * sh - pt
            ky0, ky1 = max(0, (dh - 1 - iy0) // dh), min(kh, (h - iy0 + dh - 1) // dh)
            for ox in range(ow):
                ix0 = ox * sw - pl
                kx0, kx1 = max(0, (dw - 1 - ix0) // dw), min(kw, (wd - ix0 + dw - 1) // dw)
                for o in range(n_o):
                    acc[t, o] = bias[o]
                for ky in range(ky0, ky1):
                    iy = iy0 + ky * dh
                    for kx in range(kx0, kx1):
                        ix = ix0 + kx * dw
                        k = (ky * kw + kx) * c
                        ci = 0
                        while ci + 4 <= c:
                            x0 = np.int32(inp[n, iy, ix, ci]) + in_off
                            x1 = np.int32(inp[n, iy, ix, ci + 1]) + in_off
                            x2 = np.int32(inp[n, iy, ix, ci + 2]) + in_off
                            x3 = np.int32(inp[n, iy, ix, ci + 3]) + in_off
                            kk = k + ci
                            for o in range(n_o):
                                acc[t, o] += (x0 * np.int32(wt[kk, o]) + x1 * np.int32(wt[kk + 1, o])
                                              + x2 * np.int32(wt[kk + 2, o]) + x3 * np.int32(wt[kk + 3, o]))
                            ci += 4
                        rem = c - ci
                        kk = k + ci
                        if rem == 3:
                            x0 = np.int32(inp[n, iy, ix, ci]) + in_off
                            x1 = np.int32(inp[n, iy, ix, ci + 1]) + in_off
                            x2 = np.int32(inp[n, iy, ix, ci + 2]) + in_off
                            for o in range(n_o):
                                acc[t, o] += (x0 * np.int32(wt[kk, o]) + x1 * np.int32(wt[kk + 1, o])
                                              + x2 * np.int32(wt[kk + 2, o]))
                        elif rem == 2:
                            x0 = np.int32(inp[n, iy, ix, ci]) + in_off
                            x1 = np.int32(inp[n, iy, ix, ci + 1]) + in_off
                            for o in range(n_o):
                                acc[t, o] += x0 * np.int32(wt[kk, o]) + x1 * np.int32(wt[kk + 1, o])
                        elif rem == 1:
                            x0 = np.int32(inp[n, iy, ix, ci]) + in_off
                            for o in range(n_o):
                                acc[t, o] += x0 * np.int32(wt[kk, o])
                for o in range(n_o):
                    out[n, oy, ox, o] = requantize(np.int64(acc[t, o]), mult[o], shift[o], out_zp, lo, hi, False)


def _qconv_ungrouped(ctx: OpContext) -> str | None:
    c, w = ctx.inputs[0].shape[3], ctx.inputs[1].shape
    if c != w[3]:
        return f"grouped quantized conv not supported (filter depth {w[3]}, input depth {c})"
    return None


def _qconv_supports(ctx: OpContext) -> str | None:
    return (version_ok(ctx) or _four_d(ctx, 0) or quant_conv_types(ctx, 0, 1, 2, 0)
            or _filter_offset_problem(ctx, 1, allow_int8_zp=False) or fused_activation_problem(ctx)
            or _qconv_ungrouped(ctx) or _conv_output_problem(ctx, ctx.inputs[1].shape[0]))


def _qconv_path(ctx: OpContext) -> str:
    n_o, kh, kw, c = ctx.inputs[1].shape
    # outer repacks its weights and starts a parallel loop on every call: a loss for one output
    # pixel (streaming wake-word models: 2.7 µs against 0.3 µs for a row dot product).
    pixels = ctx.outputs[0].size // max(1, ctx.outputs[0].shape[-1])
    if kh * kw * c < OUTER_MAX_K and n_o >= OUTER_MIN_O and pixels > 1:
        return "outer"
    if kh * kw * c >= QGEMM_MIN_K and _qgemm_rows(ctx) >= QGEMM_MR:
        return "gemm"
    p = _conv_params(ctx)
    if kh == 1 and kw == 1 and p["sh"] == 1 and p["sw"] == 1:
        return "rows"
    return "im2col"


def _qim2col_rows(ctx: OpContext) -> tuple[int, int]:
    _, kh, kw, c = ctx.inputs[1].shape
    k = kh * kw * c
    total = ctx.outputs[0].size // ctx.outputs[0].shape[3]
    return max(1, min(total, max(16, QIM2COL_TILE_BYTES // max(1, k)))), k


def _qgemm_rows(ctx: OpContext) -> int:
    """Rows of the float32 GEMM tile (a multiple of qgemm.MR, 0 when too few fit).

    The float path's scratch (int32 [MR, O] accumulators + float32 [rows, K] tile) is held within
    the int8 im2col path's (int32 [O] + int8 [rows, K]), so choosing it never grows the arena.
    """
    n_o = ctx.inputs[1].shape[0]
    rows, k = _qim2col_rows(ctx)
    room = n_o * 4 + rows * k - QGEMM_MR * n_o * 4 - n_o * QGEMM_KV
    return max(0, room // (4 * _qgemm_kp(k))) // QGEMM_MR * QGEMM_MR


def _qgemm_kp(k: int) -> int:
    """Width of the float GEMM tile: K rounded up to a multiple of qgemm.KV."""
    return -(-k // QGEMM_KV) * QGEMM_KV


def _outer_acc_offset(k: int, n_o: int) -> int:
    """Byte offset of the outer path's accumulators in scratch: after the int16 weights, 64-aligned."""
    return (k * n_o * 2 + 63) // 64 * 64


def _qconv_scratch(ctx: OpContext) -> int:
    n_o, kh, kw, c = ctx.inputs[1].shape
    path = _qconv_path(ctx)
    if path == "outer":
        # int16 repacked weights, then an int32 accumulator row per numba thread (prange)
        return _outer_acc_offset(kh * kw * c, n_o) + numba.config.NUMBA_NUM_THREADS * n_o * 4
    if path == "gemm":
        return QGEMM_MR * n_o * 4 + _qgemm_rows(ctx) * _qgemm_kp(kh * kw * c) * 4 + n_o * QGEMM_KV
    rows, k = _qim2col_rows(ctx)
    # int32 row accumulators, then the im2col tile ("rows" falls back to it for a non-row-major input)
    return n_o * 4 + rows * k


def _qconv_bind(ctx: OpContext, ins: list, outs: list, scratch: np.ndarray | None) -> Step:
    inp, w = ins[0], ins[1]
    bias = _optional(ins, 2)
    out = outs[0]
    p = _conv_params(ctx)
    n_o, kh, kw, c = w.shape
    in_off = _in_offset(ctx, 0)
    w_off = _filter_offset(ctx, 1, allow_int8_zp=False)
    mult, shift = _requant_arrays(ctx, 0, 1, n_o)
    out_zp, lo, hi = quantized_out_range(ctx)
    path = _qconv_path(ctx)
    if path == "outer":
        k = kh * kw * c
        wt = scratch[: k * n_o * 2].view(np.int16).reshape(k, n_o)
        off = _outer_acc_offset(k, n_o)
        acc = scratch[off : off + numba.config.NUMBA_NUM_THREADS * n_o * 4].view(np.int32).reshape(-1, n_o)
        return _qconv_outer, (inp, w, wt, _int32_or_zeros(bias, n_o), out, acc, mult, shift,
                              in_off, w_off, out_zp, lo, hi, p["sh"], p["sw"], p["dh"], p["dw"], p["pt"], p["pl"])
    k = kh * kw * c
    w2 = np.reshape(w, (n_o, k), copy=False)
    out_rows = rows_view(out)
    if out_rows is None:
        raise ValueError(f"CONV_2D output view {out.shape} / strides {out.strides} cannot be seen as rows")
    if path == "gemm":
        rows, kp = _qgemm_rows(ctx), _qgemm_kp(k)
        acc = scratch[: QGEMM_MR * n_o * 4].view(np.int32).reshape(QGEMM_MR, n_o)
        off = QGEMM_MR * n_o * 4
        tile = scratch[off : off + rows * kp * 4].view(np.float32).reshape(rows, kp)
        off += rows * kp * 4
        chunks = k_chunks(w2, w_off, operand_max(inp.dtype, in_off))
        tail_chunks = np.array([chunks[-1], kp], np.int64)
        wtail = scratch[off : off + n_o * (kp - chunks[-1])].view(w.dtype).reshape(n_o, kp - chunks[-1])
        return _qconv_gemm, (inp, tile, w2, wtail, w_off, _int32_or_zeros(bias, n_o), chunks, tail_chunks, acc,
                             out_rows, mult, shift, out_zp, lo, hi, p["oh"], p["ow"], kh, kw, p["sh"], p["sw"],
                             p["dh"], p["dw"], p["pt"], p["pl"], in_off)
    wsum = np.asarray(w2, np.int64).sum(axis=1)
    bias_eff = _bias_eff(bias, wsum, k, in_off, w_off)
    accs = _i32_scratch(scratch, n_o)
    in_rows = rows_view(inp) if path == "rows" else None
    if in_rows is not None and in_rows.shape[1] == k:
        return _qdot_rows, (in_rows, w2, bias_eff, w_off, out_rows, 0, mult, shift, out_zp, lo, hi, False, accs)
    rows, _ = _qim2col_rows(ctx)
    col = scratch[n_o * 4 : n_o * 4 + rows * k].view(inp.dtype).reshape(rows, k)
    fill = inp.dtype.type(-in_off)
    return _qconv_im2col, (inp, col, w2, bias_eff, w_off, out_rows, mult, shift, out_zp, lo, hi,
                           p["oh"], p["ow"], kh, kw, p["sh"], p["sw"], p["dh"], p["dw"], p["pt"], p["pl"], fill, accs)


# ------------------------------------------------ quantized DEPTHWISE_CONV_2D


@njit(nogil=True, cache=True)
def _qdepthwise(inp, w, bias, out, acc, mult, shift, in_off, w_off, out_zp, lo, hi,
                sh, sw, dh, dw, pt, pl, dmult):
    n_b, h, wd, c = inp.shape
    kh, kw = w.shape[1], w.shape[2]
    oh, ow, oc = out.shape[1], out.shape[2], out.shape[3]
    for n in range(n_b):
        for oy in range(oh):
            iy0 = oy * sh - pt
            ky0, ky1 = max(0, (dh - 1 - iy0) // dh), min(kh, (h - iy0 + dh - 1) // dh)
            for ox in range(ow):
                ix0 = ox * sw - pl
                kx0, kx1 = max(0, (dw - 1 - ix0) // dw), min(kw, (wd - ix0 + dw - 1) // dw)
                for o in range(oc):
                    acc[o] = bias[o]
                for ky in range(ky0, ky1):
                    iy = iy0 + ky * dh
                    for kx in range(kx0, kx1):
                        src = inp[n, iy, ix0 + kx * dw]
                        wv = w[0, ky, kx]
                        if dmult == 1:
                            for ci in range(c):
                                acc[ci] += (np.int32(src[ci]) + in_off) * (np.int32(wv[ci]) + w_off)
                        else:
                            for ci in range(c):
                                v = np.int32(src[ci]) + in_off
                                base = ci * dmult
                                for m in range(dmult):
                                    acc[base + m] += v * (np.int32(wv[base + m]) + w_off)
                dst = out[n, oy, ox]
                for o in range(oc):
                    dst[o] = requantize(np.int64(acc[o]), mult[o], shift[o], out_zp, lo, hi, False)


def _qdw_supports(ctx: OpContext) -> str | None:
    return (version_ok(ctx) or _four_d(ctx, 0) or quant_conv_types(ctx, 0, 1, 2, 3)
            or _filter_offset_problem(ctx, 1, allow_int8_zp=False) or fused_activation_problem(ctx)
            or _dw_geometry_problem(ctx))


def _qdw_scratch(ctx: OpContext) -> int:
    return ctx.outputs[0].shape[3] * 4


def _qdw_bind(ctx: OpContext, ins: list, outs: list, scratch: np.ndarray | None) -> Step:
    inp, w = ins[0], ins[1]
    bias = _optional(ins, 2)
    out = outs[0]
    p = _conv_params(ctx)
    oc = w.shape[3]
    mult, shift = _requant_arrays(ctx, 0, 1, oc)
    out_zp, lo, hi = quantized_out_range(ctx)
    return _qdepthwise, (
        inp, w, _int32_or_zeros(bias, oc), out, _i32_scratch(scratch, oc), mult, shift,
        _in_offset(ctx, 0), _filter_offset(ctx, 1, allow_int8_zp=False), out_zp, lo, hi,
        p["sh"], p["sw"], p["dh"], p["dw"], p["pt"], p["pl"], oc // inp.shape[3],
    )


# ------------------------------------------------ quantized TRANSPOSE_CONV


@njit(nogil=True, cache=True)
def _qtransposeconv(inp, w, wsum_tap, bias, out, acc, mult, shift, in_off, w_off, out_zp, lo, hi,
                    sh, sw, pt, pl):
    # The reference's scatter: every input pixel adds (x + in_off) * (w + w_off) into the int32
    # accumulator of each output pixel its taps reach; the inner dot runs over contiguous input
    # channels, with the offsets folded in per tap (wsum_tap) and per pixel (sum of x).
    n_b, h, wd, c = inp.shape
    n_o, kh, kw = w.shape[0], w.shape[1], w.shape[2]
    oh, ow = out.shape[1], out.shape[2]
    for n in range(n_b):
        for i in range(acc.shape[0]):
            acc[i] = 0
        for iy in range(h):
            for ix in range(wd):
                src = inp[n, iy, ix]
                xsum = 0  # raw sum of x: w_off * xsum + in_off * wsum_tap completes the offset terms
                if w_off != 0:
                    for ci in range(c):
                        xsum += np.int32(src[ci])
                for ky in range(kh):
                    oy = iy * sh - pt + ky
                    if oy < 0 or oy >= oh:
                        continue
                    for kx in range(kw):
                        ox = ix * sw - pl + kx
                        if ox < 0 or ox >= ow:
                            continue
                        base = (oy * ow + ox) * n_o
                        for o in range(n_o):
                            wv = w[o, ky, kx]
                            d = np.int32(0)
                            for ci in range(c):
                                d += np.int32(src[ci]) * np.int32(wv[ci])
                            acc[base + o] += wrap32(d + in_off * wsum_tap[o, ky, kx] + w_off * xsum)
        for oy in range(oh):
            for ox in range(ow):
                dst = out[n, oy, ox]
                base = (oy * ow + ox) * n_o
                for o in range(n_o):
                    dst[o] = requantize(wrap32(np.int64(acc[base + o]) + bias[o]), mult[o], shift[o], out_zp, lo, hi, False)


def _qtc_supports(ctx: OpContext) -> str | None:
    return (version_ok(ctx) or _tc_constant_shape(ctx) or _four_d(ctx, 2) or quant_conv_types(ctx, 2, 1, 3, 0)
            or _filter_offset_problem(ctx, 1, allow_int8_zp=False) or _tc_geometry_problem(ctx)
            or fused_activation_problem(ctx))


def _qtc_scratch(ctx: OpContext) -> int:
    out = ctx.outputs[0]
    return out.shape[1] * out.shape[2] * out.shape[3] * 4


def _qtc_bind(ctx: OpContext, ins: list, outs: list, scratch: np.ndarray | None) -> Step:
    w, inp = ins[1], ins[2]
    bias = _optional(ins, 3)
    out = outs[0]
    sh, sw, pt, pl = _tc_params(ctx)
    n_o = w.shape[0]
    mult, shift = _requant_arrays(ctx, 2, 1, n_o)
    out_zp, lo, hi = quantized_out_range(ctx)
    w_off = _filter_offset(ctx, 1, allow_int8_zp=False)
    # per (o, ky, kx): sum over input channels of (w + w_off), the factor of in_off in each tap's dot
    wsum_tap = (np.asarray(w, np.int64).sum(axis=3) + w.shape[3] * w_off).astype(np.int32)
    acc = _i32_scratch(scratch, out.shape[1] * out.shape[2] * n_o)
    return _qtransposeconv, (inp, w, wsum_tap, _int32_or_zeros(bias, n_o), out, acc, mult, shift,
                             _in_offset(ctx, 2), w_off, out_zp, lo, hi, sh, sw, pt, pl)


# ------------------------------------------------ quantized FULLY_CONNECTED


def _qfc_supports(ctx: OpContext) -> str | None:
    return (version_ok(ctx) or _fc_weights_format(ctx) or _fc_weights_2d(ctx) or quant_conv_types(ctx, 0, 1, 2, 0)
            or _filter_offset_problem(ctx, 1, allow_int8_zp=not ctx.inputs[1].quantization.per_channel)
            or fused_activation_problem(ctx) or _fc_shape_problem(ctx))


def _qfc_scratch(ctx: OpContext) -> int:
    return ctx.inputs[1].shape[0] * 4


def _qfc_bind(ctx: OpContext, ins: list, outs: list, scratch: np.ndarray | None) -> Step:
    inp, w = ins[0], ins[1]
    bias = _optional(ins, 2)
    o, i = w.shape
    in_off = _in_offset(ctx, 0)
    w_off = _filter_offset(ctx, 1, allow_int8_zp=not ctx.inputs[1].quantization.per_channel)
    mult, shift = _requant_arrays(ctx, 0, 1, o)
    out_zp, lo, hi = quantized_out_range(ctx)
    x, y = _rows_of(inp, i), _rows_of(outs[0], o)
    if x is None or y is None or w.strides[-1] != w.itemsize:
        raise ValueError("FULLY_CONNECTED operands cannot be viewed as matrices without a copy")
    bias_eff = _bias_eff(bias, np.asarray(w, np.int64).sum(axis=1), i, in_off, w_off)
    return _qdot_rows, (x, w, bias_eff, w_off, y, 0, mult, shift, out_zp, lo, hi, True, _i32_scratch(scratch, o))


# ---------------------------------------------------------------- registration


def register(registry: KernelRegistry) -> None:
    """Add the float32 conv-family kernels, then their int8/uint8 counterparts."""
    registry.add(KernelEntry("CONV_2D", _conv_supports, _conv_bind, _conv_scratch, strided_output=True))
    registry.add(KernelEntry("DEPTHWISE_CONV_2D", _dw_supports, _dw_bind, strided_output=True))
    registry.add(KernelEntry("TRANSPOSE_CONV", _tc_supports, _tc_bind, _tc_scratch, strided_output=True))
    registry.add(KernelEntry("FULLY_CONNECTED", _fc_supports, _fc_bind, strided_output=True))
    registry.add(KernelEntry("BATCH_MATMUL", _bmm_supports, _bmm_bind, strided_output=True))
    registry.add(KernelEntry("CONV_2D", _qconv_supports, _qconv_bind, _qconv_scratch, strided_output=True))
    registry.add(KernelEntry("DEPTHWISE_CONV_2D", _qdw_supports, _qdw_bind, _qdw_scratch, strided_output=True))
    registry.add(KernelEntry("TRANSPOSE_CONV", _qtc_supports, _qtc_bind, _qtc_scratch, strided_output=True))
    registry.add(KernelEntry("FULLY_CONNECTED", _qfc_supports, _qfc_bind, _qfc_scratch, strided_output=True))
