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

Quantized entries (issue #5) go beside the float ones in `register`, each with its own supports().
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from numba import njit

from edgert.kernels.activations import activation_code, activation_range, activation_supported, clamp_code
from edgert.kernels.registry import KernelEntry, KernelRegistry, OpContext, Step

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


def version_ok(ctx: OpContext) -> str | None:
    top = MAX_VERSION.get(ctx.op.opcode)
    if top is not None and not 1 <= ctx.op.version <= top:
        return f"version {ctx.op.version} not supported (1..{top})"
    return None


def option(ctx: OpContext, name: str, default):
    value = getattr(ctx.op.options, name, None) if ctx.op.options is not None else None
    return default if value is None else value


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


@njit(cache=True)
def _bias_act_rows(rows, bias, has_bias, lo, hi):
    for r in range(rows.shape[0]):
        row = rows[r]
        for o in range(row.shape[0]):
            v = row[o]
            if has_bias:
                v += bias[o]
            row[o] = clamp(v, lo, hi)


@njit(cache=True)
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


@njit(cache=True)
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


@njit(cache=True)
def _depthwise(inp, w, bias, has_bias, out, acc, sh, sw, dh, dw, pt, pl, mult, lo, hi):
    # acc: scratch of out-channels floats, so the channel loop runs on contiguous memory.
    n_b, h, wd, c = inp.shape
    kh, kw = w.shape[1], w.shape[2]
    oh, ow, oc = out.shape[1], out.shape[2], out.shape[3]
    for n in range(n_b):
        for oy in range(oh):
            iy0 = oy * sh - pt
            # taps whose input row/column is inside the image (the rest read zero padding)
            ky0, ky1 = max(0, (dh - 1 - iy0) // dh), min(kh, (h - iy0 + dh - 1) // dh)
            for ox in range(ow):
                ix0 = ox * sw - pl
                kx0, kx1 = max(0, (dw - 1 - ix0) // dw), min(kw, (wd - ix0 + dw - 1) // dw)
                for o in range(oc):
                    acc[o] = np.float32(0.0)
                for ky in range(ky0, ky1):
                    iy = iy0 + ky * dh
                    for kx in range(kx0, kx1):
                        ix = ix0 + kx * dw
                        src = inp[n, iy, ix]
                        wv = w[0, ky, kx]
                        if mult == 1:
                            for ci in range(c):
                                acc[ci] += src[ci] * wv[ci]
                        else:
                            for ci in range(c):
                                v = src[ci]
                                base = ci * mult
                                for m in range(mult):
                                    acc[base + m] += v * wv[base + m]
                dst = out[n, oy, ox]
                for o in range(oc):
                    v = acc[o]
                    if has_bias:
                        v += bias[o]
                    dst[o] = clamp(v, lo, hi)


@njit(cache=True)
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


@njit(cache=True)
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


def _conv_supports(ctx: OpContext) -> str | None:
    reason = version_ok(ctx) or float_only(ctx, (0, 1, 2))
    if reason:
        return reason
    inp, w = ctx.inputs[0], ctx.inputs[1]
    out = ctx.outputs[0]
    if len(inp.shape) != 4 or len(w.shape) != 4 or len(out.shape) != 4:
        return "only 4-D input, filter and output"
    if w.sparsity is not None:
        return "sparse filter not supported"
    reason = activation_supported(option(ctx, "fused_activation_function", "NONE"))
    if reason:
        return reason
    if w.shape[3] == 0 or inp.shape[3] % w.shape[3] or w.shape[0] % (inp.shape[3] // w.shape[3]):
        return f"filter depth {w.shape[3]} does not divide input depth {inp.shape[3]} into groups"
    p = _conv_params(ctx)
    want = (inp.shape[0], p["oh"], p["ow"], w.shape[0])
    if tuple(out.shape) != want:
        return f"output shape {tuple(out.shape)} does not match computed {want}"
    return None


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
    bias = ins[2] if len(ins) > 2 and ins[2] is not None else None
    out = outs[0]
    p = _conv_params(ctx)
    code, lo, hi = fused_clamp(ctx)
    has_bias = bias is not None
    b = bias if has_bias else _no_bias()
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
    reason = version_ok(ctx) or float_only(ctx, (0, 1, 2))
    if reason:
        return reason
    inp, w, out = ctx.inputs[0], ctx.inputs[1], ctx.outputs[0]
    if len(inp.shape) != 4 or len(w.shape) != 4 or len(out.shape) != 4:
        return "only 4-D input, filter and output"
    if w.sparsity is not None:
        return "sparse filter not supported"
    reason = activation_supported(option(ctx, "fused_activation_function", "NONE"))
    if reason:
        return reason
    c, oc = inp.shape[3], w.shape[3]
    if w.shape[0] != 1 or c == 0 or oc % c:
        return f"filter shape {tuple(w.shape)} is not [1, KH, KW, {c}*multiplier]"
    p = _conv_params(ctx)
    want = (inp.shape[0], p["oh"], p["ow"], oc)
    if tuple(out.shape) != want:
        return f"output shape {tuple(out.shape)} does not match computed {want}"
    return None


def _dw_scratch(ctx: OpContext) -> int:
    return ctx.outputs[0].shape[3] * 4


def _dw_bind(ctx: OpContext, ins: list, outs: list, scratch: np.ndarray | None) -> Step:
    inp, w = ins[0], ins[1]
    bias = ins[2] if len(ins) > 2 and ins[2] is not None else None
    out = outs[0]
    p = _conv_params(ctx)
    # The multiplier follows from the shapes; the option is redundant and older converters left it 0.
    mult = w.shape[3] // inp.shape[3]
    acc = f32_scratch(scratch, out.shape[3])
    b = bias if bias is not None else _no_bias()
    return _depthwise, (
        inp, w, b, bias is not None, out, acc,
        p["sh"], p["sw"], p["dh"], p["dw"], p["pt"], p["pl"], mult, *fused_clamp(ctx)[1:],
    )


# ---------------------------------------------------------------- TRANSPOSE_CONV


def _tc_supports(ctx: OpContext) -> str | None:
    reason = version_ok(ctx) or float_only(ctx, (1, 2, 3))
    if reason:
        return reason
    shape_t, w, inp = ctx.inputs[0], ctx.inputs[1], ctx.inputs[2]
    out = ctx.outputs[0]
    if shape_t is None or not shape_t.is_constant:
        return "output_shape must be a constant"
    if len(inp.shape) != 4 or len(w.shape) != 4 or len(out.shape) != 4:
        return "only 4-D input, filter and output"
    if tuple(int(v) for v in np.asarray(shape_t.data).ravel()) != tuple(out.shape):
        return "output_shape tensor disagrees with the output tensor's shape"
    if w.shape[3] != inp.shape[3] or w.shape[0] != out.shape[3] or inp.shape[0] != out.shape[0]:
        return f"filter {tuple(w.shape)} does not match input {tuple(inp.shape)} / output {tuple(out.shape)}"
    reason = activation_supported(option(ctx, "fused_activation_function", "NONE"))
    if reason:
        return reason
    return None


def _tc_params(ctx: OpContext) -> tuple[int, int, int, int]:
    w, out = ctx.inputs[1], ctx.outputs[0]
    sh, sw = option(ctx, "stride_h", 1), option(ctx, "stride_w", 1)
    padding = option(ctx, "padding", "SAME")
    # TFLite pads as for a forward conv whose *input* is this op's output.
    _, pt = conv_geometry(padding, out.shape[1], w.shape[1], sh)
    _, pl = conv_geometry(padding, out.shape[2], w.shape[2], sw)
    return sh, sw, pt, pl


def _tc_scratch(ctx: OpContext) -> int:
    w, inp = ctx.inputs[1], ctx.inputs[2]
    return (inp.size // inp.shape[3]) * w.shape[0] * w.shape[1] * w.shape[2] * 4


def _tc_bind(ctx: OpContext, ins: list, outs: list, scratch: np.ndarray | None) -> Step:
    w, inp = ins[1], ins[2]
    bias = ins[3] if len(ins) > 3 and ins[3] is not None else None
    out = outs[0]
    sh, sw, pt, pl = _tc_params(ctx)
    o, kh, kw, i = w.shape
    x_rows = rows_view(inp)
    if not _gemm_ok(x_rows):
        raise ValueError("TRANSPOSE_CONV input view cannot be collapsed to GEMM rows")
    col = f32_scratch(scratch, x_rows.shape[0] * o * kh * kw).reshape(x_rows.shape[0], o * kh * kw)
    w_t = np.reshape(w, (o * kh * kw, i), copy=False).T
    b = bias if bias is not None else _no_bias()
    geom = (inp.shape[1], inp.shape[2], kh, kw, sh, sw, pt, pl, *fused_clamp(ctx)[1:])
    return _transpose_conv_gemm, (x_rows, w_t, col, b, bias is not None, out, geom)


# ---------------------------------------------------------------- FULLY_CONNECTED


def _fc_supports(ctx: OpContext) -> str | None:
    reason = version_ok(ctx) or float_only(ctx, (0, 1, 2))
    if reason:
        return reason
    inp, w, out = ctx.inputs[0], ctx.inputs[1], ctx.outputs[0]
    if option(ctx, "weights_format", "DEFAULT") != "DEFAULT":
        return f"weights_format {option(ctx, 'weights_format', '')} not supported"
    if w.sparsity is not None:
        return "sparse weights not supported"
    if len(w.shape) != 2:
        return "weights must be 2-D [O, I]"
    reason = activation_supported(option(ctx, "fused_activation_function", "NONE"))
    if reason:
        return reason
    o, i = w.shape
    if i == 0 or inp.size % i:
        return f"input size {inp.size} is not a multiple of weights depth {i}"
    if out.size != (inp.size // i) * o or (out.shape and out.shape[-1] != o):
        return f"output shape {tuple(out.shape)} does not match [{inp.size // i}, {o}]"
    return None


def _fc_bind(ctx: OpContext, ins: list, outs: list, scratch: np.ndarray | None) -> Step:
    inp, w = ins[0], ins[1]
    bias = ins[2] if len(ins) > 2 and ins[2] is not None else None
    out = outs[0]
    o, i = w.shape
    code, lo, hi = fused_clamp(ctx)
    has_bias = bias is not None
    b = bias if has_bias else _no_bias()
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


# ---------------------------------------------------------------- registration


def register(registry: KernelRegistry) -> None:
    """Add the float32 conv-family kernels."""
    registry.add(KernelEntry("CONV_2D", _conv_supports, _conv_bind, _conv_scratch, strided_output=True))
    registry.add(KernelEntry("DEPTHWISE_CONV_2D", _dw_supports, _dw_bind, _dw_scratch, strided_output=True))
    registry.add(KernelEntry("TRANSPOSE_CONV", _tc_supports, _tc_bind, _tc_scratch, strided_output=True))
    registry.add(KernelEntry("FULLY_CONNECTED", _fc_supports, _fc_bind, strided_output=True))
    registry.add(KernelEntry("BATCH_MATMUL", _bmm_supports, _bmm_bind, strided_output=True))
