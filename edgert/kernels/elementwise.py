"""Elementwise kernels: binary arithmetic with TFLite broadcasting and fused activations, and unary math/activations.

float32 (and int32) throughout; int8/uint8 ADD, SUB, MUL (TFLite's fixed-point requantization, bit
for bit with BUILTIN_REF) and MAXIMUM/MINIMUM.

Every kernel runs on a canonical form prepared once in bind:

* each operand becomes a 1-D view starting at its first element (`flat_view`) plus its strides in
  elements, so contiguous, broadcast (stride 0) and strided (concat-placed) operands share one
  compiled signature;
* the iteration shape is collapsed (`collapse`): size-1 dims dropped, neighbouring dims merged
  where every operand is contiguous across them, then padded to MAX_RANK. Same-shape contiguous
  operands become one long row; MobileNet's [1,H,W,C] * [1,1,1,C] becomes (H*W) rows of C.

The innermost row picks a loop in which every stride is known (1 or 0), so LLVM vectorizes it.
Float kernels use numba's "numpy" error model: x / 0 gives inf/NaN as in C++ (the default raises
ZeroDivisionError, and its zero check on every division also kept LLVM from vectorizing).
In-place steps (output memory == an input's) get their own loops that read and write through the
same view: LLVM's runtime overlap check would otherwise send exactly-aliased rows down the scalar
path. One numba dispatcher is made per op (a closure over the op code, folded at compile time),
so a model compiles only the ops it uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from numba import njit
from numpy.lib.stride_tricks import as_strided

from edgert.kernels import fixedpoint as fp
from edgert.kernels.activations import activation_code, activation_range, activation_supported, expf_fast
from edgert.kernels.registry import KernelEntry, KernelRegistry, OpContext, Step

MAX_RANK = 6

_F32 = np.dtype(np.float32)
_I32 = np.dtype(np.int32)
_I8 = np.dtype(np.int8)
_U8 = np.dtype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Canonical strided form (shared with reduce.py)


def flat_view(x: np.ndarray, writeable: bool) -> tuple[np.ndarray, tuple[int, ...]]:
    """A 1-D view of the memory from x's first to its last element, and x's strides in elements.

    No copy: for a contiguous x this is x.reshape(-1); for a strided arena view (a channel slice
    of a concat output) it spans the gaps, which the element strides then skip.
    """
    item = x.dtype.itemsize
    if any(s < 0 or s % item for s in x.strides):
        raise ValueError(f"unsupported strides {x.strides} for itemsize {item}")
    strides = tuple(s // item for s in x.strides)
    span = 1 + sum((d - 1) * s for d, s in zip(x.shape, strides)) if x.size else 0
    if writeable and not x.flags.writeable:
        raise ValueError("output view is read-only")
    flat = as_strided(x, shape=(span,), strides=(item,), writeable=writeable)
    return flat, strides


def broadcast_strides(shape: tuple[int, ...], strides: tuple[int, ...], out_shape: tuple[int, ...]) -> list[int]:
    """Element strides of an operand read at every index of out_shape (0 along broadcast dims)."""
    pad = len(out_shape) - len(shape)
    full = [0] * pad + list(strides)
    dims = [1] * pad + list(shape)
    return [0 if d == 1 else s for d, s in zip(dims, full)]


def collapse(shape: tuple[int, ...], strides: list[list[int]], rank: int = MAX_RANK) -> tuple[np.ndarray, list[np.ndarray]]:
    """Drop size-1 dims, merge dims that every operand walks contiguously, pad on the left to `rank`.

    Returns (shape, [strides per operand]) as int64 arrays of length `rank`.
    """
    dims = [(d, [s[i] for s in strides]) for i, d in enumerate(shape) if d != 1]
    merged: list[tuple[int, list[int]]] = []
    for d, ss in dims:
        if merged:
            pd, ps = merged[-1]
            if all(p == s * d for p, s in zip(ps, ss)):
                merged[-1] = (pd * d, ss)
                continue
        merged.append((d, ss))
    if len(merged) > rank:
        raise ValueError(f"shape {shape} does not collapse to rank {rank}")
    pad = rank - len(merged)
    out_shape = np.array([1] * pad + [d for d, _ in merged], np.int64)
    out_strides = [np.array([0] * pad + [ss[k] for _, ss in merged], np.int64) for k in range(len(strides))]
    return out_shape, out_strides


def same_memory(a: np.ndarray, b: np.ndarray) -> bool:
    """True when a and b are the very same elements (the planner ran the step in place)."""
    return (a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
            and a.shape == b.shape and a.strides == b.strides and a.dtype == b.dtype)


@njit(nogil=True, cache=True)
def _noop() -> None:
    pass


def skip_empty(bind: Callable) -> Callable:
    """The bind, but a no-op step for an empty output (the walks set up in bind assume elements)."""
    def bind_nonempty(ctx: OpContext, ins: list, outs: list, scratch: np.ndarray | None) -> Step:
        if outs[0].size == 0:
            return _noop, ()
        return bind(ctx, ins, outs, scratch)

    return bind_nonempty


def _readonly(x: np.ndarray) -> np.ndarray:
    v = x.view()
    v.flags.writeable = False
    return v


# ---------------------------------------------------------------------------------------------
# Binary ops

ADD, SUB, MUL, DIV, MAXIMUM, MINIMUM, SQUARED_DIFFERENCE, POW, PRELU, FLOOR_DIV, FLOOR_MOD = range(11)


@njit(inline="always")
def _binop(x, y, op):
    if op == ADD:
        return x + y
    if op == SUB:
        return x - y
    if op == MUL:
        return x * y
    if op == DIV:
        return x / y
    if op == MAXIMUM:
        return x if x > y else y
    if op == MINIMUM:
        return x if x < y else y
    if op == SQUARED_DIFFERENCE:
        d = x - y
        return d * d
    if op == POW:
        return x ** y
    if op == PRELU:
        return x if x >= 0 else x * y
    if op == FLOOR_DIV:
        return np.floor(x / y)
    # FLOOR_MOD: the remainder takes the divisor's sign, as TFLite's floor_mod.h
    r = np.fmod(x, y)
    return r + y if r != 0 and ((y < 0) != (r < 0)) else r


@njit(inline="always")
def _clamp(r, lo, hi):
    r = lo if r < lo else r
    return hi if r > hi else r


def _make_binary(op: int) -> Callable:
    @njit(nogil=True, cache=True, error_model="numpy")
    def binary_kernel(a, b, o, shape, sa, sb, so, lo, hi, alias, rep, k, row):
        """o = clamp(a op b); alias 1: o is a's memory, 2: o is b's.

        row 1 (2): b (a) is one short row broadcast over the last two collapsed dims, along which
        the other operand and o are contiguous; the row is repeated k times into `rep` so each
        chunk of k rows is one long vectorizable loop instead of k short ones.
        """
        n = shape[5]
        a5, b5, o5 = sa[5], sb[5], so[5]
        if row != 0:
            rows = shape[4]
            for i0 in range(shape[0]):
                for i1 in range(shape[1]):
                    for i2 in range(shape[2]):
                        for i3 in range(shape[3]):
                            pa = i0 * sa[0] + i1 * sa[1] + i2 * sa[2] + i3 * sa[3]
                            pb = i0 * sb[0] + i1 * sb[1] + i2 * sb[2] + i3 * sb[3]
                            po = i0 * so[0] + i1 * so[1] + i2 * so[2] + i3 * so[3]
                            src = b[pb:pb + n] if row == 1 else a[pa:pa + n]
                            for r in range(k):
                                rep[r * n:(r + 1) * n] = src
                            for r0 in range(0, rows, k):
                                m = min(k, rows - r0) * n
                                ov = o[po + r0 * n:po + r0 * n + m]
                                if row == 1:
                                    if alias == 1:
                                        for t in range(m):
                                            ov[t] = _clamp(_binop(ov[t], rep[t], op), lo, hi)
                                    else:
                                        av = a[pa + r0 * n:pa + r0 * n + m]
                                        for t in range(m):
                                            ov[t] = _clamp(_binop(av[t], rep[t], op), lo, hi)
                                else:
                                    if alias == 2:
                                        for t in range(m):
                                            ov[t] = _clamp(_binop(rep[t], ov[t], op), lo, hi)
                                    else:
                                        bv = b[pb + r0 * n:pb + r0 * n + m]
                                        for t in range(m):
                                            ov[t] = _clamp(_binop(rep[t], bv[t], op), lo, hi)
            return
        for i0 in range(shape[0]):
            for i1 in range(shape[1]):
                for i2 in range(shape[2]):
                    for i3 in range(shape[3]):
                        for i4 in range(shape[4]):
                            pa = i0 * sa[0] + i1 * sa[1] + i2 * sa[2] + i3 * sa[3] + i4 * sa[4]
                            pb = i0 * sb[0] + i1 * sb[1] + i2 * sb[2] + i3 * sb[3] + i4 * sb[4]
                            po = i0 * so[0] + i1 * so[1] + i2 * so[2] + i3 * so[3] + i4 * so[4]
                            if o5 == 1 and a5 == 1 and b5 == 1:
                                ov = o[po:po + n]
                                if alias == 1:
                                    bv = b[pb:pb + n]
                                    for j in range(n):
                                        ov[j] = _clamp(_binop(ov[j], bv[j], op), lo, hi)
                                elif alias == 2:
                                    av = a[pa:pa + n]
                                    for j in range(n):
                                        ov[j] = _clamp(_binop(av[j], ov[j], op), lo, hi)
                                else:
                                    av = a[pa:pa + n]
                                    bv = b[pb:pb + n]
                                    for j in range(n):
                                        ov[j] = _clamp(_binop(av[j], bv[j], op), lo, hi)
                            elif o5 == 1 and a5 == 1 and b5 == 0:
                                ov = o[po:po + n]
                                y = b[pb]
                                if alias == 1:
                                    for j in range(n):
                                        ov[j] = _clamp(_binop(ov[j], y, op), lo, hi)
                                else:
                                    av = a[pa:pa + n]
                                    for j in range(n):
                                        ov[j] = _clamp(_binop(av[j], y, op), lo, hi)
                            elif o5 == 1 and a5 == 0 and b5 == 1:
                                ov = o[po:po + n]
                                x = a[pa]
                                if alias == 2:
                                    for j in range(n):
                                        ov[j] = _clamp(_binop(x, ov[j], op), lo, hi)
                                else:
                                    bv = b[pb:pb + n]
                                    for j in range(n):
                                        ov[j] = _clamp(_binop(x, bv[j], op), lo, hi)
                            else:
                                for j in range(n):
                                    o[po + j * o5] = _clamp(_binop(a[pa + j * a5], b[pb + j * b5], op), lo, hi)

    return binary_kernel


# Rows shorter than this are repeated into scratch and run in chunks (LLVM's vector loop on
# x86 takes 32 floats per iteration; shorter rows would run entirely in its scalar tail).
SHORT_ROW = 1024
CHUNK_ELEMENTS = 2048


def row_broadcast(shape: np.ndarray, sa: np.ndarray, sb: np.ndarray, so: np.ndarray) -> int:
    """1 when b is one short row repeated over the last two collapsed dims (a and o contiguous there), 2 for a."""
    n, rows = int(shape[5]), int(shape[4])
    if rows < 2 or n >= SHORT_ROW or so[5] != 1 or so[4] != n:
        return 0
    if sa[5] == 1 and sa[4] == n and sb[5] == 1 and sb[4] == 0:
        return 1
    if sb[5] == 1 and sb[4] == n and sa[5] == 1 and sa[4] == 0:
        return 2
    return 0


def _contiguous_strides(shape: tuple[int, ...]) -> list[int]:
    strides, acc = [], 1
    for d in reversed(shape):
        strides.append(acc)
        acc *= d
    return strides[::-1]


_BINARY_KERNELS = {op: _make_binary(op) for op in range(11)}


@dataclass(frozen=True)
class BinarySpec:
    """How one binary TFLite op maps onto the kernel."""

    op: int
    max_version: int
    dtypes: tuple[np.dtype, ...]
    fused_activation: bool


BINARY_OPS: dict[str, BinarySpec] = {
    "ADD": BinarySpec(ADD, 5, (_F32, _I32), True),
    "SUB": BinarySpec(SUB, 5, (_F32, _I32), True),
    "MUL": BinarySpec(MUL, 7, (_F32, _I32), True),
    "DIV": BinarySpec(DIV, 2, (_F32,), True),
    # int8/uint8 compare raw values, as TFLite does (the converter gives inputs and output one scale)
    "MAXIMUM": BinarySpec(MAXIMUM, 4, (_F32, _I32, _I8, _U8), False),
    "MINIMUM": BinarySpec(MINIMUM, 4, (_F32, _I32, _I8, _U8), False),
    "SQUARED_DIFFERENCE": BinarySpec(SQUARED_DIFFERENCE, 2, (_F32,), False),
    "POW": BinarySpec(POW, 1, (_F32,), False),
    "PRELU": BinarySpec(PRELU, 1, (_F32,), False),
    "FLOOR_DIV": BinarySpec(FLOOR_DIV, 3, (_F32,), False),
    "FLOOR_MOD": BinarySpec(FLOOR_MOD, 2, (_F32,), False),
}


def operand_reason(ctx: OpContext, max_version: int, n_inputs: int, present: int, expects: str) -> str | None:
    """The checks every supports() here starts with: the op version, and n_inputs inputs (the first
    `present` of them given) and one output, else `expects` as the reason."""
    if ctx.op.version > max_version:
        return f"version {ctx.op.version} > {max_version}"
    if len(ctx.inputs) != n_inputs or len(ctx.outputs) != 1 or any(t is None for t in ctx.inputs[:present]):
        return expects
    return None


def same_shape_reason(x, out) -> str | None:
    if tuple(x.shape) != tuple(out.shape):
        return f"output shape {out.shape} != input shape {x.shape}"
    return None


def _dtype_reason(ctx: OpContext, allowed: tuple[np.dtype, ...]) -> str | None:
    tensors = [t for t in ctx.inputs if t is not None] + list(ctx.outputs)
    for t in tensors:
        if t.dtype not in allowed:
            return f"{t.dtype} not supported"
    if len({t.dtype for t in tensors}) > 1:
        return "mixed dtypes not supported"
    return None


def _binary_operands_reason(ctx: OpContext, max_version: int, dtypes: tuple[np.dtype, ...],
                            quantized: bool = False) -> str | None:
    """Two inputs of `dtypes` (one dtype; quantized: per tensor) that broadcast to the output's shape."""
    reason = (operand_reason(ctx, max_version, 2, 2, "expects 2 inputs and 1 output")
              or _dtype_reason(ctx, dtypes))
    if reason:
        return reason
    a, b = ctx.inputs
    out = ctx.outputs[0]
    if quantized:
        reason = per_tensor_reason([a, b, out])
        if reason:
            return reason
    if max(len(a.shape), len(b.shape), len(out.shape)) > MAX_RANK:
        return f"rank above {MAX_RANK}"
    try:
        shape = np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        return f"shapes {a.shape} and {b.shape} do not broadcast"
    if tuple(shape) != tuple(out.shape):
        return f"output shape {out.shape} != broadcast shape {tuple(shape)}"
    return None


def _binary_supports(spec: BinarySpec) -> Callable[[OpContext], str | None]:
    def supports(ctx: OpContext) -> str | None:
        reason = _binary_operands_reason(ctx, spec.max_version, spec.dtypes)
        if reason:
            return reason
        if spec.fused_activation:
            return activation_supported(getattr(ctx.op.options, "fused_activation_function", None))
        return None

    return supports


def _binary_scratch(ctx: OpContext) -> int:
    """Bytes for the repeated row when the tensors, laid out contiguously, take the chunked path."""
    a, b = ctx.inputs
    out = ctx.outputs[0]
    oshape = tuple(out.shape)
    if out.size == 0:
        return 0
    shape, (ca, cb, co) = collapse(oshape, [broadcast_strides(a.shape, _contiguous_strides(a.shape), oshape),
                                            broadcast_strides(b.shape, _contiguous_strides(b.shape), oshape),
                                            _contiguous_strides(oshape)])
    if not row_broadcast(shape, ca, cb, co):
        return 0
    n = int(shape[5])
    return max(1, CHUNK_ELEMENTS // n) * n * out.dtype.itemsize


def _binary_bind(spec: BinarySpec) -> Callable:
    kernel = _BINARY_KERNELS[spec.op]

    @skip_empty
    def bind(ctx: OpContext, ins: list, outs: list, scratch: np.ndarray | None) -> Step:
        a, b = ins
        out = outs[0]
        if spec.fused_activation:
            code = activation_code(getattr(ctx.op.options, "fused_activation_function", None))
        else:
            code = 0
        if out.dtype == _F32:
            lo, hi = (np.float32(v) for v in activation_range(code))
        else:
            info = np.iinfo(out.dtype)
            lo, hi = (np.int32(np.clip(v, info.min, info.max)) for v in activation_range(code))
        alias = 1 if same_memory(a, out) else 2 if same_memory(b, out) else 0
        walk, rep, k, row = _binary_walk(a, b, out, scratch)
        return kernel, (*walk, lo, hi, np.int64(alias), rep, k, row)

    return bind


def _binary_walk(a: np.ndarray, b: np.ndarray, out: np.ndarray, scratch: np.ndarray | None) -> tuple:
    """What bind hands a binary kernel: ((fa, fb, fo, shape, sa, sb, so), rep, k, row).

    Flat views and the collapsed walk; with a short broadcast row (row_broadcast) and scratch for
    it, `rep` is the scratch that row is repeated k times into, else row = k = 0.
    """
    fa, sa = flat_view(a, False)
    fb, sb = flat_view(b, False)
    fo, so = flat_view(out, True)
    oshape = tuple(out.shape)
    shape, (ca, cb, co) = collapse(
        oshape, [broadcast_strides(a.shape, sa, oshape), broadcast_strides(b.shape, sb, oshape), list(so)])
    row = row_broadcast(shape, ca, cb, co) if scratch is not None else 0
    k = max(1, CHUNK_ELEMENTS // int(shape[5])) if row else 0
    nbytes = k * int(shape[5]) * out.dtype.itemsize
    if row and nbytes > scratch.nbytes:
        row = k = 0
    rep = scratch[:nbytes].view(out.dtype) if row else np.empty(0, out.dtype)
    return (fa, fb, fo, shape, ca, cb, co), rep, np.int64(k), np.int64(row)


def _same_shape_inputs(positions: tuple[int, ...]) -> Callable[[OpContext], tuple[int, ...]]:
    def inplace(ctx: OpContext) -> tuple[int, ...]:
        out = ctx.outputs[0]
        return tuple(k for k in positions
                     if ctx.inputs[k] is not None and ctx.inputs[k].shape == out.shape
                     and ctx.inputs[k].dtype == out.dtype)

    return inplace


# ---------------------------------------------------------------------------------------------
# Quantized (int8/uint8) ADD, SUB, MUL: TFLite's integer arithmetic, bit for bit
#
# ADD/SUB (add.cc, sub.cc Prepare; reference_integer_ops/add.h, reference_ops/sub.h): each input
# is offset by its zero point, shifted left by 20 and scaled by its multiplier (input scale /
# twice the larger input scale); the sum (difference) is scaled by the output multiplier.
# MUL (mul.cc, reference_integer_ops/mul.h): the product of the offset inputs times one
# multiplier (s1 * s2 / s_out, computed in float as the C++ does). Broadcasting does not change
# the per-element arithmetic, so the canonical strided form above carries over unchanged.

QADD, QSUB, QMUL = range(3)
_Q8 = (_I8, _U8)
_LEFT_SHIFT_8BIT = 20


@njit(inline="always")
def _srdhm32(x, m):
    """gemmlowp SaturatingRoundingDoublingHighMul for an int32 x and a multiplier 0 <= m < 2^31.

    The C++ adds a nudge of 2^30 (1 - 2^30 for a negative product ab) and divides by 2^31 toward
    zero. For ab < 0 that is ceil((ab + 1 - 2^30) / 2^31) = floor((ab + 2^30) / 2^31), the same
    expression as for ab >= 0, so one add and an arithmetic shift, no select. It never saturates:
    that needs x = m = INT32_MIN, and m >= 0. The product is sext(i32) * sext(i32), which LLVM
    vectorizes as a widening multiply (pmuldq, NEON smull).
    """
    return np.int32((np.int64(np.int32(x)) * np.int64(np.int32(m)) + np.int64(1 << 30)) >> 31)


@njit(inline="always")
def _rdbp_small(q, e, half, neg):
    """gemmlowp RoundingDivideByPOT(q, e) for |q| < 2^30: (q + 2^(e-1) - [q < 0]) >> e in int32.

    half = (1 << e) >> 1 and neg = [e > 0], set once per op. Equal to the reference's remainder
    test: q = t * 2^e + r rounds up iff r >= 2^(e-1) (q >= 0) or r > 2^(e-1) (q < 0, ties away
    from zero), which is exactly when the added nudge carries into bit e.
    """
    return (np.int32(q) + half - (neg if q < 0 else np.int32(0))) >> e


@njit(inline="always")
def _rdbp32(q, e, mask, half_mask):
    """gemmlowp RoundingDivideByPOT(q, e) for any int32 q (no intermediate overflow); selects only."""
    q = np.int32(q)
    threshold = half_mask + (np.int32(1) if q < 0 else np.int32(0))
    return (q >> e) + (np.int32(1) if (q & mask) > threshold else np.int32(0))


@njit(inline="always")
def _qbinop(x, y, op, p):
    """One output code of a quantized ADD/SUB/MUL; p: the int32 tuple of _qunpack.

    Written for LLVM's loop vectorizer: int32 lanes except the one widening multiply per
    _srdhm32, selects instead of branches. ADD/SUB's input rescale
    MultiplyByQuantizedMultiplierSmallerThanOneExp((v + off) << 20, m, -e) needs no 64-bit
    product: with d = v + off (|d| <= 255), SRDHM(d * 2^20, m) = floor((d*m + 2^10) / 2^11), and
    with m = mh * 2^11 + ml (0 <= ml < 2^11) that is d*mh + floor((d*ml + 2^10) / 2^11) exactly,
    both terms below 2^28. Every value after it stays below 2^30 in magnitude (two such terms
    summed, then scaled by multipliers < 1), so _rdbp_small applies; MUL's left-shifted product
    wraps like the C++ and takes the general _rdbp32. Computed per element rather than looked up
    in per-input tables: a table lookup becomes a gather, which ran 5x slower than the arithmetic.
    """
    (off1, off2, m1h, m1l, e1, h1, n1, m2h, m2l, e2, h2, n2, mo, eo, ho, no, left, mask, half_mask,
     ooff, lo, hi) = p
    if op == QMUL:
        prod = (np.int32(x) + off1) * (np.int32(y) + off2)
        r = _rdbp32(_srdhm32(np.int32(np.int64(prod) << left), mo), eo, mask, half_mask)
    else:
        dx = np.int32(np.int32(x) + off1)
        dy = np.int32(np.int32(y) + off2)
        a = _rdbp_small(np.int32(dx * m1h) + np.int32((np.int32(dx * m1l) + np.int32(1024)) >> 11), e1, h1, n1)
        b = _rdbp_small(np.int32(dy * m2h) + np.int32((np.int32(dy * m2l) + np.int32(1024)) >> 11), e2, h2, n2)
        raw = np.int32(a + b) if op == QADD else np.int32(a - b)
        r = _rdbp_small(_srdhm32(raw, mo), eo, ho, no)
    r = np.int32(r + ooff)
    r = lo if r < lo else r
    return hi if r > hi else r


@njit(inline="always")
def _qunpack(prm):
    i = np.int32
    return (i(prm[0]), i(prm[1]), i(prm[2]), i(prm[3]), i(prm[4]), i(prm[5]), i(prm[6]), i(prm[7]), i(prm[8]),
            i(prm[9]), i(prm[10]), i(prm[11]), i(prm[12]), i(prm[13]), i(prm[14]), i(prm[15]), i(prm[16]),
            i(prm[17]), i(prm[18]), i(prm[19]), i(prm[20]), i(prm[21]))


@njit(inline="always")
def _qbinop_run(ov, xv, yv, m, op, p):
    # ov[0:m] = xv op yv elementwise. For an in-place step pass the output view itself as xv or yv:
    # one view, so LLVM needs no runtime overlap check (see qbinary_kernel).
    for t in range(m):
        ov[t] = _qbinop(xv[t], yv[t], op, p)


def _make_qbinary(op: int) -> Callable:
    @njit(nogil=True, cache=True)
    def qbinary_kernel(a, b, o, shape, sa, sb, so_, prm, rep, k, row, alias):
        """o = requantized (a op b); prm: QBinaryParams.vector(); alias 1: o is a's memory, 2: b's.

        row 1 (2): b (a) is one short row broadcast over the last two collapsed dims; it is repeated
        k times into `rep` so each chunk of k rows is one long vectorizable loop (as binary_kernel).
        In-place steps read and write through one view: with a separate view of the same memory
        LLVM's runtime overlap check sends the whole loop down its scalar path (4x slower).
        """
        p = _qunpack(prm)
        n = shape[5]
        a5, b5, o5 = sa[5], sb[5], so_[5]
        if row != 0:
            rows = shape[4]
            for i0 in range(shape[0]):
                for i1 in range(shape[1]):
                    for i2 in range(shape[2]):
                        for i3 in range(shape[3]):
                            pa = i0 * sa[0] + i1 * sa[1] + i2 * sa[2] + i3 * sa[3]
                            pb = i0 * sb[0] + i1 * sb[1] + i2 * sb[2] + i3 * sb[3]
                            po = i0 * so_[0] + i1 * so_[1] + i2 * so_[2] + i3 * so_[3]
                            src = b[pb:pb + n] if row == 1 else a[pa:pa + n]
                            for r in range(k):
                                rep[r * n:(r + 1) * n] = src
                            for r0 in range(0, rows, k):
                                m = min(k, rows - r0) * n
                                ov = o[po + r0 * n:po + r0 * n + m]
                                if row == 1:
                                    if alias == 1:
                                        _qbinop_run(ov, ov, rep, m, op, p)
                                    else:
                                        _qbinop_run(ov, a[pa + r0 * n:pa + r0 * n + m], rep, m, op, p)
                                elif alias == 2:
                                    _qbinop_run(ov, rep, ov, m, op, p)
                                else:
                                    _qbinop_run(ov, rep, b[pb + r0 * n:pb + r0 * n + m], m, op, p)
            return
        for i0 in range(shape[0]):
            for i1 in range(shape[1]):
                for i2 in range(shape[2]):
                    for i3 in range(shape[3]):
                        for i4 in range(shape[4]):
                            pa = i0 * sa[0] + i1 * sa[1] + i2 * sa[2] + i3 * sa[3] + i4 * sa[4]
                            pb = i0 * sb[0] + i1 * sb[1] + i2 * sb[2] + i3 * sb[3] + i4 * sb[4]
                            po = i0 * so_[0] + i1 * so_[1] + i2 * so_[2] + i3 * so_[3] + i4 * so_[4]
                            if o5 == 1 and a5 == 1 and b5 == 1:
                                ov = o[po:po + n]
                                if alias == 1:
                                    _qbinop_run(ov, ov, b[pb:pb + n], n, op, p)
                                elif alias == 2:
                                    _qbinop_run(ov, a[pa:pa + n], ov, n, op, p)
                                else:
                                    _qbinop_run(ov, a[pa:pa + n], b[pb:pb + n], n, op, p)
                            elif o5 == 1 and a5 == 1 and b5 == 0:
                                ov = o[po:po + n]
                                y = b[pb]
                                if alias == 1:
                                    for j in range(n):
                                        ov[j] = _qbinop(ov[j], y, op, p)
                                else:
                                    av = a[pa:pa + n]
                                    for j in range(n):
                                        ov[j] = _qbinop(av[j], y, op, p)
                            elif o5 == 1 and a5 == 0 and b5 == 1:
                                ov = o[po:po + n]
                                x = a[pa]
                                if alias == 2:
                                    for j in range(n):
                                        ov[j] = _qbinop(x, ov[j], op, p)
                                else:
                                    bv = b[pb:pb + n]
                                    for j in range(n):
                                        ov[j] = _qbinop(x, bv[j], op, p)
                            else:
                                for j in range(n):
                                    o[po + j * o5] = _qbinop(a[pa + j * a5], b[pb + j * b5], op, p)

    return qbinary_kernel


_QBINARY_KERNELS = {op: _make_qbinary(op) for op in range(3)}


@dataclass(frozen=True)
class QuantParams:
    """Per-tensor (scale, zero point) as TFLite's Prepare reads them: the scale as a float32."""

    scale: float
    zero_point: int

    @classmethod
    def of(cls, tensor) -> "QuantParams":
        q = tensor.quantization
        return cls(float(np.float32(q.scale)), int(q.zero_point))


def per_tensor_reason(tensors) -> str | None:
    """None when every tensor has per-tensor quantization parameters, else a reason."""
    for t in tensors:
        q = t.quantization
        if q is None or not q.scales:
            return f"{t.name} has no quantization parameters"
        if q.per_channel:
            return f"{t.name} is per-channel quantized"
        if not q.scale > 0:
            return f"{t.name} has scale {q.scale}"
    return None


def q8_reason(x, out) -> str | None:
    """An int8/uint8 input, an output of its dtype, both quantized per tensor (TFLite's quantized kernels)."""
    if x.dtype not in _Q8:
        return f"{x.dtype} not supported (quantized kernel: int8/uint8)"
    if out.dtype != x.dtype:
        return f"output {out.dtype} differs from input {x.dtype}"
    return per_tensor_reason([x, out])


@dataclass(frozen=True)
class QBinaryParams:
    """What Prepare computes for a quantized ADD/SUB/MUL (multipliers as (int32, shift) pairs)."""

    offsets: tuple[int, int]  # minus the input zero points
    input_multipliers: tuple[tuple[int, int], tuple[int, int]]  # ADD/SUB only
    output_multiplier: tuple[int, int]
    output_offset: int
    activation_range: tuple[int, int]

    def vector(self) -> np.ndarray:
        """The `prm` argument of qbinary_kernel, in the order _qbinop unpacks it.

        Per input (ADD/SUB): the multiplier split at bit 11 (_qbinop), the right shift e, 2^e >> 1
        and [e > 0] (_rdbp_small); then the output's multiplier, e, 2^e >> 1, [e > 0], MUL's left
        shift, the mask and half mask of _rdbp32, the output offset and the clamp.
        """
        def rdbp(right: int) -> list[int]:
            return [right, (1 << right) >> 1, 1 if right > 0 else 0]

        (m1, s1), (m2, s2) = self.input_multipliers
        mo, so = self.output_multiplier
        left, right = max(so, 0), max(-so, 0)
        mask = (1 << right) - 1
        return np.array([*self.offsets, m1 >> 11, m1 & 2047, *rdbp(-s1), m2 >> 11, m2 & 2047, *rdbp(-s2),
                         mo, *rdbp(right), left, mask, mask >> 1, self.output_offset, *self.activation_range],
                        np.int64)


def qbinary_params(op: int, a: QuantParams, b: QuantParams, out: QuantParams, activation: str | None,
                   dtype) -> QBinaryParams | str:
    """TFLite's Prepare for a quantized ADD/SUB/MUL, or the reason TFLite would refuse the parameters."""
    act = fp.activation_range_quantized(activation, out.scale, out.zero_point, dtype)
    offsets = (-a.zero_point, -b.zero_point)
    if op == QMUL:
        # float * float / float in C++ float arithmetic, then widened to double
        real = float(np.float32(np.float32(a.scale) * np.float32(b.scale)) / np.float32(out.scale))
        return QBinaryParams(offsets, ((0, 0), (0, 0)), fp.quantize_multiplier(real), out.zero_point, act)
    twice_max = 2.0 * max(a.scale, b.scale)
    real_out = twice_max / (float(1 << _LEFT_SHIFT_8BIT) * out.scale)
    if not real_out < 1.0:
        return f"output scale {out.scale:.3g} too small for the inputs' (output multiplier {real_out:.3g} >= 1)"
    return QBinaryParams(offsets,
                         (fp.quantize_multiplier_smaller_than_one_exp(a.scale / twice_max),
                          fp.quantize_multiplier_smaller_than_one_exp(b.scale / twice_max)),
                         fp.quantize_multiplier_smaller_than_one_exp(real_out), out.zero_point, act)


QBINARY_OPS: dict[str, tuple[int, int]] = {"ADD": (QADD, 5), "SUB": (QSUB, 5), "MUL": (QMUL, 7)}


def _qbinary_supports(op: int, max_version: int) -> Callable[[OpContext], str | None]:
    def supports(ctx: OpContext) -> str | None:
        reason = _binary_operands_reason(ctx, max_version, _Q8, quantized=True)
        if reason:
            return reason
        a, b = ctx.inputs
        out = ctx.outputs[0]
        act = getattr(ctx.op.options, "fused_activation_function", None)
        reason = activation_supported(act)
        if reason:
            return reason
        params = qbinary_params(op, QuantParams.of(a), QuantParams.of(b), QuantParams.of(out), act, out.dtype)
        return params if isinstance(params, str) else None

    return supports


def _qbinary_scratch(ctx: OpContext) -> int:
    return _binary_scratch(ctx)


def _qbinary_bind(op: int) -> Callable:
    kernel = _QBINARY_KERNELS[op]

    @skip_empty
    def bind(ctx: OpContext, ins: list, outs: list, scratch: np.ndarray | None) -> Step:
        a, b = ins
        out = outs[0]
        ta, tb = ctx.inputs
        act = getattr(ctx.op.options, "fused_activation_function", None)
        params = qbinary_params(op, QuantParams.of(ta), QuantParams.of(tb), QuantParams.of(ctx.outputs[0]), act,
                                out.dtype)
        assert not isinstance(params, str), params
        alias = 1 if same_memory(a, out) else 2 if same_memory(b, out) else 0
        walk, rep, k, row = _binary_walk(a, b, out, scratch)  # a, b and out share one dtype
        return kernel, (*walk, params.vector(), rep, k, row, np.int64(alias))

    return bind


# ---------------------------------------------------------------------------------------------
# Unary ops

(ABS, NEG, SQUARE, SQRT, RSQRT, EXP, LOG, SIN, COS, FLOOR, CEIL, ROUND, RELU, RELU6, RELU_N1_TO_1,
 RELU_0_TO_1, LEAKY_RELU, HARD_SWISH, LOGISTIC, TANH, ELU, GELU_TANH, GELU_ERF) = range(23)
_N_UNARY = 23

_SQRT_2_OVER_PI = np.float32(math.sqrt(2.0 / math.pi))
_MINUS_SQRT1_2 = np.float32(-math.sqrt(0.5))
_LOGISTIC_HI = np.float32(16.619047164916992188)
_LOGISTIC_LO = np.float32(-9.0)
_GELU_C = np.float32(0.044715)


@njit(inline="always")
def _unop(x, op, p):
    if op == ABS:
        return x if x >= 0 else -x
    if op == NEG:
        return -x
    if op == SQUARE:
        return x * x
    if op == SQRT:
        return np.sqrt(x)
    if op == RSQRT:
        return np.float32(1) / np.sqrt(x)
    if op == EXP:
        return expf_fast(x)
    if op == LOG:
        return np.log(x)
    if op == SIN:
        return np.sin(x)
    if op == COS:
        return np.cos(x)
    if op == FLOOR:
        return np.floor(x)
    if op == CEIL:
        return np.ceil(x)
    if op == ROUND:
        return np.rint(x)  # half to even, as TFLite's RoundToNearest
    if op == RELU:
        return np.float32(0) if x < 0 else x
    if op == RELU6:
        return np.float32(6) if x > 6 else (np.float32(0) if x < 0 else x)
    if op == RELU_N1_TO_1:
        return np.float32(1) if x > 1 else (np.float32(-1) if x < -1 else x)
    if op == RELU_0_TO_1:
        return np.float32(1) if x > 1 else (np.float32(0) if x < 0 else x)
    if op == LEAKY_RELU:
        return x if x > 0 else x * p
    if op == HARD_SWISH:
        r = x + np.float32(3)
        r = np.float32(0) if r < 0 else r
        r = np.float32(6) if r > 6 else r
        return x * r / np.float32(6)
    if op == LOGISTIC:
        # TFLite's cut-offs; one exp per element, selected without branches so the loop vectorizes
        low = x < _LOGISTIC_LO
        e = expf_fast(x if low else -x)
        r = e if low else np.float32(1) / (np.float32(1) + e)
        return np.float32(1) if x > _LOGISTIC_HI else r
    if op == TANH:
        return np.tanh(x)
    if op == ELU:
        return np.expm1(x) if x < 0 else x
    if op == GELU_TANH:
        return np.float32(0.5) * x * (np.float32(1) + np.tanh(_SQRT_2_OVER_PI * (x + _GELU_C * x * x * x)))
    # GELU_ERF: erfc form, as TFLite, to avoid cancellation for large negative x
    return np.float32(0.5) * x * np.float32(math.erfc(x * _MINUS_SQRT1_2))


def _make_unary(op: int) -> Callable:
    @njit(nogil=True, cache=True, error_model="numpy")
    def unary_kernel(x, o, shape, sx, so, p, alias):
        """o = f(x); alias 1: o is x's memory."""
        n = shape[5]
        x5, o5 = sx[5], so[5]
        for i0 in range(shape[0]):
            for i1 in range(shape[1]):
                for i2 in range(shape[2]):
                    for i3 in range(shape[3]):
                        for i4 in range(shape[4]):
                            px = i0 * sx[0] + i1 * sx[1] + i2 * sx[2] + i3 * sx[3] + i4 * sx[4]
                            po = i0 * so[0] + i1 * so[1] + i2 * so[2] + i3 * so[3] + i4 * so[4]
                            if o5 == 1 and x5 == 1:
                                ov = o[po:po + n]
                                if alias == 1:
                                    for j in range(n):
                                        ov[j] = _unop(ov[j], op, p)
                                else:
                                    xv = x[px:px + n]
                                    for j in range(n):
                                        ov[j] = _unop(xv[j], op, p)
                            else:
                                for j in range(n):
                                    o[po + j * o5] = _unop(x[px + j * x5], op, p)

    return unary_kernel


_UNARY_KERNELS = {op: _make_unary(op) for op in range(_N_UNARY)}


@dataclass(frozen=True)
class UnarySpec:
    """How one unary TFLite op maps onto the kernel."""

    op: int | Callable[[OpContext], int]
    max_version: int
    dtypes: tuple[np.dtype, ...] = (_F32,)
    param: Callable[[OpContext], float] | None = None


def _gelu_op(ctx: OpContext) -> int:
    return GELU_TANH if getattr(ctx.op.options, "approximate", False) else GELU_ERF


def _leaky_alpha(ctx: OpContext) -> float:
    alpha = getattr(ctx.op.options, "alpha", None)
    return 0.2 if alpha is None else float(alpha)  # schema default


UNARY_OPS: dict[str, UnarySpec] = {
    "ABS": UnarySpec(ABS, 5),
    "NEG": UnarySpec(NEG, 2),
    "SQUARE": UnarySpec(SQUARE, 1),
    "SQRT": UnarySpec(SQRT, 1),
    "RSQRT": UnarySpec(RSQRT, 3),
    "EXP": UnarySpec(EXP, 2),
    "LOG": UnarySpec(LOG, 2),
    "SIN": UnarySpec(SIN, 1),
    "COS": UnarySpec(COS, 1),
    "FLOOR": UnarySpec(FLOOR, 1),
    "CEIL": UnarySpec(CEIL, 1),
    "ROUND": UnarySpec(ROUND, 1),
    "RELU": UnarySpec(RELU, 3),
    "RELU6": UnarySpec(RELU6, 3),
    "RELU_N1_TO_1": UnarySpec(RELU_N1_TO_1, 1),
    "RELU_0_TO_1": UnarySpec(RELU_0_TO_1, 1),
    "LEAKY_RELU": UnarySpec(LEAKY_RELU, 2, param=_leaky_alpha),
    "HARD_SWISH": UnarySpec(HARD_SWISH, 1),
    "LOGISTIC": UnarySpec(LOGISTIC, 3),
    "TANH": UnarySpec(TANH, 3),
    "ELU": UnarySpec(ELU, 1),
    "GELU": UnarySpec(_gelu_op, 2),
}


def _unary_supports(spec: UnarySpec) -> Callable[[OpContext], str | None]:
    def supports(ctx: OpContext) -> str | None:
        reason = (operand_reason(ctx, spec.max_version, 1, 1, "expects 1 input and 1 output")
                  or _dtype_reason(ctx, spec.dtypes) or same_shape_reason(ctx.inputs[0], ctx.outputs[0]))
        if reason:
            return reason
        if len(ctx.outputs[0].shape) > MAX_RANK:
            return f"rank above {MAX_RANK}"
        return None

    return supports


def _unary_bind(spec: UnarySpec) -> Callable:
    @skip_empty
    def bind(ctx: OpContext, ins: list, outs: list, scratch: np.ndarray | None) -> Step:
        x, out = ins[0], outs[0]
        op = spec.op(ctx) if callable(spec.op) else spec.op
        p = spec.param(ctx) if spec.param else 0.0
        alias = 1 if same_memory(x, out) else 0
        fx, sx = flat_view(x, False)
        fo, so = flat_view(out, True)
        shape, (cx, co) = collapse(tuple(out.shape), [list(sx), list(so)])
        return _UNARY_KERNELS[op], (fx, fo, shape, cx, co, out.dtype.type(p), np.int64(alias))

    return bind


def register(registry: KernelRegistry) -> None:
    """Adds the float32 (int32, int8/uint8 where TFLite has them) elementwise kernels."""
    for name, spec in BINARY_OPS.items():
        positions = (0,) if name == "PRELU" else (0, 1)
        registry.add(KernelEntry(op=name, supports=_binary_supports(spec), bind=_binary_bind(spec),
                                 scratch_bytes=_binary_scratch, inplace=_same_shape_inputs(positions), strided_output=True))
    for name, spec in UNARY_OPS.items():
        registry.add(KernelEntry(op=name, supports=_unary_supports(spec), bind=_unary_bind(spec),
                                 inplace=_same_shape_inputs((0,)), strided_output=True))
    for name, (op, max_version) in QBINARY_OPS.items():
        registry.add(KernelEntry(op=name, supports=_qbinary_supports(op, max_version), bind=_qbinary_bind(op),
                                 scratch_bytes=_qbinary_scratch, inplace=_same_shape_inputs((0, 1)),
                                 strided_output=True))
