"""Vector-IR building blocks (numba intrinsics and codegen helpers) shared by the register-blocked kernels.

Why hand-written vector IR: numba's LLVM runs the loop vectorizer but not the SLP vectorizer, and
the full unroller turns a constant 16-wide channel loop into scalars before the loop vectorizer
sees it, so no plain numba formulation of a register-blocked micro-kernel vectorizes (measured
4-9 GFLOP/s). The kernels' intrinsics emit <VW x float> loads, multiplies and adds into an
accumulator block that lives on the stack at constant offsets, which LLVM's SROA promotes to
vector registers: 100-140 GFLOP/s on one core here, without an im2col copy.

Here: the stack buffers, zeroing and copying an accumulator block, and the codegen pieces the
kernels' own intrinsics (conv.py, qgemm.py, pool.py, resize.py) are built from. Each kernel keeps
its numerics in its own intrinsic: e.g. the float conv multiplies and adds separately (the
reference's rounding), the 8-bit one lets them contract (exact either way, see qgemm).
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

VW = 16  # lanes per accumulator block (one AVX-512 register, two AVX2 / four NEON ones)

F32_IR = ir.FloatType()
I32_IR = ir.IntType(32)
I64_IR = ir.IntType(64)
I8P_IR = ir.IntType(8).as_pointer()


def _element_type(dtype):
    # np.float32 / np.int32 inside a jitted function type as NumberClass; accept a dtype too
    if isinstance(dtype, types.NumberClass):
        return dtype.instance_type
    if isinstance(dtype, types.DType):
        return dtype.dtype
    return None


@intrinsic
def stack_buf(typingctx, n, dtype):
    """A pointer to n (literal) elements of dtype (np.float32, np.int32, ...) on the stack of the
    calling function: an entry-block alloca, 64-aligned, whatever loop the call sits in."""
    elt = _element_type(dtype)
    if not isinstance(n, types.IntegerLiteral) or elt is None:
        return None
    size = n.literal_value

    def codegen(context, builder, sig, args):
        lt = context.get_data_type(elt)
        arr = cgutils.alloca_once(builder, ir.ArrayType(lt, size))
        arr.align = 64
        return builder.bitcast(arr, lt.as_pointer())

    return types.CPointer(elt)(n, dtype), codegen


@intrinsic
def stack_buf_dyn(typingctx, n, dtype):
    """A pointer to n (runtime) elements of dtype on the stack, allocated where it is called: call
    it once, outside any loop. Why not stack_buf: LLVM takes seconds per 10 KiB of a fixed-size
    alloca it tries to split (13.8 vs 1.4 s to compile conv's _conv_simd); a dynamic one it leaves alone."""
    elt = _element_type(dtype)
    if not isinstance(n, types.Integer) or elt is None:
        return None

    def codegen(context, builder, sig, args):
        arr = builder.alloca(context.get_data_type(elt), size=args[0])
        arr.align = 64
        return arr

    return types.CPointer(elt)(types.int64, dtype), codegen


def block_ptr(builder, base, index, vt):
    """base + index elements (index an int or an i64 value), as a pointer to the vector type vt."""
    if isinstance(index, int):
        index = ir.Constant(I64_IR, index)
    return builder.bitcast(builder.gep(base, [index]), vt.as_pointer())


def byte_ptr(builder, base, offset, ty):
    """The i8* base + offset bytes as a pointer to ty."""
    return builder.bitcast(builder.gep(base, [offset]), ty.as_pointer())


def array_bytes(context, builder, aryty, value):
    """The data pointer of a numba array argument, as i8* (kernels address it in bytes via strides)."""
    return builder.bitcast(context.make_array(aryty)(context, builder, value).data, I8P_IR)


def splat(builder, value, vt):
    """The scalar value broadcast to every lane of the vector type vt."""
    e = builder.insert_element(ir.Constant(vt, None), value, ir.Constant(I32_IR, 0))
    return builder.shuffle_vector(e, ir.Constant(vt, None), ir.Constant(ir.VectorType(I32_IR, vt.count), None))


def strided(builder, start, step, p):
    """start + p*step for i64 values start, step and a Python int p."""
    return builder.add(start, builder.mul(step, ir.Constant(I64_IR, p)))


def tap_column(builder, ix0, step, p, wd, checked):
    """(column, valid) of pixel p of a block: ix0 + p*step. When checked, a column outside [0, wd)
    is replaced by 0 (safe to read) and valid is the i1 that says so; otherwise valid is None."""
    ix = strided(builder, ix0, step, p)
    if not checked:
        return ix, None
    valid = builder.and_(builder.icmp_signed(">=", ix, ir.Constant(I64_IR, 0)), builder.icmp_signed("<", ix, wd))
    return builder.select(valid, ix, ir.Constant(I64_IR, 0)), valid


def tap_load(builder, base, xb, colbytes, ix0, step, p, wd, checked, ty, zero):
    """The ty value of block pixel p, at byte xb + column * colbytes of the i8* base, column =
    ix0 + p*step; when checked and the column is outside [0, wd): `zero`, and nothing outside is read."""
    ix, valid = tap_column(builder, ix0, step, p, wd, checked)
    v = builder.load(byte_ptr(builder, base, builder.add(xb, builder.mul(ix, colbytes)), ty), align=4)
    return builder.select(valid, v, zero) if checked else v


def vclamp(builder, v, lov, hiv):
    """v clamped to [lov, hiv] lane by lane by ordered compares, so a NaN lane stays NaN (as conv.clamp)."""
    v = builder.select(builder.fcmp_ordered("<", v, lov), lov, v)
    return builder.select(builder.fcmp_ordered(">", v, hiv), hiv, v)


def mac_block(builder, acc_p, p, xv, wv, contract):
    """acc[p*VW : p*VW + lanes] += xv * wv (vectors of the same type). contract=False: multiply and
    add each rounded, as the float reference does; True lets LLVM fuse them (only where exact)."""
    flags = ("contract",) if contract else ()
    ap = block_ptr(builder, acc_p, p * VW, xv.type)
    builder.store(builder.fadd(builder.load(ap, align=4), builder.fmul(xv, wv, flags=flags), flags=flags), ap,
                  align=4)


def broadcast_mac(builder, acc_p, p, x, wv, contract):
    """acc[p*VW : (p+1)*VW] += x * wv for the float scalar x (broadcast) and the <VW x float> wv."""
    mac_block(builder, acc_p, p, splat(builder, x, wv.type), wv, contract)


def _per_block(n, emit):
    """For a literal n (a multiple of VW): a codegen calling emit(builder, args, offset, vt) for
    each VW block at its constant element offset (vt = <VW x float>). None for a non-literal n."""
    if not isinstance(n, types.IntegerLiteral):
        return None
    count = n.literal_value

    def codegen(context, builder, sig, args):
        vt = ir.VectorType(F32_IR, VW)
        for b in range(count // VW):
            emit(builder, args, b * VW, vt)
        return context.get_dummy_value()

    return codegen


def _store_zero(builder, args, off, vt):
    builder.store(ir.Constant(vt, None), block_ptr(builder, args[0], off, vt), align=4)


def _move(builder, args, off, vt):
    s = block_ptr(builder, args[0], off, vt)
    d = block_ptr(builder, args[1], off, vt)
    builder.store(builder.load(s, align=4), d, align=4)


@intrinsic
def vzero(typingctx, acc, n):
    """acc[0:n] = 0 for a literal n that is a multiple of VW (float32 acc)."""
    codegen = _per_block(n, _store_zero)
    return None if codegen is None else (types.none(acc, n), codegen)


@intrinsic
def vcopy(typingctx, src, dst, n):
    """dst[0:n] = src[0:n] for a literal n that is a multiple of VW (float32; vector moves at
    constant offsets, so the accumulator block `src` stays promotable to registers)."""
    codegen = _per_block(n, _move)
    return None if codegen is None else (types.none(src, dst, n), codegen)


def _vconst(vt, value):
    return ir.Constant(vt, [value] * vt.count)


def _as_i32(builder, v):
    return builder.trunc(v, I32_IR) if v.type.width > 32 else v


def vrequantize(builder, acc, mult, shift, zp, lo, hi):
    """The <n x i32> accumulators requantized lane by lane, bit for bit as fixedpoint.requantize(...,
    single=False): MultiplyByQuantizedMultiplier with double rounding, + zp, clamped to [lo, hi].

    mult, shift: <n x i32> per lane (every shift <= 31); zp, lo, hi: integer scalars. The clamp runs
    before adding zp (to [lo - zp, hi - zp], equal in integers) so the add cannot wrap in i32.
    """
    vt = acc.type
    v64 = ir.VectorType(I64_IR, vt.count)
    zero, one = _vconst(vt, 0), _vconst(vt, 1)
    left = builder.select(builder.icmp_signed(">", shift, zero), shift, zero)
    right = builder.and_(builder.select(builder.icmp_signed("<", shift, zero), builder.sub(zero, shift), zero),
                         _vconst(vt, 31))
    x = builder.shl(acc, left)
    prod = builder.add(builder.mul(builder.sext(x, v64), builder.sext(mult, v64)), _vconst(v64, 1 << 30))
    q = builder.trunc(builder.ashr(prod, _vconst(v64, 31)), vt)
    mask = builder.sub(builder.shl(one, right), one)
    threshold = builder.add(builder.ashr(mask, one), builder.zext(builder.icmp_signed("<", q, zero), vt))
    up = builder.zext(builder.icmp_signed(">", builder.and_(q, mask), threshold), vt)
    v = builder.add(builder.ashr(q, right), up)
    zp32, lo32, hi32 = _as_i32(builder, zp), _as_i32(builder, lo), _as_i32(builder, hi)
    lov, hiv = splat(builder, builder.sub(lo32, zp32), vt), splat(builder, builder.sub(hi32, zp32), vt)
    v = builder.select(builder.icmp_signed("<", v, lov), lov, v)
    v = builder.select(builder.icmp_signed(">", v, hiv), hiv, v)
    return builder.add(v, splat(builder, zp32, vt))
