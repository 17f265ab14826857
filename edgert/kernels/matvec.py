"""Float FULLY_CONNECTED for a few input rows (matrix-vector products), alone or as a fused chain of layers.

Why a kernel of its own: at one or a few rows an FC reads every weight once, so its time is the
weight traffic plus fixed costs. BLAS (np.dot) adds about 0.5 µs of call overhead and a separate
bias pass; the scalar reference loop does not vectorize. Here each output is a dot product over
the weight row [O, I] as stored (no repacking, no copy): VW-lane partial sums, eight rows at a
time (eight independent accumulator chains), a fixed pairwise lane reduction, then the last
I % VW terms in order, then the bias. That is a reassociated sum like the BLAS path it replaces:
the float tolerance holds, the result is deterministic and the same on every call.

A chain (`bind_chain`): consecutive float FCs where each intermediate tensor is read only by the
next one run as one step. A tiny model's time is mostly per-step cost (about 0.2 µs each to
unbox seven arguments), so the chain takes one: an int64 program of shapes and addresses of the
first input rows, the last output rows and every weight and bias (in the mapped model file when
they all live there, as they do for a loaded model; in a packed copy only for small chains
built otherwise). Intermediates stay on the stack: nobody
else reads them, and their planned arena views are simply not written.
"""

from __future__ import annotations

import ctypes
from typing import Sequence

import numba
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from edgert.kernels.registry import Step
from edgert.kernels.simd import F32_IR, VW, block_ptr, stack_buf, stack_buf_dyn, vzero

# At most this many input rows take the matrix-vector kernel; more rows are a GEMM (BLAS or the
# reference loop, conv.py), which reuses each weight across rows.
MATVEC_MAX_ROWS = 4
# A chain keeps its widest intermediate (rows x width floats, twice: read and write) on the stack.
CHAIN_MAX_VALUES = 4096
# Weights not all inside one buffer (a graph built in memory) are packed into a copy for the chain
# only up to this size; larger chains run layer by layer.
CHAIN_MAX_COPY_BYTES = 64 * 1024

_F32_MAX = np.float32(np.finfo(np.float32).max)
_BLOCK_ROWS = 8  # weight rows (outputs) per accumulator block


# ---------------------------------------------------------------- vector IR pieces


@intrinsic
def _f32_ptr(typingctx, arr):
    """The data pointer of a float32 array, as float32* (callers index it in elements)."""
    if not isinstance(arr, types.Array) or arr.dtype != types.float32:
        return None

    def codegen(context, builder, sig, args):
        return context.make_array(sig.args[0])(context, builder, args[0]).data

    return types.CPointer(types.float32)(arr), codegen


@intrinsic
def _addr_ptr(typingctx, addr):
    """The int64 address as float32* (chain programs carry their operands' addresses)."""
    if not isinstance(addr, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        return builder.inttoptr(args[0], ir.PointerType(F32_IR))

    return types.CPointer(types.float32)(types.int64), codegen


@intrinsic
def _vdot(typingctx, acc, xp, xo, wp, wo, ld, rows):
    """acc[r*VW : (r+1)*VW] += xp[xo : xo+VW] * wp[wo + r*ld : wo + r*ld + VW] for r < rows (literal).

    Multiply then add, each rounded (no contraction), as the float reference does per term."""
    if not isinstance(rows, types.IntegerLiteral):
        return None
    n = rows.literal_value

    def codegen(context, builder, sig, args):
        acc_p, x_p, xo_v, w_p, wo_v, ld_v, _ = args
        vt = ir.VectorType(F32_IR, VW)
        xv = builder.load(block_ptr(builder, x_p, xo_v, vt), align=4)
        for r in range(n):
            wi = builder.add(wo_v, builder.mul(ld_v, ir.Constant(ld_v.type, r)))
            wv = builder.load(block_ptr(builder, w_p, wi, vt), align=4)
            ap = block_ptr(builder, acc_p, r * VW, vt)
            builder.store(builder.fadd(builder.load(ap, align=4), builder.fmul(xv, wv)), ap, align=4)
        return context.get_dummy_value()

    f32p = types.CPointer(types.float32)
    return types.none(acc, f32p, types.int64, f32p, types.int64, types.int64, rows), codegen


def _masked_load(builder, ptr, mask, vt):
    """vt at ptr, lanes outside mask read as 0 and not touched in memory (llvm.masked.load)."""
    i32 = ir.IntType(32)
    fnty = ir.FunctionType(vt, [ptr.type, i32, mask.type, vt])
    fn = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.masked.load.v{vt.count}f32.p0")
    return builder.call(fn, [ptr, ir.Constant(i32, 4), mask, ir.Constant(vt, None)])


@intrinsic
def _vdot_tail(typingctx, acc, xp, xo, wp, wo, ld, n, rows):
    """_vdot over only the first n (< VW) lanes: the others read nothing and add 0."""
    if not isinstance(rows, types.IntegerLiteral):
        return None
    count = rows.literal_value

    def codegen(context, builder, sig, args):
        acc_p, x_p, xo_v, w_p, wo_v, ld_v, n_v, _ = args
        vt = ir.VectorType(F32_IR, VW)
        i64v = ir.VectorType(ir.IntType(64), VW)
        nv = builder.insert_element(ir.Constant(i64v, None), n_v, ir.Constant(ir.IntType(32), 0))
        nv = builder.shuffle_vector(nv, nv, ir.Constant(ir.VectorType(ir.IntType(32), VW), None))
        mask = builder.icmp_signed("<", ir.Constant(i64v, list(range(VW))), nv)
        xv = _masked_load(builder, block_ptr(builder, x_p, xo_v, vt), mask, vt)
        for r in range(count):
            wi = builder.add(wo_v, builder.mul(ld_v, ir.Constant(ld_v.type, r)))
            wv = _masked_load(builder, block_ptr(builder, w_p, wi, vt), mask, vt)
            ap = block_ptr(builder, acc_p, r * VW, vt)
            builder.store(builder.fadd(builder.load(ap, align=4), builder.fmul(xv, wv)), ap, align=4)
        return context.get_dummy_value()

    f32p = types.CPointer(types.float32)
    return types.none(acc, f32p, types.int64, f32p, types.int64, types.int64, types.int64, rows), codegen


@intrinsic
def _vsum(typingctx, acc, dst, rows):
    """dst[r] = the lanes of acc[r*VW : (r+1)*VW] added pairwise (halves, then quarters, ...) for
    r < rows (literal): a fixed order, so the same inputs always give the same sum."""
    if not isinstance(rows, types.IntegerLiteral):
        return None
    n = rows.literal_value

    def codegen(context, builder, sig, args):
        acc_p, dst_p, _ = args
        i32 = ir.IntType(32)
        for r in range(n):
            v = builder.load(block_ptr(builder, acc_p, r * VW, ir.VectorType(F32_IR, VW)), align=4)
            width = VW
            while width > 1:
                half = width // 2
                lo = builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(i32, half), [ir.Constant(i32, j) for j in range(half)]))
                hi = builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(i32, half), [ir.Constant(i32, half + j) for j in range(half)]))
                v = builder.fadd(lo, hi)
                width = half
            s = builder.extract_element(v, ir.Constant(i32, 0)) if isinstance(v.type, ir.VectorType) else v
            builder.store(s, builder.gep(dst_p, [ir.Constant(ir.IntType(64), r)]))
        return context.get_dummy_value()

    return types.none(acc, dst, rows), codegen


@njit(inline="always")
def _clamp(v, lo, hi):
    # as conv.clamp: selects, NaN passes through
    v = lo if v < lo else v
    return hi if v > hi else v


@njit(inline="always")
def _dots(acc_p, red_p, xp, xo, wp, wo, k, kv, rows):
    # red_p[r] = lane-reduced partial dot of x with weight row r (first kv terms), r < rows
    vzero(acc_p, 128)
    if rows == 8:
        for i in range(0, kv, VW):
            _vdot(acc_p, xp, xo + i, wp, wo + i, k, 8)
        if kv < k:
            _vdot_tail(acc_p, xp, xo + kv, wp, wo + kv, k, k - kv, 8)
        _vsum(acc_p, red_p, 8)
    elif rows == 4:
        for i in range(0, kv, VW):
            _vdot(acc_p, xp, xo + i, wp, wo + i, k, 4)
        if kv < k:
            _vdot_tail(acc_p, xp, xo + kv, wp, wo + kv, k, k - kv, 4)
        _vsum(acc_p, red_p, 4)
    else:
        for i in range(0, kv, VW):
            _vdot(acc_p, xp, xo + i, wp, wo + i, k, 1)
        if kv < k:
            _vdot_tail(acc_p, xp, xo + kv, wp, wo + kv, k, k - kv, 1)
        _vsum(acc_p, red_p, 1)


@njit(inline="always")
def _matvec(acc_p, red_p, xp, xo, wp, wo, k, n_o, bp, bo, has_bias, lo, hi, dp, do):
    # dp[do + o] = clamp(x . w[o] + b[o]) for o < n_o; x = xp[xo : xo+k], w[o] = wp[wo + o*k : +k]
    kv = k - k % VW
    o = 0
    while o < n_o:
        left = n_o - o
        rows = 8 if left >= 8 else (4 if left >= 4 else 1)
        _dots(acc_p, red_p, xp, xo, wp, wo + o * k, k, kv, rows)
        for j in range(rows):
            s = red_p[j]
            if has_bias:
                s += bp[bo + o + j]
            dp[do + o + j] = _clamp(s, lo, hi)
        o += rows


@njit(nogil=True, cache=True)
def fc_matvec(x, w, bias, has_bias, out, lo, hi):
    """out[b] = clamp(w @ x[b] + bias, lo, hi) for each row b. x [B, I] and out [B, O] with unit
    stride along the last axis, w [O, I] C-contiguous."""
    acc_p = stack_buf(128, np.float32)  # _BLOCK_ROWS * VW
    red_p = stack_buf(16, np.float32)
    xp, wp, bp, dp = _f32_ptr(x), _f32_ptr(w), _f32_ptr(bias), _f32_ptr(out)
    k, n_o = w.shape[1], w.shape[0]
    xs, ds = x.strides[0] // 4, out.strides[0] // 4
    for b in range(x.shape[0]):
        _matvec(acc_p, red_p, xp, b * xs, wp, 0, k, n_o, bp, 0, has_bias, lo, hi, dp, b * ds)


# A chain program (int64): header, then one record per layer. Addresses, not arrays: numba unboxes
# each array argument (about 30 ns apiece), one array of addresses costs that once.
_HEAD = 7  # layers, rows, widest intermediate, x address, x row stride, out address, out row stride
_REC = 6  # in, out, weight address, bias address (0: none), clamp code (conv.fused_clamp), unused


@njit(inline="always")
def _range(code):
    # activations.activation_range for the clamp codes FC applies
    if code == 1:
        return np.float32(0.0), _F32_MAX
    if code == 3:
        return np.float32(0.0), np.float32(6.0)
    if code == 2:
        return np.float32(-1.0), np.float32(1.0)
    return -_F32_MAX, _F32_MAX


@njit(nogil=True, cache=True)
def fc_chain(prog):
    """Layers of FCs in a row, as the program `prog` (bind_chain) lays out: x [B, I0] -> ... ->
    out [B, O_last], intermediates on the stack. Every row passes a layer before the next layer
    starts, so out may share memory with x."""
    acc_p = stack_buf(128, np.float32)
    red_p = stack_buf(16, np.float32)
    n_layers, n_b, width = prog[0], prog[1], prog[2]
    buf_a = stack_buf_dyn(n_b * width, np.float32)
    buf_b = stack_buf_dyn(n_b * width, np.float32)
    src, s_stride = _addr_ptr(prog[3]), prog[4]
    for layer in range(n_layers):
        r = _HEAD + layer * _REC
        k, n_o, wp, b_addr = prog[r], prog[r + 1], _addr_ptr(prog[r + 2]), prog[r + 3]
        lo, hi = _range(prog[r + 4])
        if layer == n_layers - 1:
            dst, d_stride = _addr_ptr(prog[5]), prog[6]
        else:
            dst, d_stride = (buf_a if layer % 2 == 0 else buf_b), n_o
        bp = _addr_ptr(b_addr if b_addr != 0 else prog[r + 2])
        for b in range(n_b):
            _matvec(acc_p, red_p, src, b * s_stride, wp, 0, k, n_o, bp, 0, b_addr != 0, lo, hi, dst, b * d_stride)
        src, s_stride = dst, d_stride


# ---------------------------------------------------------------- binding


def matvec_ok(x: np.ndarray, w: np.ndarray, y: np.ndarray) -> bool:
    """Whether fc_matvec runs these [B, I] x [O, I] -> [B, O] operands as they are."""
    return (x.shape[0] <= MATVEC_MAX_ROWS and w.flags.c_contiguous and x.strides[-1] == 4 and y.strides[-1] == 4
            and x.strides[0] % 4 == 0 and y.strides[0] % 4 == 0 and w.dtype == x.dtype == y.dtype == np.float32)


def buffer_owner(a: np.ndarray) -> object:
    """The object whose memory `a` views: the first array that owns its data, or the buffer object
    under it (a loaded model's constants all view one mmap, or the bytes it was read from)."""
    while isinstance(a.base, np.ndarray):
        a = a.base
    if isinstance(a.base, memoryview):
        return a.base.obj
    return a if a.base is None else a.base


def address_of(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


def shared_buffer(arrays: Sequence[np.ndarray]) -> tuple[np.ndarray, list[int]] | None:
    """(the bytes of the one object whose memory every array views, each array's byte offset into
    them), or None when the arrays are not all C-contiguous inside one such object (a loaded
    model's constants all view one mmap, or the bytes it was read from)."""
    if not all(a.flags.c_contiguous for a in arrays) or len({id(buffer_owner(a)) for a in arrays}) != 1:
        return None
    owner = buffer_owner(arrays[0])
    try:
        whole = owner.reshape(-1).view(np.uint8) if isinstance(owner, np.ndarray) else np.frombuffer(owner, np.uint8)
    except (TypeError, ValueError, AttributeError):
        return None
    base = address_of(whole)
    starts = [address_of(a) - base for a in arrays]
    if min(starts) < 0 or max(s + a.nbytes for s, a in zip(starts, arrays)) > whole.nbytes:
        return None
    return whole, starts


def _shared_span(arrays: Sequence[np.ndarray]) -> tuple[np.ndarray, list[int]] | None:
    """A float32 view spanning every array (all float32 inside the memory of one object, 4-byte
    aligned) and each array's element offset into it; None when they are not so."""
    found = shared_buffer(arrays) if all(a.dtype == np.float32 for a in arrays) else None
    if found is None:
        return None
    whole, starts = found
    lo = min(starts)
    hi = max(s + a.nbytes for s, a in zip(starts, arrays))
    if (address_of(whole) + lo) % 4 or any((s - lo) % 4 for s in starts) or (hi - lo) % 4:
        return None
    return whole[lo:hi].view(np.float32), [(s - lo) // 4 for s in starts]


def _packed(arrays: Sequence[np.ndarray]) -> tuple[np.ndarray, list[int]] | None:
    if sum(a.nbytes for a in arrays) > CHAIN_MAX_COPY_BYTES:
        return None
    offsets = np.cumsum([0] + [a.size for a in arrays[:-1]]).tolist()
    return np.concatenate([np.ravel(a).astype(np.float32) for a in arrays]), offsets


def bind_chain(layers: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray, int]]) -> Step | None:
    """One step for FC layers (x rows, weights [O, I], bias or None, out rows, clamp code) where
    each layer's out is the next one's x and is read by nobody else; None when the layers do not
    fit (too many rows, too wide, operands not as fc_matvec takes them, weights in no one buffer
    and too large to copy).

    The step's one argument is the program array; the arrays whose addresses it holds are kept
    alive by the buffer under it (so the step owns what it points into, like any bound step)."""
    if len(layers) < 2:
        return None
    n_b = layers[0][0].shape[0]
    for x, w, _, y, _ in layers:
        if x.shape[0] != n_b or y.shape[0] != n_b or not matvec_ok(x, w, y):
            return None
    width = max(w.shape[0] for _, w, _, _, _ in layers[:-1])
    x, out = layers[0][0], layers[-1][3]
    if n_b * width > CHAIN_MAX_VALUES or not out.flags.writeable:
        return None
    consts = [a for _, w, b, _, _ in layers for a in ((w,) if b is None else (w, b))]
    found = _shared_span(consts) or _packed(consts)
    if found is None:
        return None
    span, offsets = found
    base = address_of(span)
    prog = [len(layers), n_b, width, address_of(x), x.strides[0] // 4, address_of(out), out.strides[0] // 4]
    it = iter(offsets)
    for _, w, b, _, code in layers:
        wa = base + 4 * next(it)
        ba = 0 if b is None else base + 4 * next(it)
        prog += [w.shape[1], w.shape[0], wa, ba, code, 0]
    holder = (ctypes.c_int64 * len(prog))(*prog)
    holder.keep = (x, out, span)  # the memory prog's addresses point into
    return fc_chain, (np.frombuffer(holder, np.int64),)
