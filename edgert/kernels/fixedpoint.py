"""TFLite integer arithmetic for quantized kernels: multipliers, rounding shifts, gemmlowp fixed-point math.

Bit-exact ports of tensorflow/lite/kernels/internal/{common.h,common.cc,quantization_util.cc},
kernel_util.cc (CalculateActivationRangeQuantized) and gemmlowp's fixedpoint/fixedpoint.h, as
LiteRT 2.3 builds them by default (double rounding: TFLITE_SINGLE_ROUNDING is off). docs/quantized.md
says which op uses which helper.

Two halves:
- bind time, plain Python on Python ints/floats: `quantize_multiplier` and friends, activation
  ranges, LUT tables. Call these once in `bind`, never per element.
- run time, numba `@njit` helpers meant to be called from a kernel's loop. They take and return
  int64 values that hold C++ int32 (or int16) values; where the C++ code wraps (int32 overflow,
  UB in theory and two's-complement wrap in practice) we wrap explicitly with `wrap32`, so results
  match bit for bit. They are plain `@njit`, not `inline="always"`: LLVM inlines them into the
  caller anyway (same speed, measured), while numba's IR-level inlining made the softmax kernel
  take 16 s instead of 4 s to compile cold.

Numbers follow the C++ names: `shift` > 0 is a left shift, < 0 a right shift (TFLite's convention
since 2019); a Q-format value with `integer_bits` m is a raw int32 r meaning r / 2^(31-m).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from numba import njit

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1

_INT_RANGES: dict[np.dtype, tuple[int, int]] = {
    np.dtype(np.int8): (-128, 127),
    np.dtype(np.uint8): (0, 255),
    np.dtype(np.int16): (-32768, 32767),
    np.dtype(np.int32): (INT32_MIN, INT32_MAX),
}


def int_range(dtype) -> tuple[int, int]:
    """(min, max) of a quantized integer dtype (int8, uint8, int16, int32)."""
    return _INT_RANGES[np.dtype(dtype)]


# ------------------------------------------------------------------------------------------------
# bind time: multipliers (quantization_util.cc)


def _round_half_away(x: float) -> float:
    """TfLiteRound / std::round on a double: nearest, halves away from zero."""
    t = math.floor(abs(x) + 0.5) if abs(x) < 2.0**52 else abs(x)
    # floor(|x| + 0.5) is wrong for 0.49999999999999994 (the sum rounds up to 1.0); std::round is not.
    if t - abs(x) > 0.5:
        t -= 1.0
    return math.copysign(t, x)


def quantize_multiplier(real: float, *, single_rounding: bool = False) -> tuple[int, int]:
    """QuantizeMultiplier: real ~= multiplier * 2^(shift - 31), |multiplier| in [2^30, 2^31).

    0 -> (0, 0); |real| < ~2^-32 flushes to (0, 0) (shift < -31). With `single_rounding` the
    TFLITE_SINGLE_ROUNDING build's extra saturation applies (shift > 30 -> (2^31 - 1, 30)); the
    default build (LiteRT's) leaves large shifts alone.
    """
    real = float(real)
    if real == 0.0:
        return 0, 0
    if not math.isfinite(real):
        raise ValueError(f"quantize_multiplier: multiplier {real!r} is not finite")
    q, shift = math.frexp(real)
    q_fixed = int(_round_half_away(q * (1 << 31)))
    if q_fixed == (1 << 31):
        q_fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if single_rounding and shift > 30:
        return INT32_MAX, 30
    if q_fixed > INT32_MAX:  # TFLITE_CHECK_LE in C++
        raise ValueError(f"quantize_multiplier: {real!r} does not fit an int32 multiplier")
    return q_fixed, shift


def quantize_multiplier_array(reals: Sequence[float] | np.ndarray, *,
                              single_rounding: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel QuantizeMultiplier: (int32 multipliers, int32 shifts), one per real."""
    pairs = [quantize_multiplier(float(r), single_rounding=single_rounding) for r in np.ravel(reals)]
    mult = np.asarray([m for m, _ in pairs], dtype=np.int32)
    shift = np.asarray([s for _, s in pairs], dtype=np.int32)
    return mult, shift


def quantize_multiplier_greater_than_one(real: float) -> tuple[int, int]:
    """QuantizeMultiplierGreaterThanOne: real > 1, returns (multiplier, left_shift >= 0)."""
    if not real > 1.0:
        raise ValueError(f"quantize_multiplier_greater_than_one: {real!r} is not > 1")
    m, s = quantize_multiplier(real)
    if s < 0:
        raise ValueError(f"quantize_multiplier_greater_than_one: {real!r} gave shift {s}")
    return m, s


def quantize_multiplier_smaller_than_one_exp(real: float) -> tuple[int, int]:
    """QuantizeMultiplierSmallerThanOneExp: 0 <= real < 1, returns (multiplier, left_shift <= 0)."""
    if not 0.0 <= real < 1.0:
        raise ValueError(f"quantize_multiplier_smaller_than_one_exp: {real!r} not in [0, 1)")
    m, s = quantize_multiplier(real)
    if s > 0:
        raise ValueError(f"quantize_multiplier_smaller_than_one_exp: {real!r} gave shift {s}")
    return m, s


def down_scale_int32_to_int16_multiplier(multiplier: int) -> int:
    """DownScaleInt32ToInt16Multiplier: round a Q31 multiplier (>= 0) to Q15."""
    if multiplier < 0:
        raise ValueError(f"down_scale_int32_to_int16_multiplier: negative multiplier {multiplier}")
    if multiplier >= INT32_MAX - (1 << 15):
        return 32767
    return (multiplier + (1 << 15)) >> 16


def calculate_input_radius(input_integer_bits: int, input_left_shift: int, total_signed_bits: int = 31) -> int:
    """CalculateInputRadius: largest |input diff| whose rescaled value stays below the fixed-point max."""
    max_input_rescaled = (1.0 * ((1 << input_integer_bits) - 1) * float(1 << (total_signed_bits - input_integer_bits))
                          / float(1 << input_left_shift))
    return int(math.floor(max_input_rescaled))


def preprocess_softmax_scaling(beta: float, input_scale: float, input_integer_bits: int, *,
                               single_rounding: bool = False) -> tuple[int, int]:
    """PreprocessSoftmaxScaling: (multiplier, left_shift) of beta * input_scale in Q(bits).(31-bits)."""
    max_real = float((1 << 30) - 1) if single_rounding else float((1 << 31) - 1)
    real = min(float(beta) * float(input_scale) * float(1 << (31 - input_integer_bits)), max_real)
    return quantize_multiplier_greater_than_one(real)


def softmax_params(beta: float, input_scale: float) -> tuple[int, int, int]:
    """(input_multiplier, input_left_shift, diff_min) as SoftmaxPrepare computes them for int8/uint8 BUILTIN_REF."""
    scaled_diff_integer_bits = 5
    multiplier, left_shift = preprocess_softmax_scaling(float(np.float32(beta)), float(np.float32(input_scale)),
                                                        scaled_diff_integer_bits)
    diff_min = -calculate_input_radius(scaled_diff_integer_bits, left_shift)
    return multiplier, left_shift, diff_min


# ------------------------------------------------------------------------------------------------
# bind time: per-op multipliers, with the float/double arithmetic of each op's Prepare


@dataclass(frozen=True)
class AddParams:
    """8-bit ADD/SUB requantization (add.cc Prepare): inputs to a common Q(left_shift) scale, then to the output.

    Per element: v_i = MultiplyByQuantizedMultiplierSmallerThanOneExp((q_i - zp_i) << left_shift,
    input_multiplier_i, input_shift_i); out = MultiplyByQuantizedMultiplierSmallerThanOneExp(v1 +- v2,
    output_multiplier, output_shift) + zp_out, clamped to the activation range.
    """

    left_shift: int
    input1_multiplier: int
    input1_shift: int
    input2_multiplier: int
    input2_shift: int
    output_multiplier: int
    output_shift: int


def add_params(input1_scale: float, input2_scale: float, output_scale: float) -> AddParams:
    """AddParams for int8/uint8 ADD and SUB (left_shift 20); scales are the tensors' float32 scales."""
    s1, s2, so = (float(np.float32(v)) for v in (input1_scale, input2_scale, output_scale))
    left_shift = 20
    twice_max_input_scale = 2.0 * max(s1, s2)
    m1, sh1 = quantize_multiplier_smaller_than_one_exp(s1 / twice_max_input_scale)
    m2, sh2 = quantize_multiplier_smaller_than_one_exp(s2 / twice_max_input_scale)
    mo, sho = quantize_multiplier_smaller_than_one_exp(twice_max_input_scale / ((1 << left_shift) * so))
    return AddParams(left_shift, m1, sh1, m2, sh2, mo, sho)


def mul_multiplier(input1_scale: float, input2_scale: float, output_scale: float) -> tuple[int, int]:
    """MUL (mul.cc Prepare): QuantizeMultiplier(s1 * s2 / s_out), the product and quotient in float32.

    Per element: MultiplyByQuantizedMultiplier((q1 - zp1) * (q2 - zp2), m, shift) + zp_out, clamped.
    """
    real = np.float32(input1_scale) * np.float32(input2_scale) / np.float32(output_scale)
    return quantize_multiplier(float(real))


def conv_multipliers(input_scale: float, filter_scales: Sequence[float] | np.ndarray, output_scale: float,
                     channels: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """CONV_2D / DEPTHWISE_CONV_2D / int8 FULLY_CONNECTED per-channel multipliers (kernel_util.cc
    PopulateConvolutionQuantizationParams): double(s_in) * double(s_filter[c]) / double(s_out).

    A single filter scale is broadcast to `channels`. Per element: MultiplyByQuantizedMultiplier(acc
    + bias, m[c], shift[c]) + zp_out, clamped.
    """
    scales = [float(np.float32(v)) for v in np.ravel(filter_scales)]
    if len(scales) == 1 and channels:
        scales = scales * channels
    s_in, s_out = float(np.float32(input_scale)), float(np.float32(output_scale))
    return quantize_multiplier_array([s_in * s / s_out for s in scales])


# ------------------------------------------------------------------------------------------------
# bind time: activation range (kernel_util.cc CalculateActivationRangeQuantized)


def _quantize_float(f: float, scale: float, zero_point: int) -> int:
    """zero_point + int(TfLiteRound(f / scale)), the division and the rounding in float32."""
    q = np.float32(f) / np.float32(scale)
    t = np.float32(_round_half_away(float(q)))
    if not -2.0**31 <= float(t) <= 2.0**31 - 1:
        raise ValueError(f"activation bound {f} / scale {scale} overflows int32")
    return int(zero_point) + int(t)


def activation_range_quantized(activation: str | None, scale: float, zero_point: int, dtype) -> tuple[int, int]:
    """CalculateActivationRangeQuantized: the (min, max) clamp of a fused activation on a quantized output.

    NONE (and every other code, TANH included: quantized kernels do not apply it) -> the dtype's range.
    """
    qmin, qmax = int_range(dtype)
    act = activation or "NONE"
    if act == "RELU":
        return max(qmin, _quantize_float(0.0, scale, zero_point)), qmax
    if act == "RELU6":
        return (max(qmin, _quantize_float(0.0, scale, zero_point)),
                min(qmax, _quantize_float(6.0, scale, zero_point)))
    if act == "RELU_N1_TO_1":
        return (max(qmin, _quantize_float(-1.0, scale, zero_point)),
                min(qmax, _quantize_float(1.0, scale, zero_point)))
    return qmin, qmax


# ------------------------------------------------------------------------------------------------
# bind time: 8-bit lookup tables (common.h LUTPopulateInt8)


@functools.cache
def _libm_float_fn(name: str) -> Callable[[float], float] | None:
    """libm's float function (expf, tanhf): LiteRT's std::exp(float) calls it, so the tables match bit for bit.

    Cached: find_library runs ldconfig, far too slow to repeat per table entry.
    """
    path = ctypes.util.find_library("m")
    if path is None:
        return None
    try:
        fn = getattr(ctypes.CDLL(path), name)
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_float
    fn.argtypes = [ctypes.c_float]
    return fn


def _logistic_f32(x: np.float32) -> np.float32:
    expf = _libm_float_fn("expf")
    e = np.float32(expf(float(-x))) if expf is not None else np.exp(np.float32(-x))
    return np.float32(1.0) / (np.float32(1.0) + e)


def _tanh_f32(x: np.float32) -> np.float32:
    tanhf = _libm_float_fn("tanhf")
    return np.float32(tanhf(float(x))) if tanhf is not None else np.tanh(np.float32(x))


def lut_populate_int8(input_scale: float, input_zero_point: int, output_scale: float, output_zero_point: int,
                      transform: Callable[[np.float32], np.float32], dtype) -> np.ndarray:
    """LUTPopulate<int8|uint8>: a 256-entry uint8 table indexed by the input's byte pattern.

    All arithmetic in float32, as the C++ does; `transform` maps a float32 to a float32. For int8
    the table is in byte order [0..127, -128..-1], so a kernel looks up `lut[x.view(uint8)]` and
    views the result back as int8.
    """
    minval, maxval = int_range(dtype)
    if (minval, maxval) not in ((-128, 127), (0, 255)):
        raise ValueError(f"lut_populate_int8: {np.dtype(dtype)} is not int8/uint8")
    in_scale = np.float32(input_scale)
    inverse_scale = np.float32(1.0) / np.float32(output_scale)
    lut = np.zeros(256, np.uint8)
    with np.errstate(over="ignore", under="ignore"):
        for val in range(minval, maxval + 1):
            dequantized = in_scale * np.float32(val - int(input_zero_point))
            transformed = np.float32(transform(dequantized))
            rescaled = np.float32(_round_half_away(float(np.float32(transformed * inverse_scale))))
            summed = float(np.float32(rescaled + np.float32(int(output_zero_point))))
            quantized = int(summed) if math.isfinite(summed) and abs(summed) < 2.0**31 else (maxval if summed > 0 else minval)
            lut[val & 0xFF] = max(min(maxval, quantized), minval) & 0xFF
    return lut


def logistic_lut(input_scale: float, input_zero_point: int, output_scale: float, output_zero_point: int,
                 dtype) -> np.ndarray:
    """The LOGISTIC int8/uint8 table of SigmoidPrepare (kReference and kGenericOptimized)."""
    return lut_populate_int8(input_scale, input_zero_point, output_scale, output_zero_point, _logistic_f32, dtype)


def tanh_lut(input_scale: float, input_zero_point: int, output_scale: float, output_zero_point: int,
             dtype) -> np.ndarray:
    """The TANH int8/uint8 table of TanhPrepare (kReference and kGenericOptimized)."""
    return lut_populate_int8(input_scale, input_zero_point, output_scale, output_zero_point, _tanh_f32, dtype)


# ------------------------------------------------------------------------------------------------
# run time: int32 primitives (gemmlowp fixedpoint.h, common.h, common.cc)


@njit(nogil=True, cache=True)
def wrap32(x):
    """x reduced to int32 two's complement (what C++ int32 arithmetic does on overflow)."""
    return np.int64(np.int32(x))


@njit(nogil=True, cache=True)
def wrap16(x):
    """x reduced to int16 two's complement (static_cast<int16_t>)."""
    return np.int64(np.int16(x))


@njit(nogil=True, cache=True)
def saturating_rounding_doubling_high_mul(a, b):
    """gemmlowp SaturatingRoundingDoublingHighMul<int32> (ARM VQRDMULH): round(a * b / 2^31), MIN*MIN -> MAX."""
    a = np.int64(a)
    b = np.int64(b)
    if a == b and a == -2147483648:
        return np.int64(2147483647)
    ab = a * b
    if ab >= 0:
        return (ab + np.int64(1 << 30)) >> 31
    # C++ divides toward zero; the nudge is 1 - 2^30 for negative products
    return -((np.int64(1 << 30) - np.int64(1) - ab) >> 31)


@njit(nogil=True, cache=True)
def rounding_divide_by_pot(x, exponent):
    """gemmlowp RoundingDivideByPOT: x / 2^exponent rounded to nearest, ties away from zero (0 <= exponent <= 31)."""
    x = np.int64(x)
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if remainder > threshold else 0)


@njit(nogil=True, cache=True)
def saturating_rounding_multiply_by_pot(x, exponent):
    """gemmlowp SaturatingRoundingMultiplyByPOT / TFLite ...POTParam on int32: x * 2^exponent.

    exponent > 0 saturates to int32, exponent < 0 is a rounding right shift.
    """
    x = np.int64(x)
    if exponent == 0:
        return x
    if exponent < 0:
        return rounding_divide_by_pot(x, -exponent)
    threshold = (np.int64(1) << (31 - exponent)) - 1
    if x > threshold:
        return np.int64(2147483647)
    if x < -threshold:
        return np.int64(-2147483648)
    return x << exponent


@njit(nogil=True, cache=True)
def multiply_by_quantized_multiplier(x, multiplier, shift):
    """MultiplyByQuantizedMultiplier(int32 x), double rounding (LiteRT's default build; every BUILTIN_REF op).

    SRDHM(x * 2^max(shift, 0), multiplier) then a rounding right shift by max(-shift, 0).
    """
    left = shift if shift > 0 else 0
    right = -shift if shift < 0 else 0
    return rounding_divide_by_pot(
        saturating_rounding_doubling_high_mul(wrap32(np.int64(x) << left), multiplier), right)


@njit(nogil=True, cache=True)
def multiply_by_quantized_multiplier_single_rounding(x, multiplier, shift):
    """MultiplyByQuantizedMultiplier(int32 x) of a TFLITE_SINGLE_ROUNDING build (TFLM, some NNAPI paths).

    One rounding: (x * multiplier + 2^(30 - shift)) >> (31 - shift); needs multiplier >= 0, -31 <= shift <= 30.
    """
    total_shift = 31 - shift
    rounding = np.int64(1) << (total_shift - 1)
    return wrap32((np.int64(x) * np.int64(multiplier) + rounding) >> total_shift)


@njit(nogil=True, cache=True)
def multiply_by_quantized_multiplier_int64(x, multiplier, shift):
    """MultiplyByQuantizedMultiplier(int64 x) (16x8 conv/FC with int64 accumulators); same in both builds.

    The multiplier is first reduced to Q15 with rounding; needs |x| < 2^47, -31 <= shift < 8.
    """
    multiplier = np.int64(multiplier)
    if multiplier < 0x7FFF0000:
        reduced = (multiplier + np.int64(1 << 15)) >> 16
    else:
        reduced = np.int64(0x7FFF)
    total_shift = 15 - shift
    v = np.int64(x) * reduced + (np.int64(1) << (total_shift - 1))
    return wrap32(v >> total_shift)


@njit(nogil=True, cache=True)
def multiply_by_quantized_multiplier_smaller_than_one_exp(x, multiplier, left_shift):
    """MultiplyByQuantizedMultiplierSmallerThanOneExp (double rounding): left_shift <= 0."""
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(x, multiplier), -left_shift)


@njit(nogil=True, cache=True)
def multiply_by_quantized_multiplier_greater_than_one(x, multiplier, left_shift):
    """MultiplyByQuantizedMultiplierGreaterThanOne (double rounding): left_shift >= 0, x * 2^left_shift wraps."""
    return saturating_rounding_doubling_high_mul(wrap32(np.int64(x) << left_shift), multiplier)


@njit(nogil=True, cache=True)
def rounding_half_sum(a, b):
    """gemmlowp RoundingHalfSum<int32>: (a + b) / 2 rounded half away from zero."""
    s = np.int64(a) + np.int64(b)
    s = s + (1 if s >= 0 else -1)
    return s // 2 if s >= 0 else -((-s) // 2)


@njit(nogil=True, cache=True)
def count_leading_zeros32(x):
    """CountLeadingZeros(uint32(x)); 32 for 0."""
    v = np.int64(x) & np.int64(0xFFFFFFFF)
    if v == 0:
        return 32
    n = 0
    while v < np.int64(0x80000000):
        v <<= 1
        n += 1
    return n


@njit(nogil=True, cache=True)
def rescale(x, src_integer_bits, dst_integer_bits):
    """gemmlowp Rescale<dst>(FixedPoint<int32, src>): change Q format, saturating/rounding."""
    return saturating_rounding_multiply_by_pot(x, src_integer_bits - dst_integer_bits)


# ------------------------------------------------------------------------------------------------
# run time: gemmlowp fixed-point functions (Q0.31 results)

_EXP_QUARTER_CONST = 1895147668  # exp(-1/8) in Q0.31
_ONE_THIRD = 715827883  # 1/3 in Q0.31


@njit(nogil=True, cache=True)
def exp_on_interval_between_negative_one_quarter_and_0_excl(a):
    """exp(a) for a in [-1/4, 0), a and result in Q0.31 (Taylor series around -1/8)."""
    srdhm = saturating_rounding_doubling_high_mul
    x = wrap32(np.int64(a) + np.int64(1 << 28))
    x2 = srdhm(x, x)
    x3 = srdhm(x2, x)
    x4 = srdhm(x2, x2)
    x4_over_4 = rounding_divide_by_pot(x4, 2)
    poly = rounding_divide_by_pot(wrap32(srdhm(wrap32(x4_over_4 + x3), _ONE_THIRD) + x2), 1)
    return wrap32(_EXP_QUARTER_CONST + srdhm(_EXP_QUARTER_CONST, wrap32(x + poly)))


@njit(nogil=True, cache=True)
def _exp_barrel_step(result, remainder, integer_bits, exponent, multiplier):
    if integer_bits > exponent:
        shift_amount = 31 - integer_bits + exponent
        if (remainder & (np.int64(1) << shift_amount)) != 0:
            return saturating_rounding_doubling_high_mul(result, multiplier)
    return result


@njit(nogil=True, cache=True)
def exp_on_negative_values(a, integer_bits):
    """gemmlowp exp_on_negative_values: exp(a) for a <= 0 in Q(integer_bits).(31-integer_bits); result Q0.31."""
    a = np.int64(a)
    fractional_bits = 31 - integer_bits
    one_quarter = np.int64(1) << (fractional_bits - 2)
    mask = one_quarter - 1
    a_mod_quarter_minus_one_quarter = (a & mask) - one_quarter
    result = exp_on_interval_between_negative_one_quarter_and_0_excl(
        rescale(a_mod_quarter_minus_one_quarter, integer_bits, 0))
    remainder = wrap32(a_mod_quarter_minus_one_quarter - a)
    result = _exp_barrel_step(result, remainder, integer_bits, -2, 1672461947)
    result = _exp_barrel_step(result, remainder, integer_bits, -1, 1302514674)
    result = _exp_barrel_step(result, remainder, integer_bits, 0, 790015084)
    result = _exp_barrel_step(result, remainder, integer_bits, 1, 290630308)
    result = _exp_barrel_step(result, remainder, integer_bits, 2, 39332535)
    result = _exp_barrel_step(result, remainder, integer_bits, 3, 720401)
    result = _exp_barrel_step(result, remainder, integer_bits, 4, 242)
    if integer_bits > 5:
        if a < -(np.int64(1) << (36 - integer_bits)):  # below -32: exp underflows to 0
            result = np.int64(0)
    if a == 0:
        result = np.int64(2147483647)
    return result


@njit(nogil=True, cache=True)
def one_over_one_plus_x_for_x_in_0_1(a):
    """gemmlowp one_over_one_plus_x_for_x_in_0_1: 1 / (1 + a) for a in [0, 1) Q0.31, Newton-Raphson; result Q0.31."""
    srdhm = saturating_rounding_doubling_high_mul
    half_denominator = rounding_half_sum(a, 2147483647)
    x = wrap32(1515870810 + srdhm(half_denominator, -1010580540))  # 48/17 - 32/17 * d, Q2.29
    for _ in range(3):
        half_denominator_times_x = srdhm(half_denominator, x)
        one_minus_half_denominator_times_x = wrap32((1 << 29) - half_denominator_times_x)
        x = wrap32(x + rescale(srdhm(x, one_minus_half_denominator_times_x), 4, 2))
    return rescale(x, 1, 0)


@njit(nogil=True, cache=True)
def get_reciprocal(x, x_integer_digits):
    """TFLite GetReciprocal: (1 / x as Q0.31 raw after normalising, num_bits_over_unit); x > 0."""
    headroom_plus_one = count_leading_zeros32(x)
    num_bits_over_unit = x_integer_digits - headroom_plus_one
    shifted = ((np.int64(x) & np.int64(0xFFFFFFFF)) << headroom_plus_one) & np.int64(0xFFFFFFFF)
    shifted_sum_minus_one = wrap32(shifted - np.int64(1 << 31))
    return one_over_one_plus_x_for_x_in_0_1(shifted_sum_minus_one), num_bits_over_unit


# ------------------------------------------------------------------------------------------------
# run time: int16 primitives (HARD_SWISH, int16 activations)


@njit(nogil=True, cache=True)
def saturating_rounding_doubling_high_mul16(a, b):
    """gemmlowp SaturatingRoundingDoublingHighMul<int16> (VQRDMULH.S16)."""
    a = np.int64(a)
    b = np.int64(b)
    if a == b and a == -32768:
        return np.int64(32767)
    ab = a * b
    if ab >= 0:
        return wrap16((ab + (1 << 14)) >> 15)
    return wrap16(-(((1 << 14) - 1 - ab) >> 15))


@njit(nogil=True, cache=True)
def saturating_doubling_high_mul16(a, b):
    """TFLite SaturatingDoublingHighMul<int16> (VQDMULH.S16): a * b / 2^15 truncated toward zero."""
    a = np.int64(a)
    b = np.int64(b)
    if a == b and a == -32768:
        return np.int64(32767)
    ab = a * b
    return wrap16(ab >> 15 if ab >= 0 else -((-ab) >> 15))


@njit(nogil=True, cache=True)
def saturating_left_shift16(value, amount):
    """TFLite SaturatingLeftShift<int16>: value * 2^amount clamped to int16."""
    r = np.int64(value) * (np.int64(1) << amount)
    return min(max(r, np.int64(-32768)), np.int64(32767))


@njit(nogil=True, cache=True)
def lut_lookup_int16(value, lut):
    """TFLite LUTLookup(int16, 513-entry int16 table): linear interpolation on the low 7 bits."""
    v = np.int64(value)
    index = 256 + (v >> 7)
    offset = v & 0x7F
    base = np.int64(lut[index])
    slope = np.int64(lut[index + 1]) - base
    return wrap16(base + ((slope * offset + 64) >> 7))


@njit(nogil=True, cache=True)
def rounding_divide_by_pot16(x, exponent):
    """gemmlowp RoundingDivideByPOT<int16>: the int32 formula with every intermediate held in int16.

    Equal to `rounding_divide_by_pot` for exponent < 16; for larger exponents the int16 mask wraps
    as it does in C++.
    """
    x = np.int64(x)
    mask = wrap16((np.int64(1) << exponent) - 1)
    remainder = x & mask
    threshold = wrap16((mask >> 1) + (1 if x < 0 else 0))
    return wrap16((x >> exponent) + (1 if remainder > threshold else 0))


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
        right = np.int32(-sh if sh < 0 else 0) & np.int32(31)
        x = np.int64(np.int32(x << left))  # C++ int32 wrap of x * 2^left
        # SaturatingRoundingDoublingHighMul: the C++ nudges by 2^30 (1 - 2^30 for a negative
        # product ab) and divides by 2^31 toward zero; for ab < 0 that is
        # ceil((ab + 1 - 2^30) / 2^31) = floor((ab + 2^30) / 2^31), the ab >= 0 expression, so one
        # add and shift. It never saturates (needs x = m = INT32_MIN; multipliers are >= 0) and
        # |q| < 2^31, so the RoundingDivideByPOT after it runs in int32 lanes (casts let LLVM narrow).
        q = np.int32((x * m + np.int64(1 << 30)) >> 31)
        mask = np.int32(np.int32(np.int32(1) << right) - np.int32(1))
        threshold = np.int32((mask >> np.int32(1)) + (np.int32(1) if q < 0 else np.int32(0)))
        v = np.int32(np.int32(q >> right) + (np.int32(1) if np.int32(q & mask) > threshold else np.int32(0)))
    v = np.int64(np.int32(v)) + out_zp
    v = lo if v < lo else v
    return hi if v > hi else v
