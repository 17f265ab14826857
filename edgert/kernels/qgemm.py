"""Bit-exact int8/uint8 GEMM for the quantized conv family, computed with float32 arithmetic.

Why float32 is exact here (the proof the kernels rely on):
- Every operand is an integer: a = x + in_off with |a| <= A (A = max|x + in_off| over the input
  dtype's range, known at bind from zp_in), and b = w + w_off with |b| <= 255.
- float32 represents every integer of magnitude <= 2^24 exactly. A product a*b is an integer with
  |a*b| <= 255*255 < 2^24, so it is exact, and an FMA rounds nothing more than the sum.
- For output channel o and a K-chunk S, every partial sum of any subset of {a_k * b_k : k in S},
  in any order and association, has magnitude <= A * sum_{k in S} |b_k| =: bound(o, S). If
  bound(o, S) <= 2^24 every intermediate value is an integer within the exact range, so each
  addition is exact and the float result equals the integer sum. Hence reassociation, vector
  partial sums and FMA contraction (numba fastmath) cannot change the result.
- `k_chunks` splits K into equal chunks such that bound(o, S) <= 2^24 for every o and chunk; the
  per-chunk float sums convert exactly to int32 and are added in int32 (wrapping like C++).
  One chunk covers every K up to 2^24 / (A * max_o mean|b|); a chunk of 258 always qualifies.
The result `bias + sum_k a_k * b_k` is then the reference's int32 accumulator bit for bit, and
the existing `requantize` runs on it unchanged.

Layout: the left operand is a float32 tile [rows, Kp] in kernel scratch holding x + in_off (an
im2col tile, or copied input rows for 1x1 convs; padding taps and the columns K..Kp are 0.0);
the right operand is the model's own int8/uint8 filter [O, K], widened per use, so no weight copy
is kept: only its last K % KV columns are copied per call, zero-padded to KV, into scratch.
Register blocking: 8 tile rows x 2 output channels per pass, 16 float accumulators that LLVM
vectorizes along K.
"""

from __future__ import annotations

import numpy as np
from numba import njit

F32 = np.float32
I32 = np.int32
EXACT_LIMIT = 1 << 24
MR = 8  # tile rows per microkernel pass; tiles are a multiple of this
# Longest K chunk: MR float32 row slices of it (16 KiB) stay in L1 while all output channels pass.
KC = 512
# Chunk lengths are multiples of this, so LLVM's vector loop (16 lanes x 2) leaves no scalar
# remainder; K % KV columns run as one extra KV-wide chunk against zero-padded weights.
KV = 32


def operand_max(dtype: np.dtype, in_off: int) -> int:
    """max |x + in_off| over every value x of the 8-bit input dtype."""
    info = np.iinfo(dtype)
    return max(abs(int(info.min) + in_off), abs(int(info.max) + in_off))


def k_chunks(w2: np.ndarray, w_off: int, a_max: int) -> np.ndarray:
    """Chunk boundaries [0, ..., K_main] (int64), K_main = K rounded down to a multiple of KV.

    Every chunk is a multiple of KV long, at most KC, and satisfies a_max * sum|w + w_off| <= 2^24
    for every output channel (module docstring: that makes its float32 sum exact). Chunks are
    grown greedily; a single KV chunk always qualifies (KV * 255 * 255 < 2^24). The tail K - K_main
    (< KV, so also within the bound) is handled separately with zero-padded weights.
    """
    k = w2.shape[1]
    k_main = k // KV * KV
    absw = np.abs(np.asarray(w2, np.int64) + w_off)
    cum = np.concatenate([np.zeros((absw.shape[0], 1), np.int64), np.cumsum(absw, axis=1)], axis=1)
    bounds = [0]
    pos = 0
    while pos < k_main:
        size = KV
        while (pos + size + KV <= k_main and size + KV <= KC
               and a_max * int((cum[:, pos + size + KV] - cum[:, pos]).max()) <= EXACT_LIMIT):
            size += KV
        pos += size
        bounds.append(pos)
    return np.array(bounds, np.int64)


def chunk_bound_ok(w2: np.ndarray, w_off: int, a_max: int, bounds: np.ndarray) -> bool:
    """Whether every chunk [bounds[i], bounds[i+1]) of every row keeps a_max * sum|w + w_off| <= 2^24."""
    absw = np.abs(np.asarray(w2, np.int64) + w_off)
    return all(a_max * int(absw[:, a:b].sum(axis=1).max(initial=0)) <= EXACT_LIMIT for a, b in zip(bounds[:-1], bounds[1:]))


@njit(nogil=True, cache=True, fastmath=True)
def gemm_block(tile, b0, w2, w_col0, w_off, chunks, acc, accumulate):
    """acc[i, o] (+)= sum_k tile[b0 + i, k] * (w2[o, k - w_col0] + w_off), k over the chunks, exact in int32.

    For i < MR and every o; `accumulate` adds to acc instead of overwriting it.

    Reads MR rows from b0 even past the valid rows of the last block (the tile is a multiple of MR
    rows); the caller stores only the valid ones. Chunks are the outer loop so the MR row slices
    of one chunk stay in L1 while every output channel passes over them.
    """
    n_o = w2.shape[0]
    for c in range(chunks.shape[0] - 1):
        # slices from 0: a loop index known non-negative spares numba's wraparound select,
        # which would otherwise turn the loads into gathers
        k0, k1 = chunks[c], chunks[c + 1]
        x0 = tile[b0 + 0, k0:k1]
        x1 = tile[b0 + 1, k0:k1]
        x2 = tile[b0 + 2, k0:k1]
        x3 = tile[b0 + 3, k0:k1]
        x4 = tile[b0 + 4, k0:k1]
        x5 = tile[b0 + 5, k0:k1]
        x6 = tile[b0 + 6, k0:k1]
        x7 = tile[b0 + 7, k0:k1]
        for o in range(0, n_o - 1, 2):
            pc = w2[o, k0 - w_col0 : k1 - w_col0]
            qc = w2[o + 1, k0 - w_col0 : k1 - w_col0]
            c00 = F32(0.0)
            c01 = F32(0.0)
            c10 = F32(0.0)
            c11 = F32(0.0)
            c20 = F32(0.0)
            c21 = F32(0.0)
            c30 = F32(0.0)
            c31 = F32(0.0)
            c40 = F32(0.0)
            c41 = F32(0.0)
            c50 = F32(0.0)
            c51 = F32(0.0)
            c60 = F32(0.0)
            c61 = F32(0.0)
            c70 = F32(0.0)
            c71 = F32(0.0)
            for k in range(k1 - k0):
                u = F32(I32(I32(pc[k]) + w_off))
                v = F32(I32(I32(qc[k]) + w_off))
                x = x0[k]
                c00 += x * u
                c01 += x * v
                x = x1[k]
                c10 += x * u
                c11 += x * v
                x = x2[k]
                c20 += x * u
                c21 += x * v
                x = x3[k]
                c30 += x * u
                c31 += x * v
                x = x4[k]
                c40 += x * u
                c41 += x * v
                x = x5[k]
                c50 += x * u
                c51 += x * v
                x = x6[k]
                c60 += x * u
                c61 += x * v
                x = x7[k]
                c70 += x * u
                c71 += x * v
            if c == 0 and not accumulate:
                acc[0, o + 0] = I32(c00)
                acc[0, o + 1] = I32(c01)
                acc[1, o + 0] = I32(c10)
                acc[1, o + 1] = I32(c11)
                acc[2, o + 0] = I32(c20)
                acc[2, o + 1] = I32(c21)
                acc[3, o + 0] = I32(c30)
                acc[3, o + 1] = I32(c31)
                acc[4, o + 0] = I32(c40)
                acc[4, o + 1] = I32(c41)
                acc[5, o + 0] = I32(c50)
                acc[5, o + 1] = I32(c51)
                acc[6, o + 0] = I32(c60)
                acc[6, o + 1] = I32(c61)
                acc[7, o + 0] = I32(c70)
                acc[7, o + 1] = I32(c71)
            else:
                acc[0, o + 0] = I32(acc[0, o + 0] + I32(c00))
                acc[0, o + 1] = I32(acc[0, o + 1] + I32(c01))
                acc[1, o + 0] = I32(acc[1, o + 0] + I32(c10))
                acc[1, o + 1] = I32(acc[1, o + 1] + I32(c11))
                acc[2, o + 0] = I32(acc[2, o + 0] + I32(c20))
                acc[2, o + 1] = I32(acc[2, o + 1] + I32(c21))
                acc[3, o + 0] = I32(acc[3, o + 0] + I32(c30))
                acc[3, o + 1] = I32(acc[3, o + 1] + I32(c31))
                acc[4, o + 0] = I32(acc[4, o + 0] + I32(c40))
                acc[4, o + 1] = I32(acc[4, o + 1] + I32(c41))
                acc[5, o + 0] = I32(acc[5, o + 0] + I32(c50))
                acc[5, o + 1] = I32(acc[5, o + 1] + I32(c51))
                acc[6, o + 0] = I32(acc[6, o + 0] + I32(c60))
                acc[6, o + 1] = I32(acc[6, o + 1] + I32(c61))
                acc[7, o + 0] = I32(acc[7, o + 0] + I32(c70))
                acc[7, o + 1] = I32(acc[7, o + 1] + I32(c71))
        if n_o % 2 == 1:
            o = n_o - 1
            pc = w2[o, k0 - w_col0 : k1 - w_col0]
            c00 = F32(0.0)
            c10 = F32(0.0)
            c20 = F32(0.0)
            c30 = F32(0.0)
            c40 = F32(0.0)
            c50 = F32(0.0)
            c60 = F32(0.0)
            c70 = F32(0.0)
            for k in range(k1 - k0):
                u = F32(I32(I32(pc[k]) + w_off))
                c00 += x0[k] * u
                c10 += x1[k] * u
                c20 += x2[k] * u
                c30 += x3[k] * u
                c40 += x4[k] * u
                c50 += x5[k] * u
                c60 += x6[k] * u
                c70 += x7[k] * u
            if c == 0 and not accumulate:
                acc[0, o] = I32(c00)
                acc[1, o] = I32(c10)
                acc[2, o] = I32(c20)
                acc[3, o] = I32(c30)
                acc[4, o] = I32(c40)
                acc[5, o] = I32(c50)
                acc[6, o] = I32(c60)
                acc[7, o] = I32(c70)
            else:
                acc[0, o] = I32(acc[0, o] + I32(c00))
                acc[1, o] = I32(acc[1, o] + I32(c10))
                acc[2, o] = I32(acc[2, o] + I32(c20))
                acc[3, o] = I32(acc[3, o] + I32(c30))
                acc[4, o] = I32(acc[4, o] + I32(c40))
                acc[5, o] = I32(acc[5, o] + I32(c50))
                acc[6, o] = I32(acc[6, o] + I32(c60))
                acc[7, o] = I32(acc[7, o] + I32(c70))


# ------------------------------------------------------------------ register-blocked small-K conv
#
# CONV_2D with K = KH*KW*C up to SIMD_MAX_K: blocks of MR_SIMD output pixels x VW output channels
# whose float32 accumulators stay in vector registers over all K taps, no im2col and no scratch
# (the filter block, widened to float32, lives on the stack). Exact by the module docstring's
# argument when a_max * sum_k |w[o, k] + w_off| <= 2^24 for every o (`simd_exact`), which holds
# for every K <= 258 and, in practice, well beyond. numba's LLVM runs the loop vectorizer but not
# the SLP vectorizer, so the micro-kernel is written as vector IR (simd.py says why): an
# accumulator block at constant stack offsets that SROA promotes to registers.

from llvmlite import ir  # noqa: E402
from numba import types  # noqa: E402
from numba.extending import intrinsic  # noqa: E402

from edgert.kernels.simd import (  # noqa: E402
    F32_IR,
    I32_IR,
    VW,
    array_bytes,
    block_ptr,
    broadcast_mac,
    strided,
    tap_column,
)

MR_SIMD = 8  # output pixels per register block
SIMD_MAX_K = 512  # the float32 filter block [K, VW] on the stack: 32 KiB


def simd_exact(w2: np.ndarray, w_off: int, a_max: int) -> bool:
    """Whether every output channel's float32 sum over all of K is exact: a_max * sum|w + w_off| <= 2^24."""
    absw = np.abs(np.asarray(w2, np.int64) + w_off)
    return a_max * int(absw.sum(axis=1).max(initial=0)) <= EXACT_LIMIT


@intrinsic
def _qvmac(typingctx, acc, inp, xbyte, ix0, xstep, wd, colbytes, wt, wi, in_off, mr, checked):
    """acc[p*VW : (p+1)*VW] += float(x_p + in_off) * wt[wi : wi+VW] for p < mr (literal), x_p the
    8-bit code at byte offset xbyte + (ix0 + p*xstep) * colbytes of inp's data (sign- or zero-extended
    by inp's dtype); with checked (literal 1) a column outside [0, wd) contributes 0 and is not read.
    wt points at float32. Multiply-adds may fuse ('contract'): exact either way (see simd_exact)."""
    if not isinstance(mr, types.IntegerLiteral) or not isinstance(checked, types.IntegerLiteral):
        return None
    rows, check = mr.literal_value, bool(checked.literal_value)
    signed = inp.dtype.signed

    def codegen(context, builder, sig, args):
        acc_p, a_inp, xb, ix0_v, step_v, wd_v, col_v, wt_p, wi_v, off_v = args[:10]
        vt = ir.VectorType(F32_IR, VW)
        wv = builder.load(block_ptr(builder, wt_p, wi_v, vt), align=4)
        base = array_bytes(context, builder, sig.args[1], a_inp)
        off32 = builder.trunc(off_v, I32_IR)
        for p in range(rows):
            ix, valid = tap_column(builder, ix0_v, step_v, p, wd_v, check)
            code = builder.load(builder.gep(base, [builder.add(xb, builder.mul(ix, col_v))]))
            wide = builder.sext(code, I32_IR) if signed else builder.zext(code, I32_IR)
            x = builder.sitofp(builder.add(wide, off32), F32_IR)
            if check:
                x = builder.select(valid, x, ir.Constant(F32_IR, 0.0))
            broadcast_mac(builder, acc_p, p, x, wv, contract=True)
        return context.get_dummy_value()

    sig = types.none(acc, inp, types.int64, types.int64, types.int64, types.int64, types.int64, wt, types.int64,
                     types.int64, mr, checked)
    return sig, codegen


@njit(inline="always")
def _qsimd_taps(acc_p, inp, wt_p, n, iy0, ky0, ky1, kw, c, px, sw, dh, dw, pl, in_off, mr):
    # acc[mr pixels from column px] = sum over the valid (ky, kx, ci) taps; mr is 8, 4 or 1.
    s_n, s_h, s_w, s_c = inp.strides
    wd = inp.shape[2]
    for ky in range(ky0, ky1):
        rowb = n * s_n + (iy0 + ky * dh) * s_h
        for kx in range(kw):
            ix0 = px * sw - pl + kx * dw
            inside = ix0 >= 0 and ix0 + (mr - 1) * sw < wd
            wi = (ky * kw + kx) * c * VW
            if mr == 8:
                if inside:
                    for ci in range(c):
                        _qvmac(acc_p, inp, rowb + ci * s_c, ix0, sw, wd, s_w, wt_p, wi + ci * VW, in_off, 8, 0)
                else:
                    for ci in range(c):
                        _qvmac(acc_p, inp, rowb + ci * s_c, ix0, sw, wd, s_w, wt_p, wi + ci * VW, in_off, 8, 1)
            elif mr == 4:
                if inside:
                    for ci in range(c):
                        _qvmac(acc_p, inp, rowb + ci * s_c, ix0, sw, wd, s_w, wt_p, wi + ci * VW, in_off, 4, 0)
                else:
                    for ci in range(c):
                        _qvmac(acc_p, inp, rowb + ci * s_c, ix0, sw, wd, s_w, wt_p, wi + ci * VW, in_off, 4, 1)
            elif inside:
                for ci in range(c):
                    _qvmac(acc_p, inp, rowb + ci * s_c, ix0, sw, wd, s_w, wt_p, wi + ci * VW, in_off, 1, 0)


# Floats of the converted input rows of _qconv_simd's row-buffer form (on the stack, 64 KiB):
# the kh input rows one output row reads, as float32(x + in_off), zero-padded left and right.
XBUF = 16384


@intrinsic
def _qvmacf(typingctx, acc, xbuf, xi, xstep, wt, wi, mr):
    """acc[p*VW : (p+1)*VW] += xbuf[xi + p*xstep] * wt[wi : wi+VW] for p < mr (literal); xbuf and wt
    point at float32. Multiply-adds may fuse ('contract'): exact either way (see simd_exact)."""
    if not isinstance(mr, types.IntegerLiteral):
        return None
    rows = mr.literal_value

    def codegen(context, builder, sig, args):
        acc_p, xb_p, xi_v, step_v, wt_p, wi_v = args[:6]
        wv = builder.load(block_ptr(builder, wt_p, wi_v, ir.VectorType(F32_IR, VW)), align=4)
        for p in range(rows):
            xi = strided(builder, xi_v, step_v, p)
            broadcast_mac(builder, acc_p, p, builder.load(builder.gep(xb_p, [xi])), wv, contract=True)
        return context.get_dummy_value()

    sig = types.none(acc, xbuf, types.int64, types.int64, wt, types.int64, mr)
    return sig, codegen


@njit(inline="always")
def _qsimd_taps_rows(acc_p, xb_p, wt_p, ky0, ky1, kw, c, wp, px, sw, dw, mr):
    # acc[mr pixels from column px] = sum over the valid rows' (ky, kx, ci) taps, x from the row buffer.
    for ky in range(ky0, ky1):
        for kx in range(kw):
            xi = (ky * wp + px * sw + kx * dw) * c
            wi = (ky * kw + kx) * c * VW
            if mr == 8:
                for ci in range(c):
                    _qvmacf(acc_p, xb_p, xi + ci, sw * c, wt_p, wi + ci * VW, 8)
            elif mr == 4:
                for ci in range(c):
                    _qvmacf(acc_p, xb_p, xi + ci, sw * c, wt_p, wi + ci * VW, 4)
            else:
                for ci in range(c):
                    _qvmacf(acc_p, xb_p, xi + ci, sw * c, wt_p, wi + ci * VW, 1)
