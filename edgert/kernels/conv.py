"""Convolution-family float32 kernels: CONV_2D, DEPTHWISE_CONV_2D, TRANSPOSE_CONV, FULLY_CONNECTED, BATCH_MATMUL.

Which kernels use BLAS (numpy's OpenBLAS via `np.matmul(..., out=arena_view)`, no temporaries):
- CONV_2D 1x1 stride 1 when output rows are shorter than 8 pixels, the image has under 64 pixels or
  C > STACK_K: one GEMM on the [N*H*W, C] view of the input against the [O, C] view of the filter.
- TRANSPOSE_CONV: one GEMM input[N*H*W, I] x filter[O*KH*KW, I]^T into scratch ("columns"), then a
  numba gather pass (col2im) that sums the columns per output pixel and adds bias + activation.
- FULLY_CONNECTED with more than 4 rows (unless tiny) and BATCH_MATMUL: GEMM on views (1-4 rows: the
  vector matrix-vector kernel of matvec.py).
Every other groups=1 CONV_2D runs `_conv_simd`: a register-blocked direct conv (8 output pixels x
16 output channels held in vector registers, explicit vector IR through numba intrinsics), no
im2col, summing in the reference's (ky, kx, ci) order from 0 and then adding the bias, which is
TFLite's reference arithmetic (bit-equal with it per conv). DEPTHWISE_CONV_2D with multiplier
1 and channels a multiple of 8 runs `_depthwise_simd` the same way (vectors over channels).
Other numba loops: grouped CONV_2D, other DEPTHWISE_CONV_2D (inner loop over contiguous channels),
tiny FULLY_CONNECTED, and every bias + fused-activation pass. All accept a non-contiguous
(channel-sliced) output view.

Quantized (int8/uint8) entries sit beside the float ones in `register`, each with its own
supports(); their arithmetic is described at the "quantized" section below.
"""

from __future__ import annotations

from typing import Callable

import numba
import numpy as np
from llvmlite import ir
from numba import get_thread_id, njit, prange, types
from numba.extending import intrinsic

from edgert.kernels.activations import activation_code, activation_range, activation_supported, clamp_code
from edgert.kernels.fixedpoint import (
    activation_range_quantized,
    quantize_multiplier_array,
    requantize,
    wrap32,
)
from edgert.kernels.qgemm import KV as QGEMM_KV
from edgert.kernels.qgemm import MR as QGEMM_MR
from edgert.kernels.qgemm import SIMD_MAX_K as QSIMD_MAX_K
from edgert.kernels.qgemm import XBUF as QXBUF
from edgert.kernels.qdot import (
    BYTE_OFFSET,
    GEMV_MAX_K,
    dot_fits,
    dot_segments,
    qconv_dot,
    qgemv,
    use_dot_product,
)
from edgert.kernels.qgemm import _qsimd_taps, _qsimd_taps_rows, gemm_block, k_chunks, operand_max, simd_exact
from edgert.kernels.matvec import fc_matvec, matvec_ok
from edgert.kernels.registry import KernelEntry, KernelRegistry, OpContext, Step
from edgert.kernels.simd import (
    F32_IR,
    I8P_IR,
    VW,
    array_bytes,
    block_ptr,
    broadcast_mac,
    byte_ptr,
    mac_block,
    splat,
    stack_buf,
    stack_buf_dyn,
    strided,
    tap_load,
    vclamp,
    vcopy,
    vrequantize,
    vzero,
)
from edgert.model.graph import Tensor

F32 = np.dtype(np.float32)

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


# ---------------------------------------------------------------- explicit-SIMD conv (register-blocked)
#
# The accumulator-block technique and why it is written as vector IR: simd.py.

MR = 8  # output pixels per register block
# Filters with K = KH*KW*C up to this transpose their VW-channel block into a stack buffer (at
# most 80 KiB); larger ones into planned scratch, still far below an im2col tile.
STACK_K = 1280


@intrinsic
def _vmac(typingctx, acc, inp, xbyte, ix0, xstep, wd, colbytes, wt, wi, mr, checked):
    """acc[p*VW : (p+1)*VW] += x_p * wt.flat[wi : wi+VW] for p < mr (literal), where x_p is the float32
    at byte offset xbyte + (ix0 + p*xstep) * colbytes of inp's data; with checked (literal 1) an x_p
    whose column ix0 + p*xstep is outside [0, wd) counts as 0 and is not read.

    Multiply then add, each rounded (no fused multiply-add): the reference's arithmetic.
    """
    if not isinstance(mr, types.IntegerLiteral) or not isinstance(checked, types.IntegerLiteral):
        return None
    rows, check = mr.literal_value, bool(checked.literal_value)

    def codegen(context, builder, sig, args):
        acc_p, a_inp, xb, ix0_v, step_v, wd_v, col_v, a_wt, wi_v, _, _ = args
        vt = ir.VectorType(F32_IR, VW)
        x_arr = context.make_array(sig.args[1])(context, builder, a_inp)
        w_arr = context.make_array(sig.args[7])(context, builder, a_wt)
        wv = builder.load(block_ptr(builder, w_arr.data, wi_v, vt), align=4)
        base = builder.bitcast(x_arr.data, I8P_IR)
        for p in range(rows):
            x = tap_load(builder, base, xb, col_v, ix0_v, step_v, p, wd_v, check, F32_IR, ir.Constant(F32_IR, 0.0))
            broadcast_mac(builder, acc_p, p, x, wv, contract=False)
        return context.get_dummy_value()

    sig = types.none(acc, inp, types.int64, types.int64, types.int64, types.int64, types.int64, wt, types.int64,
                     mr, checked)
    return sig, codegen


@intrinsic
def _vout_rows(typingctx, acc, rows, out, obyte, ostep, bias, bi, lo, hi, add_bias, width):
    """For p < rows (literal): out bytes [obyte + p*ostep, +4*width) = clamp(acc[p*VW : p*VW+width]
    (+ bias.flat[bi : bi+width] when the literal add_bias is 1), lo, hi); the clamp keeps NaN.
    width (literal) is VW or 8 (the first half of a block)."""
    if not all(isinstance(v, types.IntegerLiteral) for v in (rows, add_bias, width)):
        return None
    n_rows, addb, wdt = rows.literal_value, bool(add_bias.literal_value), width.literal_value

    def codegen(context, builder, sig, args):
        acc_p, _, a_out, ob, ostep_v, a_b, bi_v, lo_v, hi_v = args[:9]
        vt = ir.VectorType(F32_IR, wdt)
        lov, hiv = splat(builder, lo_v, vt), splat(builder, hi_v, vt)
        if addb:
            b_arr = context.make_array(sig.args[5])(context, builder, a_b)
            bv = builder.load(block_ptr(builder, b_arr.data, bi_v, vt), align=4)
        base = array_bytes(context, builder, sig.args[2], a_out)
        for p in range(n_rows):
            v = builder.load(block_ptr(builder, acc_p, p * VW, vt), align=4)
            if addb:
                v = builder.fadd(v, bv)
            v = vclamp(builder, v, lov, hiv)
            builder.store(v, byte_ptr(builder, base, strided(builder, ob, ostep_v, p), vt), align=4)
        return context.get_dummy_value()

    sig = types.none(acc, rows, out, types.int64, types.int64, bias, types.int64, types.float32, types.float32,
                     add_bias, width)
    return sig, codegen


@njit(inline="always")
def _store_rows(acc_p, mr, out, ob, o_w, bias, o0, lo, hi, add_bias, width):
    # _vout_rows for the runtime mr (8, 4 or 1); add_bias and width are literal at every call site
    if mr == 8:
        _vout_rows(acc_p, 8, out, ob, o_w, bias, o0, lo, hi, add_bias, width)
    elif mr == 4:
        _vout_rows(acc_p, 4, out, ob, o_w, bias, o0, lo, hi, add_bias, width)
    else:
        _vout_rows(acc_p, 1, out, ob, o_w, bias, o0, lo, hi, add_bias, width)


@njit(inline="always")
def _store_block(acc_p, mr, out, ob, o_w, bias, o0, lo, hi, has_bias, width):
    # _vout_rows with its literal arguments picked from the runtime (mr, has_bias, width)
    if width == VW:
        if has_bias:
            _store_rows(acc_p, mr, out, ob, o_w, bias, o0, lo, hi, 1, 16)
        else:
            _store_rows(acc_p, mr, out, ob, o_w, bias, o0, lo, hi, 0, 16)
    elif has_bias:
        _store_rows(acc_p, mr, out, ob, o_w, bias, o0, lo, hi, 1, 8)
    else:
        _store_rows(acc_p, mr, out, ob, o_w, bias, o0, lo, hi, 0, 8)


@njit(nogil=True, cache=True)
def _conv_simd(inp, w2, bias, has_bias, out, wt, kh, kw, sh, sw, dh, dw, pt, pl, lo, hi):
    # w2: the filter as [O, KH*KW*C]; wt: scratch for one block of VW output channels, [K, VW].
    # Per output element the sum runs over (ky, kx, ci) in the reference's order from 0, then the
    # bias: the same float32 operations as TFLite's reference conv (padding taps are skipped there;
    # here they add 0 * w, which leaves the sum unchanged).
    n_b, h, wd, c = inp.shape
    n_o, k = w2.shape
    oh, ow = out.shape[1], out.shape[2]
    s_n, s_h, s_w, s_c = inp.strides
    o_n, o_h, o_w = out.strides[0], out.strides[1], out.strides[2]
    vec_out = out.strides[3] == 4 and (not has_bias or bias.strides[0] == 4)
    acc_p = stack_buf(128, np.float32)  # MR * VW
    if wt.shape[0] == 0:  # K <= STACK_K: the transposed filter block lives on the stack
        wt = numba.carray(stack_buf_dyn(k * VW, np.float32), (k * VW,))
    tmp_p = stack_buf(128, np.float32)
    tmp = numba.carray(tmp_p, (MR * VW,))
    for o0 in range(0, n_o, VW):
        nb = min(VW, n_o - o0)
        for kk in range(k):
            for j in range(VW):
                wt[kk * VW + j] = w2[o0 + j, kk] if j < nb else np.float32(0.0)
        for n in range(n_b):
            for oy in range(oh):
                iy0 = oy * sh - pt
                ky0, ky1 = max(0, (dh - 1 - iy0) // dh), min(kh, (h - iy0 + dh - 1) // dh)
                px = 0
                while px < ow:
                    left = ow - px
                    mr = 8 if left >= 8 else (4 if left >= 4 else 1)
                    vzero(acc_p, 128)
                    for ky in range(ky0, ky1):
                        rowb = n * s_n + (iy0 + ky * dh) * s_h
                        for kx in range(kw):
                            ix0 = px * sw - pl + kx * dw
                            inside = ix0 >= 0 and ix0 + (mr - 1) * sw < wd
                            wi = (ky * kw + kx) * c * VW
                            if mr == 8:
                                if inside:
                                    for ci in range(c):
                                        _vmac(acc_p, inp, rowb + ci * s_c, ix0, sw, wd, s_w, wt, wi + ci * VW, 8, 0)
                                else:
                                    for ci in range(c):
                                        _vmac(acc_p, inp, rowb + ci * s_c, ix0, sw, wd, s_w, wt, wi + ci * VW, 8, 1)
                            elif mr == 4:
                                if inside:
                                    for ci in range(c):
                                        _vmac(acc_p, inp, rowb + ci * s_c, ix0, sw, wd, s_w, wt, wi + ci * VW, 4, 0)
                                else:
                                    for ci in range(c):
                                        _vmac(acc_p, inp, rowb + ci * s_c, ix0, sw, wd, s_w, wt, wi + ci * VW, 4, 1)
                            elif inside:
                                for ci in range(c):
                                    _vmac(acc_p, inp, rowb + ci * s_c, ix0, sw, wd, s_w, wt, wi + ci * VW, 1, 0)
                    if (nb == VW or nb == 8) and vec_out:
                        ob = n * o_n + oy * o_h + px * o_w + o0 * 4
                        _store_block(acc_p, mr, out, ob, o_w, bias, o0, lo, hi, has_bias, nb)
                        px += mr
                        continue
                    vcopy(acc_p, tmp_p, 128)
                    for p in range(mr):
                        for j in range(nb):
                            v = tmp[p * VW + j]
                            if has_bias:
                                v += bias[o0 + j]
                            out[n, oy, px + p, o0 + j] = clamp(v, lo, hi)
                    px += mr


@intrinsic
def _vdw(typingctx, acc, inp, xbyte, ix0, xstep, wd, colbytes, w, wi, mr, checked, width):
    """Depthwise taps: acc[p*VW : p*VW+width] += x_p * w.flat[wi : wi+width] for p < mr, where
    x_p is the <width x float> at byte offset xbyte + (ix0 + p*xstep) * colbytes of inp's data (the
    channel block of one input pixel); with checked, a column outside [0, wd) gives 0, unread."""
    if not all(isinstance(v, types.IntegerLiteral) for v in (mr, checked, width)):
        return None
    rows, check, wdt = mr.literal_value, bool(checked.literal_value), width.literal_value

    def codegen(context, builder, sig, args):
        acc_p, a_inp, xb, ix0_v, step_v, wd_v, col_v, a_w, wi_v = args[:9]
        vt = ir.VectorType(F32_IR, wdt)
        x_arr = context.make_array(sig.args[1])(context, builder, a_inp)
        w_arr = context.make_array(sig.args[7])(context, builder, a_w)
        wv = builder.load(block_ptr(builder, w_arr.data, wi_v, vt), align=4)
        base = builder.bitcast(x_arr.data, I8P_IR)
        for p in range(rows):
            xv = tap_load(builder, base, xb, col_v, ix0_v, step_v, p, wd_v, check, vt, ir.Constant(vt, None))
            mac_block(builder, acc_p, p, xv, wv, contract=False)
        return context.get_dummy_value()

    sig = types.none(acc, inp, types.int64, types.int64, types.int64, types.int64, types.int64, w, types.int64,
                     mr, checked, width)
    return sig, codegen


@njit(inline="always")
def _dw_block(acc_p, inp, w, n, px, c0, iy0, ky0, ky1, kw, sw, dh, dw, pl, mr, width):
    # One block: mr output pixels from column px, channels [c0, c0 + width), taps in (ky, kx) order.
    s_n, s_h, s_w, s_c = inp.strides
    wd = inp.shape[2]
    w_ky, w_kx = w.strides[1] // 4, w.strides[2] // 4
    for ky in range(ky0, ky1):
        rowb = n * s_n + (iy0 + ky * dh) * s_h + c0 * s_c
        for kx in range(kw):
            ix0 = px * sw - pl + kx * dw
            wi = ky * w_ky + kx * w_kx + c0
            inside = ix0 >= 0 and ix0 + (mr - 1) * sw < wd
            if width == 16:
                if mr == 8:
                    if inside:
                        _vdw(acc_p, inp, rowb, ix0, sw, wd, s_w, w, wi, 8, 0, 16)
                    else:
                        _vdw(acc_p, inp, rowb, ix0, sw, wd, s_w, w, wi, 8, 1, 16)
                elif mr == 4:
                    if inside:
                        _vdw(acc_p, inp, rowb, ix0, sw, wd, s_w, w, wi, 4, 0, 16)
                    else:
                        _vdw(acc_p, inp, rowb, ix0, sw, wd, s_w, w, wi, 4, 1, 16)
                elif inside:
                    _vdw(acc_p, inp, rowb, ix0, sw, wd, s_w, w, wi, 1, 0, 16)
            elif mr == 8:
                if inside:
                    _vdw(acc_p, inp, rowb, ix0, sw, wd, s_w, w, wi, 8, 0, 8)
                else:
                    _vdw(acc_p, inp, rowb, ix0, sw, wd, s_w, w, wi, 8, 1, 8)
            elif mr == 4:
                if inside:
                    _vdw(acc_p, inp, rowb, ix0, sw, wd, s_w, w, wi, 4, 0, 8)
                else:
                    _vdw(acc_p, inp, rowb, ix0, sw, wd, s_w, w, wi, 4, 1, 8)
            elif inside:
                _vdw(acc_p, inp, rowb, ix0, sw, wd, s_w, w, wi, 1, 0, 8)


@njit(nogil=True, cache=True)
def _depthwise_simd(inp, w, bias, has_bias, out, sh, sw, dh, dw, pt, pl, lo, hi):
    # Multiplier 1, channels a multiple of 8, unit channel stride in input, filter and output.
    # Blocks of 8 (4, 1) output pixels x 16 (8) channels stay in vector registers over the taps.
    n_b, h, wd, c = inp.shape
    kh, kw = w.shape[1], w.shape[2]
    oh, ow = out.shape[1], out.shape[2]
    o_n, o_h, o_w = out.strides[0], out.strides[1], out.strides[2]
    acc_p = stack_buf(128, np.float32)  # MR * VW
    for n in range(n_b):
        for oy in range(oh):
            iy0 = oy * sh - pt
            ky0, ky1 = max(0, (dh - 1 - iy0) // dh), min(kh, (h - iy0 + dh - 1) // dh)
            for c0 in range(0, c - 7, 16):
                width = 16 if c - c0 >= 16 else 8
                px = 0
                while px < ow:
                    left = ow - px
                    mr = 8 if left >= 8 else (4 if left >= 4 else 1)
                    vzero(acc_p, 128)
                    _dw_block(acc_p, inp, w, n, px, c0, iy0, ky0, ky1, kw, sw, dh, dw, pl, mr, width)
                    _store_block(acc_p, mr, out, n * o_n + oy * o_h + px * o_w + c0 * 4, o_w, bias, c0, lo, hi,
                                 has_bias, width)
                    px += mr


# ---------------------------------------------------------------- python drivers (BLAS paths)


def _gemm_bias_act(x, w_t, out_rows, bias, has_bias, lo, hi, post):
    np.matmul(x, w_t, out=out_rows)
    if post:
        _bias_act_rows(out_rows, bias, has_bias, lo, hi)


def _transpose_conv_gemm(x_rows, w_t, col, bias, has_bias, out, geom):
    np.matmul(x_rows, w_t, out=col)
    _col2im_gather(col, bias, has_bias, out, *geom)


# The same calls as separate steps, so the executor can make each a direct call (see executor.py).
_gemm_bias_act.as_steps = lambda x, w_t, out_rows, bias, has_bias, lo, hi, post: [
    (np.matmul, (x, w_t, out_rows)), *([(_bias_act_rows, (out_rows, bias, has_bias, lo, hi))] if post else [])]
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
    if p["kh"] == 1 and p["kw"] == 1 and p["sh"] == 1 and p["sw"] == 1 and (
            inp.shape[3] > STACK_K or inp.size // inp.shape[3] < MR):
        # above STACK_K the simd path would need scratch that this zero-scratch GEMM does not; under
        # MR pixels it is a matrix-vector product that reads each weight once, where transposing
        # the filter for the simd path would cost as much again
        return "gemm1x1"
    return "simd"


def _conv_scratch(ctx: OpContext) -> int:
    if _conv_path(ctx) != "simd":
        return 0
    _, kh, kw, c = ctx.inputs[1].shape
    k = kh * kw * c
    return k * VW * 4 if k > STACK_K else 0  # one block of the filter, transposed to [K, VW]


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
    if path == "simd":
        w2 = np.reshape(w, (o, -1), copy=False)
        wt = f32_scratch(scratch, w2.shape[1] * VW) if w2.shape[1] > STACK_K else np.zeros(0, np.float32)
        if p["kh"] == p["kw"] == p["sh"] == p["sw"] == 1:
            # 1x1 stride 1 reads no neighbours: run all N*H*W pixels as one image row, so short
            # rows still fill 8-pixel register blocks
            in_rows = rows_view(inp)
            if _gemm_ok(in_rows, out_rows):
                inp, out = in_rows[None, None], out_rows[None, None]
        return _conv_simd, (inp, w2, b, has_bias, out, wt, p["kh"], p["kw"], p["sh"], p["sw"], p["dh"], p["dw"],
                            p["pt"], p["pl"], lo, hi)
    if path == "gemm1x1":
        in_rows = rows_view(inp)
        if _gemm_ok(in_rows, out_rows):
            return _gemm_bias_act, (in_rows, w_t, out_rows, b, has_bias, lo, hi, post)
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
    if (mult == 1 and inp.shape[3] % 8 == 0 and inp.strides[3] == 4 and out.strides[3] == 4
            and w.strides[3] == 4 and b.strides[0] == 4):
        return _depthwise_simd, (inp, w, b, has_bias, out, p["sh"], p["sw"], p["dh"], p["dw"], p["pt"], p["pl"],
                                 *fused_clamp(ctx)[1:])
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
    if matvec_ok(x, w, y):
        return fc_matvec, (x, w, b, has_bias, y, lo, hi)
    if x.shape[0] * i * o <= SMALL_FC_MACS or not _gemm_ok(x, y):
        return _fc_direct, (x, w, b, has_bias, y, lo, hi)
    return _gemm_bias_act, (x, w.T, y, b, has_bias, lo, hi, has_bias or code != 0)


def fc_chain_layer(entry: KernelEntry, ctx: OpContext, ins: list, outs: list) -> tuple | None:
    """(x rows, weights, bias or None, out rows, clamp code) of a float FC that `entry` (the
    registry's choice for it) runs with fc_matvec, for matvec.bind_chain; None for any other op."""
    if entry.bind is not _fc_bind or len(ins) < 2 or ins[0] is None or ins[1] is None:
        return None
    w = ins[1]
    x, y = _rows_of(ins[0], w.shape[1]), _rows_of(outs[0], w.shape[0])
    if x is None or y is None or not matvec_ok(x, w, y):
        return None
    return x, w, _optional(ins, 2), y, fused_clamp(ctx)[0]


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
OUTER_MIN_O = 8
# Rows of the int8 im2col tile of the dot-product path (the tile is rows * K bytes of scratch).
QIM2COL_TILE_BYTES = 64 * 1024
# From this K = KH*KW*C on, CONV_2D runs the float32 GEMM of qgemm (exact, see there). Measured
# (tools/bench_ops.py int8, 1 thread): 1.6x faster than the int32 dot at K = 1152, but 0.7-1.0x
# at K = 144, where its per-output horizontal sums and the float im2col fill dominate.
QGEMM_MIN_K = 512


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


def _dot_bias(w2: np.ndarray, bias: np.ndarray | None, in_off: int) -> np.ndarray:
    """The bias of the qdot kernels: bias + (in_off - BYTE_OFFSET) * sum(w), as they sum x + BYTE_OFFSET."""
    return _bias_eff(bias, np.asarray(w2, np.int64).sum(axis=1), w2.shape[1], in_off - BYTE_OFFSET, 0)


def _flat_or_empty(a: np.ndarray) -> np.ndarray:
    """a as one contiguous 1-D view when it is C-contiguous (the qdot kernels then convert its rows
    with a vector loop), else an empty array of its dtype (they index it element by element)."""
    return a.reshape(-1) if a.flags.c_contiguous else np.empty(0, a.dtype)


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


@njit(inline="always")
def _im2col_row(inp, col, r, p, plane, ow, kh, kw, sh, sw, dh, dw, pt, pl, in_off, fill):
    # col[r, 0:K] = the (ky, kx, ci) taps of output pixel p (n, oy, ox flattened; plane = oh * ow),
    # each x + in_off converted to col's dtype; taps in the padding get `fill`.
    h, wd, c = inp.shape[1], inp.shape[2], inp.shape[3]
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
                    dst[k + ci] = np.int32(src[ci]) + in_off
            else:
                for ci in range(c):
                    dst[k + ci] = fill
            k += c


@njit(nogil=True, cache=True)
def _qconv_im2col(inp, col, w2, bias_eff, w_off, out_rows, mult, shift, out_zp, lo, hi,
                  oh, ow, kh, kw, sh, sw, dh, dw, pt, pl, fill, accs):
    # col: [tile rows, K] scratch of the input dtype holding the raw codes; padding taps hold
    # zp_in (x + in_off == 0).
    plane = oh * ow
    total = inp.shape[0] * plane
    rows = col.shape[0]
    for r0 in range(0, total, rows):
        n_rows = min(rows, total - r0)
        for r in range(n_rows):
            _im2col_row(inp, col, r, r0 + r, plane, ow, kh, kw, sh, sw, dh, dw, pt, pl, 0, fill)
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
            _im2col_row(inp, tile, r, r0 + r, plane, ow, kh, kw, sh, sw, dh, dw, pt, pl, in_off, np.float32(0.0))
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


@njit(nogil=True, cache=True)
def _qconv_simd(inp, w2, bias, out, mult, shift, in_off, w_off, out_zp, lo, hi, kh, kw, sh, sw, dh, dw, pt, pl):
    # qgemm's register-blocked micro-kernel (exact float32 sums, see qgemm.simd_exact): per block
    # of VW output channels the filter block is widened to float32 [K, VW] on the stack, then
    # 8 (4, 1) output pixels at a time accumulate over every valid tap in registers; the block is
    # then requantized lane by lane. Padding taps are skipped (x + in_off = 0 there), or read as
    # the 0.0 columns of the row buffer. No scratch: filter block, row buffer and lanes (~100 KiB)
    # are on the calling thread's stack.
    n_b, h, wd, c = inp.shape
    n_o, k = w2.shape
    oh, ow = out.shape[1], out.shape[2]
    acc_p = stack_buf(128, np.float32)  # MR_SIMD * VW
    wt_p = stack_buf(8192, np.float32)  # SIMD_MAX_K * VW
    wt = numba.carray(wt_p, (8192,))
    tmp_p = stack_buf(128, np.float32)
    tmp = numba.carray(tmp_p, (128,))
    # bias, multiplier, shift of the block's channels repeated for its 8 pixels, and the output
    # codes: contiguous lanes, so the requantization loop vectorizes (the output may be strided)
    lanes = numba.carray(stack_buf(512, np.int32), (4, 128))
    # Row-buffer form: x read as floats from a converted, zero-padded copy of the kh input rows an
    # output row needs (one broadcast load per tap instead of a load, widen, offset and convert).
    # It pays where each x feeds several taps and the channel loop of the conversion is long
    # (measured, ResNet-8's 3x3 16 -> 16 at 32x32: 75 -> 61 us), not for 3-channel stems (1.5x
    # slower) or strided 1x1 convs (1.2x: they convert columns they never read).
    wp = max(wd + pl, (ow - 1) * sw + (kw - 1) * dw + 1)
    use_rows = kh * kw > 1 and c >= 8 and kh * wp * c <= QXBUF
    xb_p = stack_buf(16384, np.float32)  # QXBUF
    xbuf = numba.carray(xb_p, (16384,))
    if use_rows:
        for i in range(kh * wp * c):
            xbuf[i] = np.float32(0.0)
    for o0 in range(0, n_o, VW):
        nb = min(VW, n_o - o0)
        for j in range(nb):
            row = w2[o0 + j]
            for kk in range(k):
                wt[kk * VW + j] = np.float32(np.int32(row[kk]) + w_off)
        for j in range(nb, VW):
            for kk in range(k):
                wt[kk * VW + j] = np.float32(0.0)
        for t in range(128):
            j = min(t % VW, nb - 1)
            lanes[0, t] = bias[o0 + j]
            lanes[1, t] = mult[o0 + j]
            lanes[2, t] = shift[o0 + j]
        brep, mrep, srep, codes = lanes[0], lanes[1], lanes[2], lanes[3]
        for n in range(n_b):
            for oy in range(oh):
                iy0 = oy * sh - pt
                ky0, ky1 = max(0, (dh - 1 - iy0) // dh), min(kh, (h - iy0 + dh - 1) // dh)
                if use_rows:
                    # kh input rows as float32(x + in_off) between zero columns: every tap valid
                    for ky in range(ky0, ky1):
                        iy = iy0 + ky * dh
                        base = ky * wp * c
                        for ix in range(wd):
                            col = base + (ix + pl) * c
                            for ci in range(c):
                                xbuf[col + ci] = np.float32(np.int32(inp[n, iy, ix, ci]) + in_off)
                px = 0
                while px < ow:
                    left = ow - px
                    mr = 8 if left >= 8 else (4 if left >= 4 else 1)
                    vzero(acc_p, 128)
                    if use_rows:
                        _qsimd_taps_rows(acc_p, xb_p, wt_p, ky0, ky1, kw, c, wp, px, sw, dw, mr)
                    else:
                        _qsimd_taps(acc_p, inp, wt_p, n, iy0, ky0, ky1, kw, c, px, sw, dh, dw, pl, in_off, mr)
                    vcopy(acc_p, tmp_p, 128)
                    for t in range(mr * VW):
                        acc = np.int32(np.int64(np.int32(tmp[t])) + brep[t])  # C++ int32 wrap
                        codes[t] = np.int32(requantize(acc, mrep[t], srep[t], out_zp, lo, hi, False))
                    for p in range(mr):
                        for j in range(nb):
                            out[n, oy, px + p, o0 + j] = codes[p * VW + j]
                    px += mr


def _qconv_ungrouped(ctx: OpContext) -> str | None:
    c, w = ctx.inputs[0].shape[3], ctx.inputs[1].shape
    if c != w[3]:
        return f"grouped quantized conv not supported (filter depth {w[3]}, input depth {c})"
    return None


def _qconv_supports(ctx: OpContext) -> str | None:
    return (version_ok(ctx) or _four_d(ctx, 0) or quant_conv_types(ctx, 0, 1, 2, 0)
            or _filter_offset_problem(ctx, 1, allow_int8_zp=False) or fused_activation_problem(ctx)
            or _qconv_ungrouped(ctx) or _conv_output_problem(ctx, ctx.inputs[1].shape[0]))


# The register-blocked float32 path (_qconv_simd) from this many output pixels on: it widens its
# filter blocks to float32 on every call (K*O scalar conversions), which a few pixels do not pay
# back. And only for K >= QSIMD_MIN_K or at most QSIMD_MAX_SMALL_K_O output channels: its
# requantization per output costs more than the outer and row paths' there. Measured (1 thread,
# same process, every int8 zoo conv): 0.33-0.45x at K = 27..48 with 8-16 outputs, 0.41x at
# K = 144 / O = 16, 0.65x at K = 288; 1.2-1.35x at K = 8..64 with 48-96 outputs, 1.14x at
# K = O = 128 with 64 pixels.
QSIMD_MIN_PIXELS = 100
QSIMD_MIN_K = 96
QSIMD_MAX_SMALL_K_O = 32
QSIMD_MIN_O = 4  # fewer fill too little of a VW-lane block (1.08x at 3 outputs)


def _qsimd_ok(ctx: OpContext, pixels: int) -> bool:
    """Whether _qconv_simd takes this CONV_2D: K fits its stack filter block, enough output pixels,
    and every output channel's float32 sum is provably exact (qgemm.simd_exact)."""
    w = ctx.inputs[1]
    n_o, kh, kw, c = w.shape
    if kh * kw * c > QSIMD_MAX_K or pixels < QSIMD_MIN_PIXELS or w.data is None:
        return False
    if (kh * kw * c < QSIMD_MIN_K and n_o > QSIMD_MAX_SMALL_K_O) or n_o < QSIMD_MIN_O:
        return False
    w_off = _filter_offset(ctx, 1, allow_int8_zp=False)
    if isinstance(w_off, str):
        return False
    a_max = operand_max(ctx.inputs[0].dtype, _in_offset(ctx, 0))
    return simd_exact(np.reshape(w.data, (n_o, kh * kw * c)), w_off, a_max)


# The integer dot-product path (qdot.py) from this many output pixels on: it re-lays its filter
# blocks out on every call (K*O bytes), which one or two pixels do not pay back.
QDOT_MIN_PIXELS = 4


def _qdot_flat(ctx: OpContext) -> bool:
    """Whether qconv_dot runs this 1x1 stride-1 conv over each image as one long row (its pixel
    blocks then span rows: narrow images such as 25x5 otherwise leave most of each block empty)."""
    n_o, kh, kw, c = ctx.inputs[1].shape
    p = _conv_params(ctx)
    if (kh, kw, p["sh"], p["sw"], p["pt"], p["pl"]) != (1, 1, 1, 1, 0, 0):
        return False
    _, h, w, _ = ctx.inputs[0].shape
    return dot_fits(n_o, 1, 1, c, h * w, h * w, 1, 1, 0)


def _qdot_ok(ctx: OpContext, pixels: int) -> bool:
    """Whether qdot.qconv_dot takes this CONV_2D: a VNNI CPU, int8 input and symmetric int8 filters
    (w_off 0; uint8 convs have uint8 filters), enough output pixels, and filter and row ring
    within its stack buffers."""
    w = ctx.inputs[1]
    if not use_dot_product() or w.dtype != np.int8 or ctx.inputs[0].dtype != np.int8 or pixels < QDOT_MIN_PIXELS:
        return False
    if _filter_offset(ctx, 1, allow_int8_zp=False) != 0:
        return False
    n_o, kh, kw, c = w.shape
    p = _conv_params(ctx)
    return _qdot_flat(ctx) or dot_fits(n_o, kh, kw, c, ctx.inputs[0].shape[2], p["ow"], p["sw"], p["dw"], p["pl"])


def _qgemv_ok(ctx: OpContext, x_pos: int, w_pos: int) -> bool:
    """Whether qdot.qgemv takes this CONV_2D (or FULLY_CONNECTED: x_pos, w_pos its input and filter
    positions): a VNNI CPU, int8 input and symmetric int8 filter, a patch within its stack buffer."""
    x, w = ctx.inputs[x_pos], ctx.inputs[w_pos]
    if not use_dot_product() or x.dtype != np.int8 or w.dtype != np.int8 or w.data is None:
        return False
    k = int(np.prod(w.shape[1:]))
    return k <= GEMV_MAX_K and _filter_offset(ctx, w_pos, allow_int8_zp=False) == 0


def _qconv_path(ctx: OpContext) -> str:
    n_o, kh, kw, c = ctx.inputs[1].shape
    # outer repacks its weights and starts a parallel loop on every call: a loss for one output
    # pixel (streaming wake-word models: 2.7 µs against 0.3 µs for a row dot product).
    pixels = ctx.outputs[0].size // max(1, ctx.outputs[0].shape[-1])
    if _qdot_ok(ctx, pixels):
        return "dot"
    if _qgemv_ok(ctx, 0, 1):
        return "gemv"
    if _qsimd_ok(ctx, pixels):
        return "simd"
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
    if path in ("simd", "dot", "gemv"):
        return 0
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
    if path == "gemv":
        w2 = np.reshape(w, (n_o, kh * kw * c), copy=False)
        return qgemv, (inp, w2, _dot_bias(w2, bias, in_off), out, mult, shift, out_zp, lo, hi, False,
                       kh, kw, p["sh"], p["sw"], p["dh"], p["dw"], p["pt"], p["pl"], in_off)
    if path == "dot":
        w2 = np.reshape(w, (n_o, kh * kw * c), copy=False)
        x, y = inp, out
        if _qdot_flat(ctx) and inp.flags.c_contiguous:
            try:
                y = np.reshape(out, (out.shape[0], 1, -1, n_o), copy=False)
                x = np.reshape(inp, (inp.shape[0], 1, -1, c), copy=False)
            except ValueError:  # an output view whose rows cannot be merged: run row by row
                x, y = inp, out
        w32 = w2.view(np.int32) if dot_segments(kh, kw, c, p["dw"])[1] % 4 == 0 else np.zeros((0, 0), np.int32)
        return qconv_dot, (x, _flat_or_empty(x), w2, w32, _dot_bias(w2, bias, in_off), y, mult, shift, out_zp, lo, hi,
                           kh, kw, p["sh"], p["sw"], p["dh"], p["dw"], p["pt"], p["pl"], in_off)
    if path == "simd":
        w2 = np.reshape(w, (n_o, kh * kw * c), copy=False)
        return _qconv_simd, (inp, w2, _int32_or_zeros(bias, n_o), out, mult, shift, in_off, w_off, out_zp, lo, hi,
                             kh, kw, p["sh"], p["sw"], p["dh"], p["dw"], p["pt"], p["pl"])
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
#
# Kernels, first that applies: `_qdw_simd` (multiplier 1, >= 8 channels, float32 sums within the
# exact bound, more than one output pixel: register-blocked over 8 pixels x 16 channels from a
# float32 row buffer, requantized in vector lanes; measured 1.5-7x over the others on the zoo's
# layers, ~1x on 3x3-pixel outputs); `_qdepthwise3x3` (3x3 stride 1 with fewer channels: flat
# (pixel, channel) lanes); `_qdepthwise` (anything: per pixel, loops over channels).


@njit(nogil=True, cache=True)
def _qdw_pixels(inp, w, bias, out, acc, mult, shift, in_off, w_off, out_zp, lo, hi,
                sh, sw, dh, dw, pt, pl, dmult, n, oy, ox_from, ox_to):
    # Output pixels [ox_from, ox_to) of row oy, one at a time: the channel loops vectorize; any
    # geometry, taps outside the input skipped (acc: int32 scratch of one pixel's channels).
    h, wd, c = inp.shape[1], inp.shape[2], inp.shape[3]
    kh, kw = w.shape[1], w.shape[2]
    oc = out.shape[3]
    iy0 = oy * sh - pt
    ky0, ky1 = max(0, (dh - 1 - iy0) // dh), min(kh, (h - iy0 + dh - 1) // dh)
    for ox in range(ox_from, ox_to):
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


@njit(nogil=True, cache=True)
def _qdepthwise(inp, w, bias, out, mult, shift, in_off, w_off, out_zp, lo, hi,
                sh, sw, dh, dw, pt, pl, dmult):
    acc = numba.carray(stack_buf_dyn(out.shape[3], np.int32), (out.shape[3],))
    for n in range(inp.shape[0]):
        for oy in range(out.shape[1]):
            _qdw_pixels(inp, w, bias, out, acc, mult, shift, in_off, w_off, out_zp, lo, hi,
                        sh, sw, dh, dw, pt, pl, dmult, n, oy, 0, out.shape[2])


# Lanes of the interior depthwise kernel: output pixels x channels per pass (about 64, so several
# vector registers' worth even for 8 channels).
QDW_LANES = 64


def _qdw_block(c: int) -> int:
    """Output pixels per pass of _qdepthwise3x3 for c channels."""
    return max(1, QDW_LANES // c)


@njit(nogil=True, cache=True)
def _qdepthwise3x3(inp, w, bias, out, xrows, orows, wrep, brep, mrep, srep, acc, mult, shift, in_off, w_off,
                   out_zp, lo, hi, pt, pl, dh, dw):
    # Stride 1, 3x3, multiplier 1. Pixels whose 9 taps all fall inside the input (the interior)
    # run as one flat loop over (pixel, channel) lanes of a row, the 9 taps unrolled in its body,
    # so LLVM vectorizes it whatever the channel count; the periodic per-lane operands (weights
    # + w_off, bias + in_off * their sum, multiplier, shift) are repeated into scratch once per call.
    # Border pixels take _qdepthwise's per-pixel loop. xrows/orows: inp/out as [N, H, W*C] views.
    n_b, h, wd, c = inp.shape
    oh, ow = out.shape[1], out.shape[2]
    lanes = wrep.shape[1]
    blk = lanes // c
    # channel loops first (they vectorize), then the first c lanes copied blk - 1 times
    for ci in range(c):
        brep[ci] = bias[ci]
        mrep[ci] = mult[ci]
        srep[ci] = shift[ci]
    for t in range(9):
        wt = w[0, t // 3, t % 3]
        row = wrep[t]
        for ci in range(c):
            v = np.int32(wt[ci]) + w_off
            row[ci] = np.int16(v)
            brep[ci] = np.int32(brep[ci] + in_off * v)  # int32 wrap, as the C++ accumulator
    for b in range(1, blk):
        brep[b * c:(b + 1) * c] = brep[:c]
        mrep[b * c:(b + 1) * c] = mrep[:c]
        srep[b * c:(b + 1) * c] = srep[:c]
        for t in range(9):
            wrep[t, b * c:(b + 1) * c] = wrep[t, :c]
    w0, w1, w2, w3, w4 = wrep[0], wrep[1], wrep[2], wrep[3], wrep[4]
    w5, w6, w7, w8 = wrep[5], wrep[6], wrep[7], wrep[8]
    ox_lo = min(ow, max(0, pl))
    ox_hi = max(ox_lo, min(ow, wd - 2 * dw + pl))
    for n in range(n_b):
        for oy in range(oh):
            iy0 = oy - pt
            if iy0 < 0 or iy0 + 2 * dh >= h or ox_lo >= ox_hi:
                _qdw_pixels(inp, w, bias, out, acc, mult, shift, in_off, w_off, out_zp, lo, hi,
                            1, 1, dh, dw, pt, pl, 1, n, oy, 0, ow)
                continue
            _qdw_pixels(inp, w, bias, out, acc, mult, shift, in_off, w_off, out_zp, lo, hi,
                        1, 1, dh, dw, pt, pl, 1, n, oy, 0, ox_lo)
            _qdw_pixels(inp, w, bias, out, acc, mult, shift, in_off, w_off, out_zp, lo, hi,
                        1, 1, dh, dw, pt, pl, 1, n, oy, ox_hi, ow)
            r0 = xrows[n, iy0]
            r1 = xrows[n, iy0 + dh]
            r2 = xrows[n, iy0 + 2 * dh]
            orow = orows[n, oy]
            d1 = dw * c
            d2 = 2 * dw * c
            for ox0 in range(ox_lo, ox_hi, blk):
                m = min(blk, ox_hi - ox0) * c
                b0 = (ox0 - pl) * c
                # slices from each tap's start: a loop index known non-negative spares numba's
                # negative-index select, which would keep LLVM from vectorizing
                x00 = r0[b0:b0 + m]
                x01 = r0[b0 + d1:b0 + d1 + m]
                x02 = r0[b0 + d2:b0 + d2 + m]
                x10 = r1[b0:b0 + m]
                x11 = r1[b0 + d1:b0 + d1 + m]
                x12 = r1[b0 + d2:b0 + d2 + m]
                x20 = r2[b0:b0 + m]
                x21 = r2[b0 + d1:b0 + d1 + m]
                x22 = r2[b0 + d2:b0 + d2 + m]
                dst = orow[ox0 * c:ox0 * c + m]
                for j in range(m):
                    s = (brep[j] + np.int32(x00[j]) * np.int32(w0[j]) + np.int32(x01[j]) * np.int32(w1[j])
                         + np.int32(x02[j]) * np.int32(w2[j]) + np.int32(x10[j]) * np.int32(w3[j])
                         + np.int32(x11[j]) * np.int32(w4[j]) + np.int32(x12[j]) * np.int32(w5[j])
                         + np.int32(x20[j]) * np.int32(w6[j]) + np.int32(x21[j]) * np.int32(w7[j])
                         + np.int32(x22[j]) * np.int32(w8[j]))
                    dst[j] = requantize(np.int32(s), mrep[j], srep[j], out_zp, lo, hi, False)


@intrinsic
def _vqdw_taps(typingctx, acc, buf, off, wb, wi, mr):
    """acc[p*VW : (p+1)*VW] += buf[off + p*VW : off + (p+1)*VW] * wb[wi : wi+VW] for p < mr
    (literal): one filter tap for a block of output pixels, from _qdw_simd's float32 row buffer (its
    stride phases make the pixels' inputs adjacent, so every address is off + a constant). Multiply-add
    contracted: exact, every partial sum is an integer below 2^24 (_qdw_simd_ok checks the bound)."""
    if not isinstance(mr, types.IntegerLiteral):
        return None
    rows = mr.literal_value

    def codegen(context, builder, sig, args):
        acc_p, buf_p, off_v, wb_p, wi_v = args[:5]
        vt = ir.VectorType(F32_IR, VW)
        wv = builder.load(block_ptr(builder, wb_p, wi_v, vt), align=4)
        x_p = builder.gep(buf_p, [off_v])
        for p in range(rows):
            xv = builder.load(block_ptr(builder, x_p, p * VW, vt), align=4)
            mac_block(builder, acc_p, p, xv, wv, contract=True)
        return context.get_dummy_value()

    return types.none(acc, buf, types.int64, wb, types.int64, mr), codegen


@intrinsic
def _vqdw_out(typingctx, acc, rows, count, out, obyte, ostep, qparams, c0, out_zp, lo, hi, width):
    """For p < count (<= rows, a literal): the width (literal) 8-bit codes at byte obyte + p*ostep
    of out = requantize(int32(acc[p*VW : p*VW+width]) + qparams[0, c0:c0+width]) with multipliers
    qparams[1, c0:] and shifts qparams[2, c0:] (vrequantize: conv.requantize's double rounding)."""
    if not all(isinstance(v, types.IntegerLiteral) for v in (rows, width)):
        return None
    n_rows, wdt = rows.literal_value, width.literal_value

    def codegen(context, builder, sig, args):
        acc_p, _, count_v, a_out, ob, ostep_v, a_q, c0_v, zp_v, lo_v, hi_v = args[:11]
        ft = ir.VectorType(F32_IR, wdt)
        it = ir.VectorType(ir.IntType(32), wdt)
        bt = ir.VectorType(ir.IntType(8), wdt)
        q_arr = context.make_array(sig.args[6])(context, builder, a_q)
        row = builder.extract_value(q_arr.shape, 1)
        bias, mult, shift = (builder.load(block_ptr(builder, q_arr.data, strided(builder, c0_v, row, k), it), align=4)
                             for k in range(3))
        base = array_bytes(context, builder, sig.args[3], a_out)
        for p in range(n_rows):
            with builder.if_then(builder.icmp_signed("<", ir.Constant(ir.IntType(64), p), count_v), likely=True):
                f = builder.load(block_ptr(builder, acc_p, p * VW, ft), align=4)
                v = vrequantize(builder, builder.add(builder.fptosi(f, it), bias), mult, shift, zp_v, lo_v, hi_v)
                builder.store(builder.trunc(v, bt), byte_ptr(builder, base, strided(builder, ob, ostep_v, p), bt),
                              align=1)
        return context.get_dummy_value()

    sig = types.none(acc, rows, types.int64, out, types.int64, types.int64, qparams, types.int64, types.int64,
                     types.int64, types.int64, width)
    return sig, codegen


@intrinsic
def _vqdw_load(typingctx, dst, di, src, sbyte, add, width):
    """dst[di : di+width] = float32(the width (literal) 8-bit codes at byte sbyte of src's data + add)."""
    if not isinstance(width, types.IntegerLiteral):
        return None
    wdt = width.literal_value
    signed = src.dtype == types.int8

    def codegen(context, builder, sig, args):
        dst_p, di_v, a_src, sb_v, add_v = args[:5]
        it = ir.VectorType(ir.IntType(32), wdt)
        raw = builder.load(byte_ptr(builder, array_bytes(context, builder, sig.args[2], a_src), sb_v,
                                    ir.VectorType(ir.IntType(8), wdt)), align=1)
        wide = builder.sext(raw, it) if signed else builder.zext(raw, it)
        wide = builder.add(wide, splat(builder, builder.trunc(add_v, ir.IntType(32)), it))
        builder.store(builder.sitofp(wide, ir.VectorType(F32_IR, wdt)), block_ptr(builder, dst_p, di_v,
                                                                                 ir.VectorType(F32_IR, wdt)), align=4)
        return context.get_dummy_value()

    return types.none(dst, types.int64, src, types.int64, types.int64, width), codegen


@intrinsic
def _vqdw_fill(typingctx, dst, di, value):
    """dst[di : di+VW] = value (float32)."""

    def codegen(context, builder, sig, args):
        vt = ir.VectorType(F32_IR, VW)
        builder.store(splat(builder, args[2], vt), block_ptr(builder, args[0], args[1], vt), align=4)
        return context.get_dummy_value()

    return types.none(dst, types.int64, types.float32), codegen


@njit(inline="always")
def _qdw_load(dst, di, src, sbyte, add, width):
    # _vqdw_load with a literal width
    if width == VW:
        _vqdw_load(dst, di, src, sbyte, add, 16)
    else:
        _vqdw_load(dst, di, src, sbyte, add, 8)


@njit(inline="always")
def _qdw_store(acc_p, mr, count, out, ob, o_w, qparams, c0, out_zp, lo, hi, width):
    # _vqdw_out with its literal arguments picked from the runtime (mr, width)
    if width == VW:
        if mr == 8:
            _vqdw_out(acc_p, 8, count, out, ob, o_w, qparams, c0, out_zp, lo, hi, 16)
        else:
            _vqdw_out(acc_p, 4, count, out, ob, o_w, qparams, c0, out_zp, lo, hi, 16)
    elif mr == 8:
        _vqdw_out(acc_p, 8, count, out, ob, o_w, qparams, c0, out_zp, lo, hi, 8)
    else:
        _vqdw_out(acc_p, 4, count, out, ob, o_w, qparams, c0, out_zp, lo, hi, 8)


@njit(inline="always", cache=True)
def qdw_ring(kh: int, dh: int) -> int:
    """Rows of _qdw_simd's row buffer ring: the rows a filter spans, rounded up to a power of two."""
    ring = 1
    while ring < (kh - 1) * dh + 1:
        ring *= 2
    return ring


def qdw_buffer_width(ow: int, kw: int, sw: int, dw: int) -> int:
    """Pixels per row of _qdw_simd's row buffer: every column the row's blocks of 8 (4) output
    pixels read, the last block's extra pixels included (at most 3 beyond the row)."""
    return (ow + 2) * sw + (kw - 1) * dw + 1


# Input bytes of one band of _qdw_simd's output rows: the band's input rows stay in cache (L2)
# while every channel block passes over them (a 112x112x96 stride-2 layer: 1.9x -> 2.6x).
QDW_BAND_BYTES = 256 * 1024


@njit(nogil=True, cache=True)
def _qdw_simd(inp, w, qparams, out, w_off, in_zp, out_zp, lo, hi, sh, sw, dh, dw, pt, pl, wp):
    # Multiplier 1, >= 8 channels, unit channel stride in input, filter and output. Per band of
    # output rows and block of VW (8 when c < VW) channels, the last block moved back to end at
    # channel c (it redoes a few channels, rewriting the same codes):
    # - the filter's w + w_off as float32 on the stack;
    # - a row buffer on the stack: the input rows the filter spans, converted once to float32 (a
    #   ring of a power of two slots: row iy in slot iy & (ring - 1), no division), wp pixels of
    #   VW lanes each, input column ix at j = ix + pl, stored by stride phase (at
    #   (j % sw) * pw + j // sw) so the pixels of a block read adjacent vectors; the padding columns
    #   and one extra row hold the input zero point, so every tap is a plain load (a padding tap
    #   contributes in_zp * (w + w_off), cancelled by the bias term below);
    # - blocks of 8 (4) output pixels x VW lanes sum x * (w + w_off) over every tap in float32
    #   registers (exact, _qdw_simd_ok); a row's last block computes up to 3 pixels past the row
    #   and stores the ones that exist.
    # qparams: [bias + in_off * sum(w + w_off) (int32 wrap), multiplier, shift] per channel, added
    # and applied in the lanes.
    n_b, h, wd, c = inp.shape
    kh, kw = w.shape[1], w.shape[2]
    oh = out.shape[1]
    w_h, w_w = w.strides[1], w.strides[2]
    taps = kh * kw
    ring = qdw_ring(kh, dh)
    pw = (wp + sw - 1) // sw  # pixels per stride phase
    row_len = sw * pw * VW
    acc_p = stack_buf(128, np.float32)  # MR * VW
    wb_p = stack_buf_dyn(taps * VW, np.float32)
    buf_p = stack_buf_dyn((ring + 1) * row_len, np.float32)
    held = numba.carray(stack_buf_dyn(ring, np.int64), (ring,))
    # element offsets, out of the pixel loop (it would otherwise divide per tap): a filter row's
    # buffer row, a filter column's position relative to the block's first pixel
    roff = numba.carray(stack_buf_dyn(kh, np.int64), (kh,))
    koff = numba.carray(stack_buf_dyn(kw, np.int64), (kw,))
    zpf = np.float32(in_zp)
    width = VW if c >= VW else 8
    for i in range(0, taps * VW, VW):
        _vqdw_fill(wb_p, i, np.float32(0.0))
    for i in range(0, (ring + 1) * row_len, VW):
        _vqdw_fill(buf_p, i, zpf)
    for kx in range(kw):
        j = kx * dw
        koff[kx] = ((j % sw) * pw + j // sw) * VW
    geo = (min(wd, wp - pl), pl % sw, pl // sw, sw, pw, ring, row_len)  # input columns read, column 0's place
    band = max(1, QDW_BAND_BYTES // max(1, sh * wd * c))
    for n in range(n_b):
        for oy0 in range(0, oh, band):
            for cb in range(0, c, width):
                c0 = min(cb, c - width)
                for ky in range(kh):
                    for kx in range(kw):
                        _qdw_load(wb_p, (ky * kw + kx) * VW, w, ky * w_h + kx * w_w + c0, w_off, width)
                for i in range(ring):
                    held[i] = -1
                for oy in range(oy0, min(oh, oy0 + band)):
                    _qdw_fill_rows(inp, buf_p, held, roff, geo, n, oy * sh - pt, dh, c0, width)
                    _qdw_row(out, qparams, acc_p, wb_p, buf_p, roff, koff, n, oy, c0, width, out_zp, lo, hi)


@njit(inline="always")
def _qdw_fill_rows(inp, buf_p, held, roff, geo, n, iy0, dh, c0, width):
    # the input rows of an output row: their buffer offsets into roff, the ones not yet in the
    # ring converted into it
    h = inp.shape[1]
    s_n, s_h, s_w = inp.strides[0], inp.strides[1], inp.strides[2]
    n_cols, ph0, q0, sw, pw, ring, row_len = geo
    for ky in range(roff.shape[0]):
        iy = iy0 + ky * dh
        slot = iy & (ring - 1) if 0 <= iy < h else ring
        roff[ky] = slot * row_len
        if slot < ring and held[slot] != iy:
            held[slot] = iy
            xb = n * s_n + iy * s_h + c0
            if width == VW:
                _qdw_cvt_row(buf_p, slot * row_len, inp, xb, s_w, n_cols, ph0, q0, sw, pw, 16)
            else:
                _qdw_cvt_row(buf_p, slot * row_len, inp, xb, s_w, n_cols, ph0, q0, sw, pw, 8)


@njit(inline="always")
def _qdw_cvt_row(buf_p, bo, inp, xb, s_w, n_cols, ph0, q0, sw, pw, width):
    # input columns [0, n_cols) of one row into a buffer row, phase by phase (constant strides)
    for f in range(min(sw, n_cols)):
        ph, q = ph0 + f, q0  # the phase and index of column f + pl, without dividing
        if ph >= sw:
            ph -= sw
            q += 1
        for ix in range(f, n_cols, sw):
            _vqdw_load(buf_p, bo + (ph * pw + q) * VW, inp, xb + ix * s_w, 0, width)
            q += 1


@njit(inline="always")
def _qdw_row(out, qparams, acc_p, wb_p, buf_p, roff, koff, n, oy, c0, width, out_zp, lo, hi):
    # one output row's blocks of 8 (4) pixels for channels [c0, c0 + width)
    kh, kw = roff.shape[0], koff.shape[0]
    ow = out.shape[2]
    o_n, o_h, o_w = out.strides[0], out.strides[1], out.strides[2]
    px = 0
    while px < ow:
        left = ow - px
        mr = 8 if left > 4 else 4
        vzero(acc_p, 128)
        for ky in range(kh):
            ro = roff[ky] + px * VW
            for kx in range(kw):
                xo = ro + koff[kx]
                if mr == 8:
                    _vqdw_taps(acc_p, buf_p, xo, wb_p, (ky * kw + kx) * VW, 8)
                else:
                    _vqdw_taps(acc_p, buf_p, xo, wb_p, (ky * kw + kx) * VW, 4)
        _qdw_store(acc_p, mr, min(mr, left), out, n * o_n + oy * o_h + px * o_w + c0, o_w, qparams, c0,
                   out_zp, lo, hi, width)
        px += mr


def _qdw_supports(ctx: OpContext) -> str | None:
    return (version_ok(ctx) or _four_d(ctx, 0) or quant_conv_types(ctx, 0, 1, 2, 3)
            or _filter_offset_problem(ctx, 1, allow_int8_zp=False) or fused_activation_problem(ctx)
            or _dw_geometry_problem(ctx))


# _qdw_simd's stack buffers (filter block and row buffer, float32) stay within this many bytes.
QDW_SIMD_STACK = 128 * 1024


def _qdw_simd_stack(ctx: OpContext) -> int:
    _, kh, kw, _ = ctx.inputs[1].shape
    p = _conv_params(ctx)
    rows = qdw_ring(kh, p["dh"]) + 1
    pw = -(-qdw_buffer_width(p["ow"], kw, p["sw"], p["dw"]) // p["sw"])
    return (kh * kw + rows * p["sw"] * pw) * VW * 4


def _qdw_simd_ok(ctx: OpContext) -> bool:
    """Whether _qdw_simd takes this layer: multiplier 1, >= 8 channels, stack buffers within
    QDW_SIMD_STACK, shifts it can apply (<= 31), and float32 sums that are exact (qgemm's bound:
    max|x| * sum over taps |w + w_off| <= 2^24 for every channel, x any input code or the zero point)."""
    x, w = ctx.inputs[0], ctx.inputs[1]
    _, kh, kw, oc = w.shape
    if oc != x.shape[3] or oc < 8 or _qdw_simd_stack(ctx) > QDW_SIMD_STACK:
        return False
    p = _conv_params(ctx)
    if p["oh"] * p["ow"] == 1:
        # one output pixel (streaming wake-word models, 21x1 filters): the buffers' setup costs
        # more than _qdepthwise's whole loop (measured 0.8-1.15x)
        return False
    if int(np.max(_requant_arrays(ctx, 0, 1, oc)[1])) > 31:
        return False
    w_off = _filter_offset(ctx, 1, allow_int8_zp=False)
    x_max = max(abs(int(np.iinfo(x.dtype).min)), int(np.iinfo(x.dtype).max))
    wsum = np.abs(np.asarray(w.data, np.int64).reshape(kh * kw, oc) + w_off).sum(axis=0)
    return x_max * int(wsum.max()) <= 1 << 24  # qgemm.EXACT_LIMIT


def _qdw_fast(ctx: OpContext) -> bool:
    """Whether the geometry suits _qdepthwise3x3 (and _qdw_simd does not take it): 3x3, stride 1,
    multiplier 1, and at least two pixels per pass (measured, 1 thread: 3.4x faster than
    _qdepthwise at 8 channels, 1.5x at 32, 0.75x at 64, where its channel loops are full vectors)."""
    p = _conv_params(ctx)
    w = ctx.inputs[1].shape
    return ((w[1], w[2], p["sh"], p["sw"]) == (3, 3, 1, 1) and w[3] == ctx.inputs[0].shape[3]
            and _qdw_block(w[3]) >= 2 and not _qdw_simd_ok(ctx))


def _qdw_fast_layout(c: int) -> tuple[int, int, int]:
    """(lanes, byte offset of the int16 weight rows, total scratch bytes) of _qdepthwise3x3.

    Scratch: the per-pixel int32 accumulators (c), then int32 bias / multiplier / shift lanes,
    then 9 int16 weight rows, each lanes long.
    """
    lanes = _qdw_block(c) * c
    w_at = (c * 4 + 3 * lanes * 4 + 63) // 64 * 64
    return lanes, w_at, w_at + 9 * lanes * 2


def _qdw_scratch(ctx: OpContext) -> int:
    c = ctx.outputs[0].shape[3]
    return _qdw_fast_layout(c)[2] if _qdw_fast(ctx) else 0


def _flat_rows(a: np.ndarray) -> np.ndarray | None:
    """A [N, H, W, C] view as [N, H, W*C] without copying, or None when its pixels are not packed."""
    if a.strides[3] != a.itemsize or a.strides[2] != a.shape[3] * a.itemsize:
        return None
    return np.reshape(a, (a.shape[0], a.shape[1], a.shape[2] * a.shape[3]), copy=False)


def _qdw_bind(ctx: OpContext, ins: list, outs: list, scratch: np.ndarray | None) -> Step:
    inp, w = ins[0], ins[1]
    bias = _optional(ins, 2)
    out = outs[0]
    p = _conv_params(ctx)
    oc = w.shape[3]
    mult, shift = _requant_arrays(ctx, 0, 1, oc)
    out_zp, lo, hi = quantized_out_range(ctx)
    bias = _int32_or_zeros(bias, oc)
    in_off, w_off = _in_offset(ctx, 0), _filter_offset(ctx, 1, allow_int8_zp=False)
    if _qdw_simd_ok(ctx) and inp.strides[3] == w.strides[3] == out.strides[3] == 1:
        wsum = (np.asarray(w, np.int64).reshape(-1, oc) + w_off).sum(axis=0)
        qparams = np.stack([_bias_eff(bias, wsum, 0, in_off, w_off), mult, shift]).astype(np.int32)
        return _qdw_simd, (inp, w, qparams, out, w_off, -in_off, out_zp, lo, hi,
                           p["sh"], p["sw"], p["dh"], p["dw"], p["pt"], p["pl"],
                           qdw_buffer_width(p["ow"], w.shape[2], p["sw"], p["dw"]))
    xrows, orows = _flat_rows(inp), _flat_rows(out)
    if _qdw_fast(ctx) and xrows is not None and orows is not None:
        acc = _i32_scratch(scratch, oc)
        lanes, w_at, _ = _qdw_fast_layout(oc)
        reps = scratch[oc * 4:oc * 4 + 3 * lanes * 4].view(np.int32).reshape(3, lanes)
        wrep = scratch[w_at:w_at + 9 * lanes * 2].view(np.int16).reshape(9, lanes)
        return _qdepthwise3x3, (inp, w, bias, out, xrows, orows, wrep, reps[0], reps[1], reps[2], acc, mult, shift,
                                in_off, w_off, out_zp, lo, hi, p["pt"], p["pl"], p["dh"], p["dw"])
    return _qdepthwise, (
        inp, w, bias, out, mult, shift, in_off, w_off, out_zp, lo, hi,
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


def _qtc_taps_ok(ctx: OpContext) -> bool:
    """Whether the TRANSPOSE_CONV's taps tile the output without overlap (stride = kernel, no
    padding: U-Net's upsampling), so each output pixel is one tap's 1x1 conv of one input pixel,
    and the integer dot-product path can take those convs (qdot.qconv_dot, one per tap)."""
    w, inp, out = ctx.inputs[1], ctx.inputs[2], ctx.outputs[0]
    sh, sw, pt, pl = _tc_params(ctx)
    _, kh, kw, c = w.shape
    if (sh, sw, pt, pl) != (kh, kw, 0, 0) or out.shape[1:3] != (inp.shape[1] * sh, inp.shape[2] * sw):
        return False
    if not use_dot_product() or inp.dtype != np.int8 or w.dtype != np.int8 or w.data is None or c % 4:
        return False
    return _filter_offset(ctx, 1, allow_int8_zp=False) == 0 and dot_fits(w.shape[0], 1, 1, c, inp.shape[2],
                                                                           inp.shape[2], 1, 1, 0)


def _qtc_taps(calls: tuple) -> None:
    for args in calls:
        qconv_dot(*args)


_qtc_taps.as_steps = lambda calls: [(qconv_dot, args) for args in calls]  # one step per tap (executor.py)


def _qtc_scratch(ctx: OpContext) -> int:
    if _qtc_taps_ok(ctx):
        return 0
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
    in_off = _in_offset(ctx, 2)
    if _qtc_taps_ok(ctx):
        # one 1x1 conv per tap (ky, kx) into the output pixels it alone reaches: out[:, ky::sh, kx::sw]
        calls = []
        for ky in range(sh):
            for kx in range(sw):
                w2 = w[:, ky, kx, :]
                calls.append((inp, _flat_or_empty(inp), w2, w2.view(np.int32), _dot_bias(w2, bias, in_off), out[:, ky::sh, kx::sw],
                              mult, shift, out_zp, lo, hi, 1, 1, 1, 1, 1, 1, 0, 0, in_off))
        return _qtc_taps, (tuple(calls),)
    # per (o, ky, kx): sum over input channels of (w + w_off), the factor of in_off in each tap's dot
    wsum_tap = (np.asarray(w, np.int64).sum(axis=3) + w.shape[3] * w_off).astype(np.int32)
    acc = _i32_scratch(scratch, out.shape[1] * out.shape[2] * n_o)
    return _qtransposeconv, (inp, w, wsum_tap, _int32_or_zeros(bias, n_o), out, acc, mult, shift,
                             in_off, w_off, out_zp, lo, hi, sh, sw, pt, pl)


# ------------------------------------------------ quantized FULLY_CONNECTED


def _qfc_supports(ctx: OpContext) -> str | None:
    return (version_ok(ctx) or _fc_weights_format(ctx) or _fc_weights_2d(ctx) or quant_conv_types(ctx, 0, 1, 2, 0)
            or _filter_offset_problem(ctx, 1, allow_int8_zp=not ctx.inputs[1].quantization.per_channel)
            or fused_activation_problem(ctx) or _fc_shape_problem(ctx))


def _qfc_scratch(ctx: OpContext) -> int:
    return 0 if _qgemv_ok(ctx, 0, 1) else ctx.inputs[1].shape[0] * 4


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
    if _qgemv_ok(ctx, 0, 1):  # rows as [rows, 1, 1, K] images of a 1x1 conv
        return qgemv, (x.reshape(-1, 1, 1, i), w, _dot_bias(w, bias, in_off), y.reshape(-1, 1, 1, o), mult, shift,
                       out_zp, lo, hi, True, 1, 1, 1, 1, 1, 1, 0, 0, in_off)
    bias_eff = _bias_eff(bias, np.asarray(w, np.int64).sum(axis=1), i, in_off, w_off)
    return _qdot_rows, (x, w, bias_eff, w_off, y, 0, mult, shift, out_zp, lo, hi, True, _i32_scratch(scratch, o))


def qfc_chain_layer(entry: KernelEntry, ctx: OpContext, ins: list, outs: list) -> tuple | None:
    """(x rows, filter, corr, mult, shift, out rows, zp, lo, hi) of an int8 FC that `entry` (the
    registry's choice for it) runs with qdot.qgemv, for qdot.bind_qchain; None for any other op."""
    if entry.bind is not _qfc_bind or len(ins) < 2 or ins[0] is None or not _qgemv_ok(ctx, 0, 1):
        return None
    w = ins[1]
    o, i = w.shape
    x, y = _rows_of(ins[0], i), _rows_of(outs[0], o)
    if x is None or y is None or w.strides[-1] != w.itemsize:
        return None
    mult, shift = _requant_arrays(ctx, 0, 1, o)
    return (x, w, _dot_bias(w, _optional(ins, 2), _in_offset(ctx, 0)), mult, shift, y, *quantized_out_range(ctx))


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
