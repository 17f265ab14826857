"""int8 CONV_2D and FULLY_CONNECTED through 4-byte integer dot products (x86 AVX512-VNNI `vpdpbusd`), exact in int32.

Why: the float32-exact kernels of qgemm.py do one multiply-add per lane and instruction; one
`vpdpbusd` does four (unsigned byte x signed byte, summed into an int32 lane), so a block of
16 output channels takes 64 multiply-adds per instruction, the way LiteRT's XNNPACK computes int8.

Arithmetic (exact, no bound needed): the reference accumulator of output channel o is
    acc_o = sum_k (x_k + in_off) * w_ok          (int32, w_off = 0: int8 filters are symmetric)
The kernels take int8 input (uint8 convs have uint8 filters and stay on the portable paths) and
store every input code as the unsigned byte b = x + 128 (BYTE_OFFSET), then compute the integer
sum S_o = sum_k b_k * w_ok with the instruction (int32 lanes; |S_o| <= K * 255 * 128 < 2^31 for
K < 65,793). Then
    acc_o = S_o + (in_off - 128) * sum_k w_ok
so the bias the kernel adds is corr_o = bias_o + (in_off - 128) * sum_k w_ok, computed once at
bind (conv.py). Padding taps must contribute (x + in_off) = 0, i.e. b = 128 - in_off; the kernel
writes that byte into the padding of its row buffer and sums every tap (the correction assumes all K
taps are present). All additions wrap in int32 like the C++ reference, so the result equals the
reference accumulator bit for bit and `fixedpoint.requantize` runs on it unchanged.

Three kernels, all without arena scratch (their buffers are on the stack):
- qconv_dot, convs with 4+ output pixels. The filter is packed per call as [16-channel block,
  group of 4 bytes, 16 lanes, 4 bytes], so one 64-byte load feeds a group to all 16 lanes. A
  filter row's kw*c taps are contiguous input bytes (NHWC), so groups run across pixel
  boundaries (a 3-channel stem: 3 groups per row, not 3 taps x 4); with dilation each tap is
  its own segment. The input rows are kept in a ring of KH rows as bytes b, padded left and right
  with the padding byte, each row converted once; a tap group is a 4-byte load broadcast to the
  lanes. Register block: 8 output pixels x 16 or 32 channels. 1x1 stride-1 convs run an image as
  one long row. Requantization in vector IR, 16 bytes stored at a time.
- qgemv, convs with 1-3 output pixels and FULLY_CONNECTED: the filter rows as stored, lanes
  along K, 8 output channels at a time, one reduction tree for their 8 sums.
- qfc_chain: consecutive FCs as one call, intermediates on the stack.

Only on a CPU with AVX512-VNNI (`has_vnni()`, what numba compiles for; `use_dot_product()`). Elsewhere the intrinsic
emits the same sums in plain vector IR (correct, not fast), and conv.py does not choose this path.
"""

from __future__ import annotations

import os

import numba
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from edgert.kernels.fixedpoint import requantize
from edgert.kernels.matvec import shared_buffer
from edgert.kernels.simd import (
    I32_IR,
    I64_IR,
    VW,
    array_bytes,
    block_ptr,
    byte_ptr,
    splat,
    stack_buf,
    stack_buf_dyn,
    strided,
    vrequantize,
)

I8_IR = ir.IntType(8)
BYTE_OFFSET = 128  # added to each int8 input code: vpdpbusd takes its input bytes unsigned
# Bytes of the per-call stack buffers: the packed filter (all output channels) and the row ring.
MAX_PACKED_FILTER = 512 * 1024
MAX_ROW_BUFFER = 64 * 1024
MAX_KH = 32  # rows of the ring


def _target_features() -> str:
    """The CPU features numba compiles for (its JIT codegen's), e.g. '+avx512vnni,...'."""
    from numba.core.registry import cpu_target

    codegen = cpu_target.target_context.codegen()
    feats = getattr(codegen, "_tm_features", None)
    if feats is None:  # pragma: no cover - numba internals moved
        import llvmlite.binding as llvm

        feats = llvm.get_host_cpu_features().flatten()
    return feats


def has_vnni() -> bool:
    """Whether the kernels compile for a CPU with AVX512-VNNI (vpdpbusd on 512-bit registers)."""
    return "+avx512vnni" in _target_features().split(",")


def use_dot_product() -> bool:
    """Whether int8 convs and FCs take this module's kernels: on a VNNI CPU, unless the environment
    says EDGERT_DOT_PRODUCT=0. They need no kernel scratch where the portable kernels do, so plans
    (and arena sizes) differ between CPUs with and without; the switch makes them the portable
    ones, e.g. to compare with an ARM board or to write a plan file for one."""
    return os.environ.get("EDGERT_DOT_PRODUCT", "1") != "0" and has_vnni()


def dot_segments(kh: int, kw: int, c: int, dw: int) -> tuple[int, int]:
    """(segments, bytes per segment) of one output pixel's taps in the row ring: with dw == 1 the
    kw*c taps of a filter row are contiguous input bytes (one segment per row, grouped by 4 across
    pixel boundaries, extra filter bytes 0); with dilation one segment per (ky, kx) of c bytes."""
    return (kh, kw * c) if dw == 1 else (kh * kw, c)


def dot_fits(n_o: int, kh: int, kw: int, c: int, in_w: int, out_w: int, sw: int, dw: int, pl: int) -> bool:
    """Whether qconv_dot can take the conv: dilated filters need C % 4 == 0 (4-byte groups within
    a pixel), and the packed filter and the row ring fit the kernel's stack buffers."""
    if dw != 1 and c % 4:
        return False
    segs, seg_len = dot_segments(kh, kw, c, dw)
    packed = -(-n_o // VW) * segs * -(-seg_len // 4) * 4 * VW
    wp = max(in_w + pl, (out_w - 1) * sw + (kw - 1) * dw + 1)
    return kh <= MAX_KH and packed <= MAX_PACKED_FILTER and kh * (wp * c + 4) <= MAX_ROW_BUFFER


def _dot4(builder, acc, xv, wv, vnni):
    """acc (<16 x i32>) + per lane the sum of the 4 products unsigned xv byte x signed wv byte."""
    bt = ir.VectorType(I8_IR, 4 * VW)
    if vnni:
        fnty = ir.FunctionType(acc.type, [acc.type, bt, bt])
        fn = builder.module.declare_intrinsic("llvm.x86.avx512.vpdpbusd.512", fnty=fnty)
        return builder.call(fn, [acc, builder.bitcast(xv, bt), builder.bitcast(wv, bt)])
    wide = ir.VectorType(I32_IR, 4 * VW)
    prod = builder.mul(builder.zext(builder.bitcast(xv, bt), wide), builder.sext(builder.bitcast(wv, bt), wide))
    for i in range(4):
        mask = ir.Constant(ir.VectorType(I32_IR, VW), [4 * j + i for j in range(VW)])
        acc = builder.add(acc, builder.shuffle_vector(prod, ir.Constant(wide, None), mask))
    return acc


def _acc_ptr(builder, acc_p, p, v, nv, vt):
    # accumulator block of pixel p, channel vector v: acc[(p*nv + v)*VW : +VW]
    return block_ptr(builder, acc_p, (p * nv + v) * VW, vt)


def _literals(*args):
    return None if not all(isinstance(a, types.IntegerLiteral) for a in args) else [a.literal_value for a in args]


@intrinsic
def _qdot(typingctx, acc, xb, xi, xstep, wb, wi, wstep, mr, nv):
    """For p < mr, v < nv (literals): acc block (p, v) (int32) += dot4(bytes xb[xi + p*xstep : +4],
    wb[wi + v*wstep : +64]): the 4 input bytes of pixel p broadcast to all 16 lanes, each lane
    summing their products with its own 4 filter bytes (unsigned x signed, exact in int32)."""
    lits = _literals(mr, nv)
    if lits is None:
        return None
    rows, nvec = lits

    def codegen(context, builder, sig, args):
        acc_p, xb_p, xi_v, step_v, wb_p, wi_v, ws_v = args[:7]
        vnni = has_vnni()
        vt = ir.VectorType(I32_IR, VW)
        w32 = builder.bitcast(wb_p, I32_IR.as_pointer())
        wvs = [builder.load(block_ptr(builder, w32, builder.ashr(strided(builder, wi_v, ws_v, v), ir.Constant(I64_IR, 2)),
                                      vt), align=4) for v in range(nvec)]
        for p in range(rows):
            xi = strided(builder, xi_v, step_v, p)
            x4 = builder.load(builder.bitcast(builder.gep(xb_p, [xi]), I32_IR.as_pointer()), align=1)
            xv = splat(builder, x4, vt)
            for v in range(nvec):
                ap = _acc_ptr(builder, acc_p, p, v, nvec, vt)
                builder.store(_dot4(builder, builder.load(ap, align=4), xv, wvs[v], vnni), ap, align=4)
        return context.get_dummy_value()

    sig = types.none(acc, xb, types.int64, types.int64, wb, types.int64, types.int64, mr, nv)
    return sig, codegen


def _qp_vec(builder, qp_p, qoff, k, vt):
    # row k (0 corr, 1 multiplier, 2 shift) of the block whose parameters start at element qoff
    return builder.load(block_ptr(builder, qp_p, builder.add(qoff, ir.Constant(I64_IR, k * VW)), vt), align=4)


@intrinsic
def _acc_zero(typingctx, acc, n):
    """acc[0:n] = 0 (int32, literal n a multiple of 16): vector stores, so the blocks stay in registers."""
    if not isinstance(n, types.IntegerLiteral):
        return None
    count = n.literal_value

    def codegen(context, builder, sig, args):
        vt = ir.VectorType(I32_IR, VW)
        for off in range(0, count, VW):
            builder.store(ir.Constant(vt, None), block_ptr(builder, args[0], off, vt), align=4)
        return context.get_dummy_value()

    return types.none(acc, n), codegen


@intrinsic
def _acc_init(typingctx, acc, qp, qoff, qstep, mr, nv):
    """acc block (p, v) = the corr row of block v's parameters (qp + qoff + v*qstep) for p < mr,
    v < nv (literals): the sums start from the bias and the zero-point correction."""
    lits = _literals(mr, nv)
    if lits is None:
        return None
    rows, nvec = lits

    def codegen(context, builder, sig, args):
        acc_p, qp_p, qo_v, qs_v = args[:4]
        vt = ir.VectorType(I32_IR, VW)
        for v in range(nvec):
            corr = _qp_vec(builder, qp_p, strided(builder, qo_v, qs_v, v), 0, vt)
            for p in range(rows):
                builder.store(corr, _acc_ptr(builder, acc_p, p, v, nvec, vt), align=4)
        return context.get_dummy_value()

    return types.none(acc, qp, types.int64, types.int64, mr, nv), codegen


@intrinsic
def _requant_store(typingctx, acc, qp, qoff, out_zp, lo, hi, dst, dbyte, dstep, nb, mr, nv, v):
    """For p < mr (literals mr, nv, v): acc block (p, v) requantized (simd.vrequantize with the
    multiplier and shift rows of the parameters at qp + qoff) and its first nb <= VW bytes stored
    at byte dbyte + p*dstep of dst's data (the output, or a code buffer); a masked store, so a
    block of fewer channels writes nothing past them."""
    lits = _literals(mr, nv, v)
    if lits is None:
        return None
    rows, nvec, vec = lits

    def codegen(context, builder, sig, args):
        acc_p, qp_p, qo_v, zp_v, lo_v, hi_v, dst_a, db_v, ds_v, nb_v = args[:10]
        vt = ir.VectorType(I32_IR, VW)
        mult, shift = _qp_vec(builder, qp_p, qo_v, 1, vt), _qp_vec(builder, qp_p, qo_v, 2, vt)
        base = array_bytes(context, builder, sig.args[6], dst_a)
        bt = ir.VectorType(I8_IR, VW)
        mask = builder.icmp_signed("<", ir.Constant(bt, list(range(VW))), splat(builder, builder.trunc(nb_v, I8_IR), bt))
        fnty = ir.FunctionType(ir.VoidType(), [bt, bt.as_pointer(), I32_IR, mask.type])
        mstore = cgutils.get_or_insert_function(builder.module, fnty, "llvm.masked.store.v16i8.p0")
        for p in range(rows):
            x = builder.load(_acc_ptr(builder, acc_p, p, vec, nvec, vt), align=4)
            q = builder.trunc(vrequantize(builder, x, mult, shift, zp_v, lo_v, hi_v), bt)
            ptr = byte_ptr(builder, base, strided(builder, db_v, ds_v, p), bt)
            builder.call(mstore, [q, ptr, ir.Constant(I32_IR, 1), mask])
        return context.get_dummy_value()

    sig = types.none(acc, qp, types.int64, types.int64, types.int64, types.int64, dst, types.int64, types.int64,
                     types.int64, mr, nv, v)
    return sig, codegen


@njit(inline="always")
def _block(acc_p, xb_p, xoff, ng, wb_p, blk, qp_p, ob, px, pstep, mr, nv):
    # acc (mr pixels from column px) x (nv channel vectors from block ob) = corr + the sums of all
    # ng 4-byte groups: group i reads the ring from byte xoff[i] + px*pstep and block ob's filter
    # from byte ob*blk + 64*i (one flat loop: segments are short, e.g. 3 groups for a 3-channel
    # stem, too short for a loop nest). Literal (mr, nv) pairs: (8, 2), (8, 1), (4, 1), (1, 1).
    x0 = px * pstep
    wbase = ob * blk
    if mr == 8 and nv == 2:
        _acc_init(acc_p, qp_p, ob * 3 * VW, 3 * VW, 8, 2)
        for i in range(ng):
            _qdot(acc_p, xb_p, xoff[i] + x0, pstep, wb_p, wbase + 64 * i, blk, 8, 2)
    elif mr == 8:
        _acc_init(acc_p, qp_p, ob * 3 * VW, 3 * VW, 8, 1)
        for i in range(ng):
            _qdot(acc_p, xb_p, xoff[i] + x0, pstep, wb_p, wbase + 64 * i, blk, 8, 1)
    elif mr == 4:
        _acc_init(acc_p, qp_p, ob * 3 * VW, 3 * VW, 4, 1)
        for i in range(ng):
            _qdot(acc_p, xb_p, xoff[i] + x0, pstep, wb_p, wbase + 64 * i, blk, 4, 1)
    else:
        _acc_init(acc_p, qp_p, ob * 3 * VW, 3 * VW, 1, 1)
        for i in range(ng):
            _qdot(acc_p, xb_p, xoff[i] + x0, pstep, wb_p, wbase + 64 * i, blk, 1, 1)


@njit(inline="always")
def _store(acc_p, qp_p, ob, out_zp, lo, hi, out, codes, n, oy, px, n_o, mr, nv, v):
    # requantize acc block v of (mr, nv) into out[n, oy, px:px+mr, ob*VW:...]: a masked 16-byte
    # store per pixel straight into the output when its channels are contiguous, else by way of codes
    s_n, s_h, s_w, s_c = out.strides
    o0 = ob * VW
    nb = min(VW, n_o - o0)
    qoff = ob * 3 * VW
    if s_c == 1:
        _requant_into(acc_p, qp_p, qoff, out_zp, lo, hi, out, n * s_n + oy * s_h + px * s_w + o0, s_w, nb, mr, nv, v)
        return
    _requant_into(acc_p, qp_p, qoff, out_zp, lo, hi, codes, 0, VW, VW, mr, nv, v)
    for p in range(mr):
        for j in range(nb):
            out[n, oy, px + p, o0 + j] = codes[p * VW + j]


@njit(inline="always")
def _requant_into(acc_p, qp_p, qoff, out_zp, lo, hi, dst, dbyte, dstep, nb, mr, nv, v):
    # _requant_store with the literal (mr, nv, v) of the block: (8, 2, 0|1), (8|4|1, 1, 0)
    if mr == 8 and nv == 2:
        if v == 0:
            _requant_store(acc_p, qp_p, qoff, out_zp, lo, hi, dst, dbyte, dstep, nb, 8, 2, 0)
        else:
            _requant_store(acc_p, qp_p, qoff, out_zp, lo, hi, dst, dbyte, dstep, nb, 8, 2, 1)
    elif mr == 8:
        _requant_store(acc_p, qp_p, qoff, out_zp, lo, hi, dst, dbyte, dstep, nb, 8, 1, 0)
    elif mr == 4:
        _requant_store(acc_p, qp_p, qoff, out_zp, lo, hi, dst, dbyte, dstep, nb, 4, 1, 0)
    else:
        _requant_store(acc_p, qp_p, qoff, out_zp, lo, hi, dst, dbyte, dstep, nb, 1, 1, 0)


@njit(nogil=True, cache=True)
def _pack_filter(w2, w32, wb, segs, seg_len, gs):
    # wb[ob, segment, group, lane, byte] = w2[ob*VW + lane, segment*seg_len + 4*group + byte];
    # bytes past seg_len and absent lanes 0. w32: the filter as int32 words when seg_len % 4 == 0
    # (then a word moves at once), else empty.
    n_o = w2.shape[0]
    blk = segs * gs * VW * 4
    for i in range(wb.size):
        wb[i] = np.int8(0)
    if w32.shape[0] == n_o:
        wb32 = wb.view(np.int32)
        for o in range(n_o):
            ob, j = o // VW, o % VW
            for sg in range(segs):
                for g in range(gs):
                    wb32[((ob * segs + sg) * gs + g) * VW + j] = w32[o, sg * gs + g]
        return
    for o in range(n_o):
        ob, j = o // VW, o % VW
        for sg in range(segs):
            for q in range(seg_len):
                wb[ob * blk + ((sg * gs + q // 4) * VW + j) * 4 + q % 4] = w2[o, sg * seg_len + q]


@njit(inline="always")
def _fill_row(xb, start, flat, inp, n, iy, pad):
    # ring row from byte `start`: input row iy as bytes x + BYTE_OFFSET, or `pad` outside the image
    n_b, h, wd, c = inp.shape
    dst = xb[start : start + wd * c]  # slices: the loops index by the range's own variable, no
    if iy < 0 or iy >= h:             # negative-index wraparound, so LLVM vectorizes them
        for i in range(wd * c):
            dst[i] = pad
    elif flat.size > 0:
        src = flat[(n * h + iy) * wd * c : (n * h + iy + 1) * wd * c]
        for i in range(wd * c):
            dst[i] = np.uint8(np.int32(src[i]) + BYTE_OFFSET)
    else:
        for ix in range(wd):
            for ci in range(c):
                dst[ix * c + ci] = np.uint8(np.int32(inp[n, iy, ix, ci]) + BYTE_OFFSET)


@njit(nogil=True, cache=True)
def qconv_dot(inp, flat, w2, w32, corr, out, mult, shift, out_zp, lo, hi, kh, kw, sh, sw, dh, dw, pt, pl, in_off):
    """int8/uint8 CONV_2D (NHWC input, filter as [O, KH*KW*C] rows) into `out` (any strides),
    exact int32 sums by 4-byte dot products (module docstring). `flat`: the input as one
    contiguous 1-D array when it is C-contiguous (rows are then converted by a vector loop),
    else empty; `w32`: the filter rows as int32 words when a segment is a multiple of 4 bytes,
    else empty (see dot_fits and dot_segments for what the caller checked)."""
    n_b, h, wd, c = inp.shape
    n_o = w2.shape[0]
    oh, ow = out.shape[1], out.shape[2]
    n_ob = (n_o + VW - 1) // VW
    if dw == 1:
        segs, seg_len, seg_row, seg_col = kh, kw * c, 1, 0
    else:
        segs, seg_len, seg_row, seg_col = kh * kw, c, kw, dw * c
    gs = (seg_len + 3) // 4
    blk = segs * gs * VW * 4
    pad = np.uint8(BYTE_OFFSET - in_off)
    acc_p = stack_buf(256, np.int32)  # 8 pixels x 2 channel blocks
    codes = numba.carray(stack_buf(128, np.uint8), (128,))
    wb_p = stack_buf_dyn(n_ob * blk, np.int8)
    _pack_filter(w2, w32, numba.carray(wb_p, (n_ob * blk,)), segs, seg_len, gs)
    # corr, multiplier, shift of each block's VW channels (absent ones repeat the last)
    qp_p = stack_buf_dyn(n_ob * 3 * VW, np.int32)
    qp = numba.carray(qp_p, (n_ob, 3, VW))
    for ob in range(n_ob):
        for j in range(VW):
            o = min(ob * VW + j, n_o - 1)
            qp[ob, 0, j] = corr[o]
            qp[ob, 1, j] = mult[o]
            qp[ob, 2, j] = shift[o]
    # Ring of kh rows, each: pl padding pixels, the input row, padding to wp pixels, 4 slack
    # bytes (a segment's last group may read up to 3 bytes past it, against 0 filter bytes).
    # With dh == 1 consecutive output rows share kh - 1 input rows: slot iy % kh keeps each.
    wp = max(wd + pl, (ow - 1) * sw + (kw - 1) * dw + 1)
    rowb = wp * c + 4
    xb_p = stack_buf_dyn(kh * rowb, np.uint8)
    xb = numba.carray(xb_p, (kh * rowb,))
    for i in range(kh * rowb):
        xb[i] = pad
    held = numba.carray(stack_buf(32, np.int64), (32,))  # MAX_KH: input row in each slot
    rows = numba.carray(stack_buf(32, np.int64), (32,))  # ring byte offset of filter row ky
    ng = segs * gs
    xoff = numba.carray(stack_buf_dyn(ng, np.int64), (ng,))  # ring byte offset of each group
    pstep = sw * c
    for n in range(n_b):
        for i in range(kh):
            held[i] = -(1 << 40)
        for oy in range(oh):
            iy0 = oy * sh - pt
            for ky in range(kh):
                iy = iy0 + ky * dh
                slot = iy % kh if dh == 1 else ky
                if held[slot] != iy:
                    _fill_row(xb, slot * rowb + pl * c, flat, inp, n, iy, pad)
                    held[slot] = iy
                rows[ky] = slot * rowb
            for sg in range(segs):
                for g in range(gs):
                    xoff[sg * gs + g] = rows[sg // seg_row] + (sg % seg_row) * seg_col + 4 * g
            # pairs of channel blocks share each broadcast input word (16 accumulators)
            ob = 0
            while ob < n_ob:
                pair = ob + 1 < n_ob
                px = 0
                while px < ow:
                    left = ow - px
                    mr = 8 if left >= 8 else (4 if left >= 4 else 1)
                    if pair and mr == 8:
                        _block(acc_p, xb_p, xoff, ng, wb_p, blk, qp_p, ob, px, pstep, 8, 2)
                        _store(acc_p, qp_p, ob, out_zp, lo, hi, out, codes, n, oy, px, n_o, 8, 2, 0)
                        _store(acc_p, qp_p, ob + 1, out_zp, lo, hi, out, codes, n, oy, px, n_o, 8, 2, 1)
                    else:
                        for b in range(ob, ob + (2 if pair else 1)):
                            _block(acc_p, xb_p, xoff, ng, wb_p, blk, qp_p, b, px, pstep, mr, 1)
                            _store(acc_p, qp_p, b, out_zp, lo, hi, out, codes, n, oy, px, n_o, mr, 1, 0)
                    px += mr
                ob += 2 if pair else 1


# ------------------------------------------------ one output pixel at a time (matrix-vector)
#
# Streaming models (wake words) and classifier heads run int8 convs with 1-3 output pixels and
# FULLY_CONNECTED with a row or a few. Packing the filter per call (qconv_dot) would cost as much as
# the sums there, so these take the filter rows as stored: per output channel, 64 input bytes
# against 64 filter bytes per vpdpbusd (lanes along K), then one horizontal add. Same arithmetic
# as above: bytes x + 128 against the int8 filter, the zero-point correction in `corr`.

GEMV_MAX_K = 64 * 1024  # bytes of one output pixel's input patch (a stack buffer)


@intrinsic
def _dot64(typingctx, acc, ub, ui, w2, wi, wstep, cnt, rows):
    """For r < rows (literal): acc block r (<16 x i32> at acc + 16r) += dot4 lanes of the 64 bytes
    ub[ui:] (uint8, read whole) against the cnt <= 64 bytes at byte wi + r*wstep of w2's data
    (int8 filter row r of the block; bytes past cnt read as 0 and not loaded). Several rows at
    once: independent accumulator chains, and each input chunk loaded once."""
    if not isinstance(rows, types.IntegerLiteral):
        return None
    n_rows = rows.literal_value

    def codegen(context, builder, sig, args):
        acc_p, ub_p, ui_v, w_a, wi_v, ws_v, cnt_v = args[:7]
        bt = ir.VectorType(I8_IR, 4 * VW)
        vt = ir.VectorType(I32_IR, VW)
        xv = builder.load(builder.bitcast(builder.gep(ub_p, [ui_v]), bt.as_pointer()), align=1)
        # lane i loads when i < cnt: one byte compare (cnt <= 64 fits a byte)
        lanes = ir.Constant(bt, list(range(4 * VW)))
        mask = builder.icmp_signed("<", lanes, splat(builder, builder.trunc(cnt_v, I8_IR), bt))
        base = array_bytes(context, builder, sig.args[3], w_a)
        fnty = ir.FunctionType(bt, [bt.as_pointer(), I32_IR, mask.type, bt])
        mload = cgutils.get_or_insert_function(builder.module, fnty, "llvm.masked.load.v64i8.p0")
        vnni = has_vnni()
        for r in range(n_rows):
            wptr = byte_ptr(builder, base, strided(builder, wi_v, ws_v, r), bt)
            wv = builder.call(mload, [wptr, ir.Constant(I32_IR, 1), mask, ir.Constant(bt, None)])
            ap = block_ptr(builder, acc_p, r * VW, vt)
            builder.store(_dot4(builder, builder.load(ap, align=4), xv, wv, vnni), ap, align=4)
        return context.get_dummy_value()

    return types.none(acc, ub, types.int64, w2, types.int64, types.int64, types.int64, rows), codegen


@intrinsic
def _hsum(typingctx, acc, r):
    """The sum of the 16 int32 lanes of acc block r (at acc + 16r), as int32 (wrapping)."""
    def codegen(context, builder, sig, args):
        vt = ir.VectorType(I32_IR, VW)
        v = builder.load(block_ptr(builder, args[0], builder.mul(args[1], ir.Constant(I64_IR, VW)), vt), align=4)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(I32_IR, [vt]), "llvm.vector.reduce.add.v16i32")
        return builder.call(fn, [v])

    return types.int32(acc, types.int64), codegen


@intrinsic
def _hsum8(typingctx, acc, sums, o):
    """sums[o + r] = the sum of the 16 int32 lanes of acc block r, r < 8 (wrapping): a reduction
    tree over the 8 blocks together (halves of pairs added, then quarters, ...), about 30 vector
    instructions instead of 8 separate horizontal adds."""
    def codegen(context, builder, sig, args):
        acc_p, sums_a, o_v = args
        vt = ir.VectorType(I32_IR, VW)

        def shuf(a, b, idx):
            return builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(I32_IR, len(idx)), idx))

        vs = [builder.load(block_ptr(builder, acc_p, r * VW, vt), align=4) for r in range(8)]
        for width in (8, 4, 2):  # lanes per block after this level
            lo = [i + j for i in range(0, 32, 2 * width) for j in range(width)]
            hi = [i + width + j for i in range(0, 32, 2 * width) for j in range(width)]
            vs = [builder.add(shuf(a, b, lo), shuf(a, b, hi)) for a, b in zip(vs[::2], vs[1::2])]
        (v,) = vs  # lanes 2r, 2r+1: block r's last two partial sums
        total = builder.add(shuf(v, v, list(range(0, 16, 2))), shuf(v, v, list(range(1, 16, 2))))
        base = array_bytes(context, builder, sig.args[1], sums_a)
        ptr = byte_ptr(builder, base, builder.mul(o_v, ir.Constant(I64_IR, 4)), total.type)
        builder.store(total, ptr, align=4)
        return context.get_dummy_value()

    return types.none(acc, sums, types.int64), codegen


@njit(nogil=True, cache=True)
def qgemv(inp, w2, corr, out, mult, shift, out_zp, lo, hi, single, kh, kw, sh, sw, dh, dw, pt, pl, in_off):
    """int8 CONV_2D (or FULLY_CONNECTED as a 1x1 conv over [rows, 1, 1, K]) one output pixel at a
    time: its input patch as bytes x + 128 (padding taps 128 - in_off, i.e. x + in_off = 0) on the
    stack, a vpdpbusd dot product per output channel against the filter row as stored, then
    requantize (`single`: FULLY_CONNECTED's single rounding) into out[n, oy, ox, :]."""
    n_b, h, wd, c = inp.shape
    n_o, k = w2.shape
    oh, ow = out.shape[1], out.shape[2]
    kp = (k + 63) // 64 * 64
    ub_p = stack_buf_dyn(kp, np.uint8)
    ub = numba.carray(ub_p, (kp,))
    acc_p = stack_buf(128, np.int32)
    sums = numba.carray(stack_buf_dyn(n_o, np.int32), (n_o,))
    s_o = w2.strides[0]
    pad = np.uint8(BYTE_OFFSET - in_off)
    for i in range(k, kp):
        ub[i] = np.uint8(0)
    for n in range(n_b):
        for oy in range(oh):
            for ox in range(ow):
                for ky in range(kh):
                    iy = oy * sh - pt + ky * dh
                    for kx in range(kw):
                        ix = ox * sw - pl + kx * dw
                        t = (ky * kw + kx) * c
                        if iy < 0 or iy >= h or ix < 0 or ix >= wd:
                            for ci in range(c):
                                ub[t + ci] = pad
                        else:
                            for ci in range(c):
                                ub[t + ci] = np.uint8(np.int32(inp[n, iy, ix, ci]) + BYTE_OFFSET)
                o = 0
                while o < n_o:
                    if o + 8 <= n_o:
                        _acc_zero(acc_p, 128)
                        for k0 in range(0, k, 64):
                            _dot64(acc_p, ub_p, k0, w2, o * s_o + k0, s_o, min(64, k - k0), 8)
                        _hsum8(acc_p, sums, o)
                        o += 8
                    else:
                        _acc_zero(acc_p, 16)
                        for k0 in range(0, k, 64):
                            _dot64(acc_p, ub_p, k0, w2, o * s_o + k0, s_o, min(64, k - k0), 1)
                        sums[o] = _hsum(acc_p, 0)
                        o += 1
                dst = out[n, oy, ox]
                for o in range(n_o):
                    dst[o] = requantize(np.int32(np.int64(sums[o]) + corr[o]), mult[o], shift[o], out_zp, lo, hi,
                                        single)


# ------------------------------------------------ chains of int8 FULLY_CONNECTED
#
# An MLP's layers (e.g. the FC autoencoder: 10 layers of 128-640) cost more in per-step call
# overhead than in sums. A chain of int8 FCs whose intermediates only the next layer reads runs
# as one step: the intermediate codes never leave the stack (as bytes + 128, ready for the next
# layer's dot products), the filters are read in place from one span of the model file, and the
# per-layer constants (corr, multiplier, shift) sit in one packed int32 array.

QCHAIN_HEAD = 3  # layers, rows, widest layer input or output
QCHAIN_REC = 7  # per layer: K, outputs, filter byte offset in the span, constants offset, zp, lo, hi


@njit(nogil=True, cache=True)
def qfc_chain(x, out, wspan, qp, prog):
    """int8 FC layers in a row (program `prog`, see bind_qchain): x [B, K0] -> ... -> out
    [B, O_last]; layer l's filter is the [O, K] bytes at prog's offset into wspan, its corr,
    multiplier and shift qp[off : off + 3*O]; every layer rounds once, as LiteRT's FC."""
    n_layers, n_b, width = prog[0], prog[1], prog[2]
    kp = (width + 63) // 64 * 64
    ub_a = stack_buf_dyn(kp, np.uint8)
    ub_b = stack_buf_dyn(kp, np.uint8)
    a = numba.carray(ub_a, (kp,))
    bb = numba.carray(ub_b, (kp,))
    acc_p = stack_buf(128, np.int32)
    sums = numba.carray(stack_buf_dyn(width, np.int32), (width,))
    for r in range(n_b):
        k0 = prog[QCHAIN_HEAD]
        src = x[r]
        for i in range(k0):
            a[i] = np.uint8(np.int32(src[i]) + BYTE_OFFSET)
        for i in range(k0, kp):
            a[i] = np.uint8(0)
        for layer in range(n_layers):
            rec = QCHAIN_HEAD + layer * QCHAIN_REC
            k, n_o, woff, qoff = prog[rec], prog[rec + 1], prog[rec + 2], prog[rec + 3]
            zp, lo, hi = prog[rec + 4], prog[rec + 5], prog[rec + 6]
            cur = ub_a if layer % 2 == 0 else ub_b
            o = 0
            while o < n_o:
                if o + 8 <= n_o:
                    _acc_zero(acc_p, 128)
                    for c0 in range(0, k, 64):
                        _dot64(acc_p, cur, c0, wspan, woff + o * k + c0, k, min(64, k - c0), 8)
                    _hsum8(acc_p, sums, o)
                    o += 8
                else:
                    _acc_zero(acc_p, 16)
                    for c0 in range(0, k, 64):
                        _dot64(acc_p, cur, c0, wspan, woff + o * k + c0, k, min(64, k - c0), 1)
                    sums[o] = _hsum(acc_p, 0)
                    o += 1
            # slices, so the loops index by their own range variable and vectorize
            corr, mult, shift = qp[qoff:qoff + n_o], qp[qoff + n_o:qoff + 2 * n_o], qp[qoff + 2 * n_o:qoff + 3 * n_o]
            if layer == n_layers - 1:
                dst = out[r]
                for j in range(n_o):
                    dst[j] = requantize(np.int32(np.int64(sums[j]) + corr[j]), mult[j], shift[j], zp, lo, hi, True)
            else:
                nxt = bb if layer % 2 == 0 else a
                for j in range(n_o):
                    v = requantize(np.int32(np.int64(sums[j]) + corr[j]), mult[j], shift[j], zp, lo, hi, True)
                    nxt[j] = np.uint8(v + BYTE_OFFSET)
                for j in range(n_o, kp):
                    nxt[j] = np.uint8(0)


def bind_qchain(layers) -> tuple | None:
    """One step for int8 FC layers (x rows, filter [O, K], corr, mult, shift, out rows, zp, lo, hi)
    where each layer's out is the next one's x and nobody else reads it; None when the filters
    do not all lie in one buffer (a loaded model's constants do: the mapped file) or the rows differ."""
    if len(layers) < 2:
        return None
    n_b = layers[0][0].shape[0]
    if any(x.shape[0] != n_b or y.shape[0] != n_b for x, _, _, _, _, y, _, _, _ in layers):
        return None
    ws = [w for _, w, *_ in layers]
    found = shared_buffer(ws) if all(w.dtype == np.int8 for w in ws) else None
    if found is None:
        return None
    whole, starts = found
    x, out = layers[0][0], layers[-1][5]
    width = max(max(w.shape) for w in ws)
    if width > GEMV_MAX_K or not out.flags.writeable:
        return None
    prog = [len(layers), n_b, width]
    consts = []
    off = 0
    for (_, w, corr, mult, shift, _, zp, lo, hi), start in zip(layers, starts):
        prog += [w.shape[1], w.shape[0], start, off, zp, lo, hi]
        consts += [corr, mult, shift]
        off += 3 * w.shape[0]
    qp = np.concatenate([np.asarray(c, np.int32) for c in consts])
    return qfc_chain, (x, out, whole, qp, np.array(prog, np.int64))
