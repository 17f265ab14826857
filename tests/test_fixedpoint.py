"""TFLite integer arithmetic (edgert.kernels.fixedpoint) and the quantized activation kernels (qactivations).

The fixed-point helpers are checked against a pure-Python big-integer transcription of the C++
formulas (common.h/common.cc, quantization_util.cc, gemmlowp fixedpoint.h) written in this file,
and against plain math where the formula approximates a real function. Kernels are checked
against LiteRT BUILTIN_REF on one-op models and on the activations of real quantized models.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from numba import njit

from oneop import (assert_no_allocation, bind_one, build_one_op, check_real_model_ops, family_registry, quant,
                   reference_outputs, run_one, shared_model)
from edgert.kernels import fixedpoint as fp
from edgert.kernels import qactivations, quant as quant_kernels
from edgert.kernels.registry import KernelRegistry, OpContext, default_registry
from edgert.model.reader import load_model

I32_MIN, I32_MAX = -(1 << 31), (1 << 31) - 1


# ------------------------------------------------------------------------------------------------
# the C++ formulas in Python integers


def _i32(v: int) -> int:
    return ((v + (1 << 31)) % (1 << 32)) - (1 << 31)


def _i16(v: int) -> int:
    return ((v + (1 << 15)) % (1 << 16)) - (1 << 15)


def _tdiv(a: int, b: int) -> int:
    """C++ integer division: truncates toward zero."""
    q = abs(a) // abs(b)
    return q if (a < 0) == (b < 0) else -q


def _round_away(x: Fraction) -> int:
    """Nearest integer, halves away from zero (std::round)."""
    n = math.floor(abs(x) + Fraction(1, 2))
    return n if x >= 0 else -n


def ref_srdhm(a: int, b: int) -> int:
    if a == b == I32_MIN:
        return I32_MAX
    ab = a * b
    return _i32(_tdiv(ab + ((1 << 30) if ab >= 0 else 1 - (1 << 30)), 1 << 31))


def ref_rdbp(x: int, e: int) -> int:
    """RoundingDivideByPOT stated as what it is: x / 2^e, nearest, ties away from zero."""
    return _round_away(Fraction(x, 1 << e))


def ref_mbqm(x: int, m: int, s: int) -> int:
    return ref_rdbp(ref_srdhm(_i32(x * (1 << max(s, 0))), m), max(-s, 0))


def ref_mbqm_single(x: int, m: int, s: int) -> int:
    total = 31 - s
    return _i32((x * m + (1 << (total - 1))) >> total)


def ref_mbqm_int64(x: int, m: int, s: int) -> int:
    reduced = (m + (1 << 15)) >> 16 if m < 0x7FFF0000 else 0x7FFF
    total = 15 - s
    return _i32((x * reduced + (1 << (total - 1))) >> total)


def ref_sat_pot(x: int, e: int) -> int:
    if e == 0:
        return x
    if e < 0:
        return ref_rdbp(x, -e)
    thr = (1 << (31 - e)) - 1
    return I32_MAX if x > thr else I32_MIN if x < -thr else x << e


def ref_exp_quarter(a: int) -> int:
    x = _i32(a + (1 << 28))
    x2 = ref_srdhm(x, x)
    x3 = ref_srdhm(x2, x)
    x4 = ref_srdhm(x2, x2)
    poly = ref_rdbp(_i32(ref_srdhm(_i32(ref_rdbp(x4, 2) + x3), 715827883) + x2), 1)
    return _i32(1895147668 + ref_srdhm(1895147668, _i32(x + poly)))


def ref_exp_on_negative_values(a: int, ib: int) -> int:
    fb = 31 - ib
    quarter = 1 << (fb - 2)
    amq = (a & (quarter - 1)) - quarter
    result = ref_exp_quarter(ref_sat_pot(amq, ib))
    remainder = _i32(amq - a)
    for exponent, mult in ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308),
                           (2, 39332535), (3, 720401), (4, 242)):
        if ib > exponent and remainder & (1 << (fb + exponent)):
            result = ref_srdhm(result, mult)
    if ib > 5 and a < -(1 << (36 - ib)):
        result = 0
    return I32_MAX if a == 0 else result


def ref_one_over_one_plus_x(a: int) -> int:
    s = a + I32_MAX
    half = _tdiv(s + (1 if s >= 0 else -1), 2)
    x = _i32(1515870810 + ref_srdhm(half, -1010580540))
    for _ in range(3):
        x = _i32(x + ref_sat_pot(ref_srdhm(x, _i32((1 << 29) - ref_srdhm(half, x))), 2))
    return ref_sat_pot(x, 1)


# ------------------------------------------------------------------------------------------------
# vectorised calls of the numba helpers (one compiled loop per helper)


@njit
def _map1(f, a, out):
    for i in range(a.shape[0]):
        out[i] = f(a[i])


@njit
def _map2(f, a, b, out):
    for i in range(a.shape[0]):
        out[i] = f(a[i], b[i])


@njit
def _map3(f, a, b, c, out):
    for i in range(a.shape[0]):
        out[i] = f(a[i], b[i], c[i])


def _call(f, *cols) -> list[int]:
    arrays = [np.asarray(c, np.int64) for c in cols]
    out = np.empty(arrays[0].shape[0], np.int64)
    {1: _map1, 2: _map2, 3: _map3}[len(arrays)](f, *arrays, out)
    return [int(v) for v in out]


_EDGE32 = [I32_MIN, I32_MIN + 1, -(1 << 30), -65536, -257, -2, -1, 0, 1, 2, 255, 65535, 1 << 30, I32_MAX - 1, I32_MAX]


def _int32_samples(n: int, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    wide = rng.integers(I32_MIN, I32_MAX, n, endpoint=True)
    small = rng.integers(-70000, 70000, n)
    return _EDGE32 + [int(v) for v in wide] + [int(v) for v in small]


# ------------------------------------------------------------------------------------------------
# quantize_multiplier and friends


@pytest.mark.parametrize("real,expected", [
    (0.0, (0, 0)),
    (0.5, (1 << 30, 0)),
    (1.0, (1 << 30, 1)),
    (0.25, (1 << 30, -1)),
    (-0.5, (-(1 << 30), 0)),
    (1 - 2.0**-40, (1 << 30, 1)),  # q * 2^31 rounds up to 2^31: halved, shift + 1
    (2.0**-31, (1 << 30, -30)),
    (2.0**-32, (1 << 30, -31)),
    (2.0**-33, (0, 0)),  # shift < -31 flushes to zero
    (2.0**40, (1 << 30, 41)),  # the default build does not saturate large shifts
])
def test_quantize_multiplier_cases(real, expected):
    assert fp.quantize_multiplier(real) == expected


def test_quantize_multiplier_single_rounding_saturates_large_shifts():
    assert fp.quantize_multiplier(2.0**40, single_rounding=True) == (I32_MAX, 30)
    assert fp.quantize_multiplier(0.3, single_rounding=True) == fp.quantize_multiplier(0.3)


def test_quantize_multiplier_matches_exact_rounding():
    rng = np.random.default_rng(1)
    reals = np.concatenate([rng.uniform(1e-6, 4.0, 2000), 2.0 ** rng.uniform(-31, 20, 500)])
    for real in map(float, reals):
        m, s = fp.quantize_multiplier(real)
        mant, e = math.frexp(real)
        q = _round_away(Fraction(mant) * (1 << 31))
        if q == 1 << 31:
            q, e = q // 2, e + 1
        assert (m, s) == (q, e), real
        assert (1 << 30) <= m < (1 << 31)
        assert abs(m * 2.0 ** (s - 31) - real) <= real * 2.0**-30


def test_quantize_multiplier_array_and_consistency_with_quant_module():
    reals = [0.0, 0.3, 1.7, 2.0**-20, 123.456]
    mult, shift = fp.quantize_multiplier_array(reals)
    assert mult.dtype == np.int32 and shift.dtype == np.int32
    assert [(int(m), int(s)) for m, s in zip(mult, shift)] == [fp.quantize_multiplier(r) for r in reals]
    for r in reals:  # quant.py keeps its own copy; both must agree in the range models use
        assert quant_kernels.quantize_multiplier(r) == fp.quantize_multiplier(r)


def test_multiplier_range_helpers_and_radius():
    assert fp.quantize_multiplier_greater_than_one(3.0) == (3 << 29, 2)
    with pytest.raises(ValueError):
        fp.quantize_multiplier_greater_than_one(0.9)
    assert fp.quantize_multiplier_smaller_than_one_exp(0.75) == (3 << 29, 0)
    with pytest.raises(ValueError):
        fp.quantize_multiplier_smaller_than_one_exp(1.0)
    assert fp.down_scale_int32_to_int16_multiplier(1 << 30) == 1 << 14
    assert fp.down_scale_int32_to_int16_multiplier((1 << 30) + (1 << 15)) == (1 << 14) + 1  # tie rounds up
    assert fp.down_scale_int32_to_int16_multiplier(I32_MAX) == 32767
    # CalculateInputRadius: floor((2^bits - 1) * 2^(31 - bits) / 2^shift)
    assert fp.calculate_input_radius(5, 3) == (31 << 26) >> 3
    assert fp.calculate_input_radius(4, 20, 15) == math.floor(15 * 2**11 / 2**20)


def test_softmax_params_match_formula():
    m, s, diff_min = fp.softmax_params(1.0, 0.1)
    real = float(np.float32(0.1)) * (1 << 26)
    assert (m, s) == fp.quantize_multiplier(real)
    assert diff_min == -math.floor(31 * 2.0**26 / 2.0**s)
    # a huge beta * scale is capped at 2^31 - 1 before quantizing
    assert fp.softmax_params(1e6, 1.0)[:2] == fp.quantize_multiplier(float(I32_MAX))


# ------------------------------------------------------------------------------------------------
# activation ranges


@pytest.mark.parametrize("act,scale,zp,dtype,expected", [
    ("NONE", 0.1, 0, np.int8, (-128, 127)),
    ("TANH", 0.1, 0, np.int8, (-128, 127)),  # quantized kernels do not clamp for TANH
    ("RELU", 0.05, -10, np.int8, (-10, 127)),
    ("RELU", 0.05, -200, np.int16, (-200, 32767)),
    ("RELU6", 0.05, -128, np.int8, (-128, -8)),  # 6 / 0.05 = 120
    ("RELU6", 0.01, 0, np.uint8, (0, 255)),  # 600 clamps to the dtype
    ("RELU6", 4.0, 0, np.int8, (0, 2)),  # 1.5 rounds away from zero, not to even
    ("RELU_N1_TO_1", 2.0, 0, np.int8, (-1, 1)),  # +-0.5 round away from zero
    ("RELU_N1_TO_1", 0.01, 120, np.uint8, (20, 220)),
])
def test_activation_range_quantized(act, scale, zp, dtype, expected):
    assert fp.activation_range_quantized(act, scale, zp, dtype) == expected


def test_activation_range_uses_float32_division():
    scale = 0.1  # 6 / float32(0.1) is 59.999998..., 60 after rounding either way; check the float32 path
    lo, hi = fp.activation_range_quantized("RELU6", scale, 3, np.int8)
    assert hi == 3 + int(np.round(np.float32(6.0) / np.float32(scale)))
    assert lo == 3


# ------------------------------------------------------------------------------------------------
# int32 primitives vs the Python transcription


def test_srdhm_matches_reference_including_saturation():
    xs = _int32_samples(3000, 2)
    rng = np.random.default_rng(3)
    ys = [int(v) for v in rng.integers(I32_MIN, I32_MAX, len(xs), endpoint=True)]
    ys[:len(_EDGE32)] = list(reversed(_EDGE32))
    xs += [I32_MIN, I32_MIN, I32_MAX, 1 << 30, -(1 << 30), -3]
    ys += [I32_MIN, I32_MAX, I32_MAX, 1 << 30, 1 << 30, 1 << 30]
    got = _call(fp.saturating_rounding_doubling_high_mul, xs, ys)
    assert got == [ref_srdhm(a, b) for a, b in zip(xs, ys)]
    assert got[-6] == I32_MAX  # INT32_MIN * INT32_MIN saturates
    assert got[-1] == -1  # -3 * 2^30 / 2^31 = -1.5 rounds away from zero


def test_rounding_divide_by_pot_ties_and_negatives():
    cases = [(5, 1), (-5, 1), (6, 2), (-6, 2), (-2, 2), (2, 2), (3, 1), (-3, 1), (I32_MIN, 31), (I32_MAX, 31),
             (-1, 31), (1, 0), (-7, 0), (12, 3), (-12, 3)]
    xs, es = zip(*cases)
    got = _call(fp.rounding_divide_by_pot, xs, es)
    assert got == [ref_rdbp(x, e) for x, e in cases]
    assert got[:4] == [3, -3, 2, -2]  # ties go away from zero
    samples = _int32_samples(1000, 4)
    exps = [int(v) for v in np.random.default_rng(5).integers(0, 32, len(samples))]
    assert _call(fp.rounding_divide_by_pot, samples, exps) == [ref_rdbp(x, e) for x, e in zip(samples, exps)]


def test_saturating_rounding_multiply_by_pot():
    xs = _int32_samples(500, 6)
    es = [int(v) for v in np.random.default_rng(7).integers(-31, 31, len(xs))]
    assert _call(fp.saturating_rounding_multiply_by_pot, xs, es) == [ref_sat_pot(x, e) for x, e in zip(xs, es)]


def _multiplier_cases(n: int, seed: int):
    rng = np.random.default_rng(seed)
    xs = _int32_samples(n, seed)
    ms = [int(v) for v in rng.integers(1 << 30, 1 << 31, len(xs))]
    shifts = [int(v) for v in rng.integers(-31, 8, len(xs))]
    ms[:3] = [0, 1 << 30, I32_MAX]
    return xs, ms, shifts


def test_multiply_by_quantized_multiplier_double_rounding():
    xs, ms, shifts = _multiplier_cases(3000, 8)
    got = _call(fp.multiply_by_quantized_multiplier, xs, ms, shifts)
    assert got == [ref_mbqm(*c) for c in zip(xs, ms, shifts)]
    # where nothing saturates or wraps it is x * m * 2^(shift-31) within one step
    for x, m, s, g in zip(xs, ms, shifts, got):
        if abs(x) < (1 << 20) and s <= 0:
            assert abs(g - x * m * 2.0 ** (s - 31)) <= 1.0
    assert got == _call(quant_kernels.multiply_by_quantized_multiplier, xs, ms, shifts)


def test_double_and_single_rounding_differ_where_expected():
    # 5 * 2^30 / 2^31 = 2.5: double rounding rounds to 3 first, then 3 / 2 = 1.5 -> 2; single: 1.25 -> 1
    assert _call(fp.multiply_by_quantized_multiplier, [5], [1 << 30], [-1]) == [2]
    assert _call(fp.multiply_by_quantized_multiplier_single_rounding, [5], [1 << 30], [-1]) == [1]
    xs, ms, shifts = _multiplier_cases(3000, 9)
    shifts = [min(s, 0) for s in shifts]
    double = _call(fp.multiply_by_quantized_multiplier, xs, ms, shifts)
    single = _call(fp.multiply_by_quantized_multiplier_single_rounding, xs, ms, shifts)
    assert single == [ref_mbqm_single(*c) for c in zip(xs, ms, shifts)]
    small = [(d, s) for x, d, s in zip(xs, double, single) if abs(x) < (1 << 24)]
    assert all(abs(d - s) <= 1 for d, s in small)
    assert any(d != s for d, s in small)  # the two builds really differ, so the choice matters


def test_multiply_by_quantized_multiplier_int64_accumulator():
    rng = np.random.default_rng(10)
    xs = [int(v) for v in rng.integers(-(1 << 47), 1 << 47, 2000)] + [0, -1, 1, (1 << 47) - 1, -(1 << 47)]
    ms = [int(v) for v in rng.integers(1 << 30, 1 << 31, len(xs))]
    ms[:2] = [0x7FFF0000, I32_MAX]
    shifts = [int(v) for v in rng.integers(-31, -16, len(xs))]
    got = _call(fp.multiply_by_quantized_multiplier_int64, xs, ms, shifts)
    assert got == [ref_mbqm_int64(*c) for c in zip(xs, ms, shifts)]


def test_smaller_than_one_and_greater_than_one_helpers():
    xs, ms, _ = _multiplier_cases(1000, 11)
    rng = np.random.default_rng(12)
    neg = [int(v) for v in rng.integers(-20, 1, len(xs))]
    pos = [int(v) for v in rng.integers(0, 12, len(xs))]
    assert _call(fp.multiply_by_quantized_multiplier_smaller_than_one_exp, xs, ms, neg) == [
        ref_rdbp(ref_srdhm(x, m), -s) for x, m, s in zip(xs, ms, neg)]
    assert _call(fp.multiply_by_quantized_multiplier_greater_than_one, xs, ms, pos) == [
        ref_srdhm(_i32(x << s), m) for x, m, s in zip(xs, ms, pos)]


def test_count_leading_zeros_and_rounding_half_sum():
    xs = [0, 1, 2, 3, 255, 1 << 30, I32_MAX, -1, I32_MIN]
    got = [int(fp.count_leading_zeros32(x)) for x in xs]
    assert got == [32, 31, 30, 30, 24, 1, 1, 0, 0]
    pairs = [(1, 2), (-1, -2), (3, 4), (-3, -4), (I32_MAX, I32_MAX), (I32_MIN, I32_MIN), (0, 0), (-1, 0)]
    assert _call(fp.rounding_half_sum, *zip(*pairs)) == [
        _tdiv(a + b + (1 if a + b >= 0 else -1), 2) for a, b in pairs]
    assert _call(fp.rounding_half_sum, [1, -1], [2, -2]) == [2, -2]


# ------------------------------------------------------------------------------------------------
# gemmlowp functions


@pytest.mark.parametrize("integer_bits", [0, 2, 5, 6, 12])
def test_exp_on_negative_values(integer_bits):
    rng = np.random.default_rng(integer_bits)
    xs = [0, -1, I32_MIN, -(1 << (31 - integer_bits))] + [int(v) for v in rng.integers(I32_MIN, 1, 1500)]
    got = _call(fp.exp_on_negative_values, xs, [integer_bits] * len(xs))
    assert got == [ref_exp_on_negative_values(x, integer_bits) for x in xs]
    for x, g in zip(xs, got):
        assert abs(g / 2.0**31 - math.exp(x / 2.0 ** (31 - integer_bits))) < 5e-7


def test_one_over_one_plus_x_and_reciprocal():
    rng = np.random.default_rng(13)
    xs = [0, 1, I32_MAX - 1, I32_MAX] + [int(v) for v in rng.integers(0, I32_MAX, 1500)]
    got = _call(fp.one_over_one_plus_x_for_x_in_0_1, xs)
    assert got == [ref_one_over_one_plus_x(x) for x in xs]
    for x, g in zip(xs, got):
        assert abs(g / 2.0**31 - 1.0 / (1.0 + x / 2.0**31)) < 1e-8

    @njit
    def recip(values, out, nbits):
        for i in range(values.shape[0]):
            out[i], nbits[i] = fp.get_reciprocal(values[i], 12)

    sums = np.asarray([1 << 19, (1 << 19) + 1, 3 << 19, 1000 << 19, 1, I32_MAX], np.int64)
    out, nbits = np.empty_like(sums), np.empty_like(sums)
    recip(sums, out, nbits)
    for s, r, n in zip(sums, out, nbits):  # 1/x == r * 2^-31 * 2^-n, x in Q12.19
        assert abs(r / 2.0**31 / 2.0**n - 1.0 / (s / 2.0**19)) <= 2.0**-26 / 2.0**n * 4


def test_int16_primitives():
    rng = np.random.default_rng(14)
    a = [-32768, -32768, 32767, -1, 1] + [int(v) for v in rng.integers(-32768, 32768, 1000)]
    b = [-32768, 32767, 32767, 16384, -16384] + [int(v) for v in rng.integers(-32768, 32768, 1000)]
    srdhm16 = [32767 if x == y == -32768 else _i16(_tdiv(x * y + ((1 << 14) if x * y >= 0 else 1 - (1 << 14)), 1 << 15))
               for x, y in zip(a, b)]
    assert _call(fp.saturating_rounding_doubling_high_mul16, a, b) == srdhm16
    sdhm16 = [32767 if x == y == -32768 else _i16(_tdiv(x * y, 1 << 15)) for x, y in zip(a, b)]
    assert _call(fp.saturating_doubling_high_mul16, a, b) == sdhm16
    e = [int(v) for v in rng.integers(0, 15, len(a))]
    assert _call(fp.rounding_divide_by_pot16, a, e) == [ref_rdbp(x, k) for x, k in zip(a, e)]
    assert _call(fp.saturating_left_shift16, [300, -300, 5], [7, 7, 2]) == [32767, -32768, 20]


# ------------------------------------------------------------------------------------------------
# QUANTIZE / requantize (quant.py kernels) against LiteRT: full input sweeps


def _registry() -> KernelRegistry:
    return family_registry(quant_kernels, qactivations)


def _run(model: bytes, inputs: list[np.ndarray]) -> np.ndarray:
    return run_one(model, inputs, registry=_registry())[0]


def _all_values(dtype) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.arange(info.min, info.max + 1).astype(dtype)


@pytest.mark.parametrize("src,qs,dst,qd", [
    (np.int8, quant(0.02, 5), np.int8, quant(0.0031, -7)),  # ratio > 1: left shift path
    (np.int8, quant(0.003, -1), np.int8, quant(0.02, 9)),  # ratio < 1
    (np.uint8, quant(0.5, 128), np.int8, quant(0.5, 0)),  # same scale, +128 fast path
    (np.int16, quant(0.00037, 0), np.int8, quant(0.051, -3)),
    (np.int16, quant(0.0021, 0), np.int16, quant(0.0007, 0)),
])
def test_requantize_every_input_value_equals_litert(src, qs, dst, qd):
    x = _all_values(src)
    model = build_one_op("QUANTIZE", [(x.shape, src, qs)], [(x.shape, dst, qd)], version=2)
    np.testing.assert_array_equal(_run(model, [x]), reference_outputs(model, [x])[0])


@pytest.mark.parametrize("dst,q", [(np.int8, quant(0.037, -11)), (np.uint8, quant(0.0117, 77)),
                                   (np.int16, quant(0.00091, 0))])
def test_quantize_float_ties_and_saturation_equal_litert(dst, q):
    s = np.float32(q.scale)
    k = np.arange(-300, 300, dtype=np.float32)
    # Saturation is tested up to |x / scale| = 2^30. Beyond 2^31 LiteRT's static_cast<int32_t> of the
    # rounded float is undefined: x86 gives INT32_MIN (so +1e9 -> the dtype's minimum), ARM saturates;
    # edgert saturates (see docs/quantized.md).
    big = np.float32(2.0**30) * s
    x = np.concatenate([(k + np.float32(0.5)) * s, k * s, np.asarray([big, -big, 0.0, -0.0], np.float32),
                        np.random.default_rng(15).normal(0, 40 * float(s), 3000).astype(np.float32)])
    model = build_one_op("QUANTIZE", [(x.shape, np.float32)], [(x.shape, dst, q)], version=2)
    np.testing.assert_array_equal(_run(model, [x]), reference_outputs(model, [x])[0])


# ------------------------------------------------------------------------------------------------
# quantized activations against LiteRT one-op models (all equal: 0 elements off by one)


_Q8_PARAMS = [
    (np.int8, 0.1, -3), (np.int8, 0.0123, 60), (np.int8, 0.35, -128),
    (np.uint8, 0.05, 128), (np.uint8, 0.21, 3),
]


@pytest.mark.parametrize("dtype,scale,zp", _Q8_PARAMS)
def test_logistic_every_input_equals_litert(dtype, scale, zp):
    x = _all_values(dtype)
    qout = quant(1 / 256, -128 if dtype == np.int8 else 0)
    model = build_one_op("LOGISTIC", [(x.shape, dtype, quant(scale, zp))], [(x.shape, dtype, qout)], version=2)
    np.testing.assert_array_equal(_run(model, [x]), reference_outputs(model, [x])[0])


@pytest.mark.parametrize("dtype,scale,zp", _Q8_PARAMS)
def test_tanh_every_input_equals_litert(dtype, scale, zp):
    x = _all_values(dtype)
    qout = quant(1 / 128, 0 if dtype == np.int8 else 128)
    model = build_one_op("TANH", [(x.shape, dtype, quant(scale, zp))], [(x.shape, dtype, qout)], version=2)
    np.testing.assert_array_equal(_run(model, [x]), reference_outputs(model, [x])[0])


@pytest.mark.parametrize("dtype,si,zi,so,zo", [
    (np.int8, 0.0235, -5, 0.0201, -106),  # MobileNet v3-like
    (np.int8, 0.2, 20, 0.1, -100),
    (np.int8, 0.004, 0, 0.5, 0),  # reluish multiplier < 1: right-shift path
    (np.int8, 1.5, -10, 1.2, -120),  # reluish exponent > 0: saturating left shifts
    (np.uint8, 0.05, 128, 0.03, 20),
    (np.uint8, 0.3, 10, 0.7, 5),
])
def test_hard_swish_every_input_equals_litert(dtype, si, zi, so, zo):
    x = _all_values(dtype)
    model = build_one_op("HARD_SWISH", [(x.shape, dtype, quant(si, zi))], [(x.shape, dtype, quant(so, zo))])
    np.testing.assert_array_equal(_run(model, [x]), reference_outputs(model, [x])[0])


@pytest.mark.parametrize("src,dst,qout", [
    (np.int8, np.int8, quant(1 / 256, -128)),
    (np.uint8, np.uint8, quant(1 / 256, 0)),
    (np.int8, np.int16, quant(1 / 32768, 0)),
])
@pytest.mark.parametrize("shape,beta,scale", [
    ((1, 1000), 1.0, 0.1),
    ((2, 3, 10), 0.5, 0.3),  # wide spread: many differences below diff_min are skipped
    ((4, 1), 1.0, 0.05),  # depth 1
    ((3, 17), 2.0, 0.0078),
    ((7,), 1.0, 0.9),
])
def test_softmax_equals_litert(src, dst, qout, shape, beta, scale):
    rng = np.random.default_rng(sum(shape))
    info = np.iinfo(src)
    x = rng.integers(info.min, info.max + 1, shape).astype(src)
    x.reshape(-1)[:2] = info.max  # ties for the row max
    model = build_one_op("SOFTMAX", [(shape, src, quant(scale, 7))], [(shape, dst, qout)], options={"beta": beta},
                         version=2)
    np.testing.assert_array_equal(_run(model, [x]), reference_outputs(model, [x])[0])


@pytest.mark.parametrize("op", ["LOGISTIC", "HARD_SWISH", "SOFTMAX", "TANH"])
def test_in_place_and_no_allocation(op):
    shape, q = (2, 4, 4, 8), quant(0.07, -4)
    qout = {"LOGISTIC": quant(1 / 256, -128), "SOFTMAX": quant(1 / 256, -128), "TANH": quant(1 / 128, 0)}.get(op, q)
    options = {"beta": 1.0} if op == "SOFTMAX" else None
    version = 1 if op == "HARD_SWISH" else 2
    model = build_one_op(op, [(shape, np.int8, q)], [(shape, np.int8, qout)], options=options, version=version)
    x = np.random.default_rng(16).integers(-128, 128, shape).astype(np.int8)
    ref = reference_outputs(model, [x])[0]
    buf = x.copy()
    fn, args, _, entry, ctx = bind_one(model, [buf], registry=_registry(), outs=[buf])
    assert entry.inplace(ctx) == (0,)
    fn(*args)
    np.testing.assert_array_equal(buf, ref)
    assert_no_allocation(fn, args, limit=1024, calls=3)


def test_unsupported_quantized_cases_are_reported():
    reg = _registry()

    def reason(model: bytes) -> str:
        sg = load_model(model).main
        found = reg.find(OpContext.of(sg, sg.operators[0]))
        assert isinstance(found, str)
        return found

    q = quant(0.1, 0)
    assert "1/256" in reason(build_one_op("LOGISTIC", [((4,), np.int8, q)], [((4,), np.int8, q)], version=2))
    assert "-128" in reason(build_one_op("SOFTMAX", [((4,), np.int8, q)], [((4,), np.int8, quant(1 / 256, 0))],
                                         options={"beta": 1.0}, version=2))
    assert "int16" in reason(build_one_op("TANH", [((4,), np.int16, q)], [((4,), np.int16, q)], version=3))
    assert "per-channel" in reason(build_one_op("HARD_SWISH", [((2, 4), np.int8, quant([0.1, 0.2], 0, axis=0))],
                                                [((2, 4), np.int8, q)]))


def test_default_registry_has_quantized_activations():
    reg = default_registry()
    model = build_one_op("HARD_SWISH", [((1, 8), np.int8, quant(0.1, 0))], [((1, 8), np.int8, quant(0.1, 0))])
    sg = load_model(model).main
    assert reg.lookup(OpContext.of(sg, sg.operators[0])).bind is qactivations.bind_hard_swish_q8


# ------------------------------------------------------------------------------------------------
# real models: every quantized activation op on LiteRT's own intermediate tensors


_REAL = ["zoo/mobilenet_v3_small_224_int8.tflite", "real/pymicro-wakeword/alexa.tflite",
         "zoo/kws_ds_cnn_int8.tflite", "zoo/ic_resnet8_int8.tflite"]


@pytest.mark.parametrize("name", _REAL)
def test_real_model_activations_equal_litert(name):
    checked = check_real_model_ops(shared_model(name), ("LOGISTIC", "TANH", "SOFTMAX", "HARD_SWISH"),
                                   np.testing.assert_array_equal, seed=17)
    assert sum(checked.values()) > 0


# ------------------------------------------------------------------------------------------------
# the per-op parameter helpers, checked end to end: small int8 kernels written here with fixedpoint
# reproduce LiteRT's ADD, MUL and CONV_2D exactly (these are what the int8 kernel authors build on)


@njit
def _add_q8(x1, x2, out, zp1, zp2, zpo, left_shift, m1, s1, m2, s2, mo, so, lo, hi):
    for i in range(x1.shape[0]):
        v1 = fp.multiply_by_quantized_multiplier_smaller_than_one_exp((np.int64(x1[i]) - zp1) << left_shift, m1, s1)
        v2 = fp.multiply_by_quantized_multiplier_smaller_than_one_exp((np.int64(x2[i]) - zp2) << left_shift, m2, s2)
        r = fp.multiply_by_quantized_multiplier_smaller_than_one_exp(fp.wrap32(v1 + v2), mo, so) + zpo
        out[i] = min(max(r, lo), hi)


@njit
def _mul_q8(x1, x2, out, zp1, zp2, zpo, m, s, lo, hi):
    for i in range(x1.shape[0]):
        r = fp.multiply_by_quantized_multiplier((np.int64(x1[i]) - zp1) * (np.int64(x2[i]) - zp2), m, s) + zpo
        out[i] = min(max(r, lo), hi)


@pytest.mark.parametrize("act", ["NONE", "RELU", "RELU6", "RELU_N1_TO_1"])
@pytest.mark.parametrize("q1,q2,qo", [
    (quant(0.05, -3), quant(0.031, 12), quant(0.07, -20)),
    (quant(0.5, 0), quant(0.004, -100), quant(0.011, 100)),
])
def test_add_and_mul_int8_with_fixedpoint_params_equal_litert(act, q1, q2, qo):
    rng = np.random.default_rng(18)
    x1, x2 = (rng.integers(-128, 128, (4, 100)).astype(np.int8) for _ in range(2))
    lo, hi = fp.activation_range_quantized(act, qo.scale, qo.zero_point, np.int8)
    specs = [((4, 100), np.int8, q1), ((4, 100), np.int8, q2)]
    out = np.empty(400, np.int8)

    model = build_one_op("ADD", specs, [((4, 100), np.int8, qo)], options={"fused_activation_function": act},
                         version=2)
    p = fp.add_params(q1.scale, q2.scale, qo.scale)
    _add_q8(x1.ravel(), x2.ravel(), out, q1.zero_point, q2.zero_point, qo.zero_point, p.left_shift,
            p.input1_multiplier, p.input1_shift, p.input2_multiplier, p.input2_shift, p.output_multiplier,
            p.output_shift, lo, hi)
    np.testing.assert_array_equal(out.reshape(4, 100), reference_outputs(model, [x1, x2])[0])

    model = build_one_op("MUL", specs, [((4, 100), np.int8, qo)], options={"fused_activation_function": act},
                         version=2)
    m, s = fp.mul_multiplier(q1.scale, q2.scale, qo.scale)
    _mul_q8(x1.ravel(), x2.ravel(), out, q1.zero_point, q2.zero_point, qo.zero_point, m, s, lo, hi)
    np.testing.assert_array_equal(out.reshape(4, 100), reference_outputs(model, [x1, x2])[0])


@njit
def _requant_rows(acc, out, mult, shift, zpo, lo, hi):
    for r in range(acc.shape[0]):
        for c in range(acc.shape[1]):
            v = fp.multiply_by_quantized_multiplier(acc[r, c], mult[c], shift[c]) + zpo
            out[r, c] = min(max(v, lo), hi)


@pytest.mark.parametrize("act", ["NONE", "RELU6"])
def test_conv_1x1_int8_per_channel_with_fixedpoint_params_equals_litert(act):
    rng = np.random.default_rng(19)
    cin, cout = 8, 6
    qin, qout = quant(0.043, -7), quant(0.09, 5)
    w_scales = rng.uniform(0.002, 0.02, cout)
    w = rng.integers(-127, 128, (cout, 1, 1, cin)).astype(np.int8)
    bias_scales = [float(np.float32(qin.scale)) * float(np.float32(s)) for s in w_scales]
    bias = rng.integers(-5000, 5000, cout).astype(np.int32)
    model = build_one_op("CONV_2D", [((1, 4, 4, cin), np.int8, qin)], [((1, 4, 4, cout), np.int8, qout)],
                         options={"padding": "VALID", "stride_w": 1, "stride_h": 1, "fused_activation_function": act,
                                  "dilation_w_factor": 1, "dilation_h_factor": 1},
                         consts={1: (w, quant(w_scales, 0, axis=0)), 2: (bias, quant(bias_scales, 0))}, version=3)
    x = rng.integers(-128, 128, (1, 4, 4, cin)).astype(np.int8)
    acc = (x.reshape(16, cin).astype(np.int64) - qin.zero_point) @ w.reshape(cout, cin).T.astype(np.int64) + bias
    mult, shift = fp.conv_multipliers(qin.scale, w_scales, qout.scale)
    lo, hi = fp.activation_range_quantized(act, qout.scale, qout.zero_point, np.int8)
    out = np.empty((16, cout), np.int8)
    _requant_rows(acc, out, mult.astype(np.int64), shift.astype(np.int64), qout.zero_point, lo, hi)
    np.testing.assert_array_equal(out.reshape(1, 4, 4, cout), reference_outputs(model, [x])[0])
