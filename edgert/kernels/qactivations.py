"""Quantized (int8/uint8) LOGISTIC, TANH, SOFTMAX and HARD_SWISH kernels, bit-exact with LiteRT's BUILTIN_REF.

What LiteRT 2.3's reference resolver does for these ops (tflite/kernels/activations.cc), and so
what we do:
- LOGISTIC, TANH: a 256-entry table built at prepare time from the float function
  (LUTPopulate<int8|uint8>), then one lookup per element. The table is built here with libm's
  expf/tanhf, the functions LiteRT's std::exp(float)/std::tanh(float) call.
- SOFTMAX: reference_ops::Softmax<In, Out>, gemmlowp fixed point (exp_on_negative_values on
  Q5.26 differences, GetReciprocal of the Q12.19 sum), double-rounding multipliers. The exp of
  each of the 256 possible differences to the row max is computed once at bind.
- HARD_SWISH: reference_ops::HardSwish<T>, int16 fixed point (HardSwishParams), evaluated at
  bind for the 256 possible inputs; running it is a table lookup.
Tables are small (256 bytes, or 2 KiB for softmax) and made once at bind, like TFLite's op data.
Float kernels for these ops live in elementwise.py / reduce.py; these entries only accept
quantized tensors, so both sit in the registry side by side.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from edgert.kernels import fixedpoint as fp
from edgert.kernels.elementwise import operand_reason, per_tensor_reason, q8_reason, same_shape_reason
from edgert.kernels.registry import KernelEntry, KernelRegistry, OpContext, Step

def _flat(a: np.ndarray, dtype=None) -> np.ndarray:
    """A 1-D view of a C-contiguous array (raises instead of copying when it is not contiguous)."""
    v = a.view()
    v.shape = (a.size,)
    return v if dtype is None else v.view(dtype)


def _rows(a: np.ndarray) -> np.ndarray:
    """(outer, depth) view over the last axis of a C-contiguous array (rank >= 1)."""
    depth = a.shape[-1]
    v = a.view()
    v.shape = (a.size // depth if depth else 0, depth)
    return v


def _unary_operands_reason(ctx: OpContext, max_version: int) -> str | None:
    return operand_reason(ctx, max_version, 1, 1, "expects 1 input and 1 output")


def _unary_q8_reason(ctx: OpContext, max_version: int) -> str | None:
    reason = _unary_operands_reason(ctx, max_version)
    if reason:
        return reason
    x, y = ctx.inputs[0], ctx.outputs[0]
    return q8_reason(x, y) or same_shape_reason(x, y)


def _inplace_0(ctx: OpContext) -> tuple[int, ...]:
    return (0,)


# ------------------------------------------------------------------------------------------------
# LOGISTIC / TANH: table lookup


@njit(nogil=True, cache=True)
def _lut8(src, dst, lut):
    """dst[i] = lut[src[i]] on uint8 byte views (int8 tables are in byte order)."""
    for i in range(src.shape[0]):
        dst[i] = lut[src[i]]


def _supports_logistic(ctx: OpContext) -> str | None:
    reason = _unary_q8_reason(ctx, 3)
    if reason:
        return reason
    if float(np.float32(ctx.outputs[0].quantization.scale)) != 1.0 / 256:
        return "quantized LOGISTIC needs output scale 1/256 (TFLite)"
    return None


def _supports_tanh(ctx: OpContext) -> str | None:
    return _unary_q8_reason(ctx, 3)


def _bind_lut(table_fn):
    def bind(ctx: OpContext, ins: list, outs: list, scratch) -> Step:
        qx, qy = ctx.inputs[0].quantization, ctx.outputs[0].quantization
        lut = table_fn(float(np.float32(qx.scale)), int(qx.zero_point), float(np.float32(qy.scale)),
                       int(qy.zero_point), ins[0].dtype)
        return _lut8, (_flat(ins[0], np.uint8), _flat(outs[0], np.uint8), lut)

    return bind


bind_logistic_q8 = _bind_lut(fp.logistic_lut)
bind_tanh_q8 = _bind_lut(fp.tanh_lut)


# ------------------------------------------------------------------------------------------------
# SOFTMAX: reference_ops::Softmax<In, Out> in gemmlowp fixed point


@njit(nogil=True, cache=True)
def softmax_exp_tables(exp_q31, exp_q12, input_multiplier, input_left_shift, diff_min):
    """exp of every possible difference to the row max (0, -1, .., -255): Q0.31 and Q12.19.

    The reference computes exp_on_negative_values(MultiplyByQuantizedMultiplierGreaterThanOne(diff))
    per element; for 8-bit inputs diff takes at most 256 values, so we compute each once. Entries
    with diff < diff_min (skipped by the reference) are -1.
    """
    for d in range(exp_q31.shape[0]):
        if -d >= diff_min:
            rescaled = fp.multiply_by_quantized_multiplier_greater_than_one(-d, input_multiplier, input_left_shift)
            e = fp.exp_on_negative_values(rescaled, 5)
            exp_q31[d] = e
            exp_q12[d] = fp.rescale(e, 0, 12)
        else:
            exp_q31[d] = -1
            exp_q12[d] = -1


@njit(nogil=True, cache=True)
def _softmax_q(x, out, in_min, exp_q31, exp_q12, out_min, out_max, out_bits):
    """reference_ops::Softmax<In, Out>: x (rows, depth) int8/uint8 -> out (rows, depth) int8/uint8/int16.

    Exps of the differences come from the tables (Q0.31, and Q12.19 for the sum); the Q12.19 sum's
    reciprocal scales each exp to the output's 8 or 16 bits. Element c is read for the last time
    right before out[r, c] is written, so out may be x.
    """
    depth = x.shape[1]
    for r in range(x.shape[0]):
        max_in_row = in_min
        for c in range(depth):
            v = np.int64(x[r, c])
            if v > max_in_row:
                max_in_row = v
        sum_of_exps = np.int64(0)
        for c in range(depth):
            e = exp_q12[max_in_row - np.int64(x[r, c])]
            if e >= 0:
                sum_of_exps = fp.wrap32(sum_of_exps + e)
        shifted_scale, num_bits_over_unit = fp.get_reciprocal(sum_of_exps, 12)
        exponent = num_bits_over_unit + 31 - out_bits
        for c in range(depth):
            e = exp_q31[max_in_row - np.int64(x[r, c])]
            if e >= 0:
                unsat = fp.rounding_divide_by_pot(fp.saturating_rounding_doubling_high_mul(shifted_scale, e), exponent)
                out[r, c] = min(max(unsat + out_min, out_min), out_max)
            else:
                out[r, c] = out_min


_SOFTMAX_OUT = {
    np.dtype(np.int8): (np.dtype(np.int8), np.dtype(np.int16)),
    np.dtype(np.uint8): (np.dtype(np.uint8), np.dtype(np.int16)),
}


def _supports_softmax(ctx: OpContext) -> str | None:
    reason = _unary_operands_reason(ctx, 3)
    if reason:
        return reason
    x, y = ctx.inputs[0], ctx.outputs[0]
    if x.dtype not in _SOFTMAX_OUT:
        return f"{x.dtype} not supported (quantized kernel: int8/uint8)"
    if y.dtype not in _SOFTMAX_OUT[x.dtype]:
        return f"{x.dtype} -> {y.dtype} not supported"
    if len(x.shape) < 1:
        return "needs rank >= 1"
    reason = same_shape_reason(x, y) or per_tensor_reason([x, y])
    if reason:
        return reason
    qy = y.quantization
    if x.dtype == np.int8 and y.dtype == np.int8:  # SoftmaxPrepare's checks
        if qy.zero_point != -128:
            return "int8 SOFTMAX needs output zero point -128 (TFLite)"
        if abs(float(np.float32(qy.scale)) - 1.0 / 256) > 0.001 / 256:
            return "int8 SOFTMAX needs output scale 1/256 (TFLite)"
    beta = float(getattr(ctx.op.options, "beta", 1.0) or 0.0)
    real = beta * float(np.float32(x.quantization.scale)) * float(1 << 26)
    if not real > 1.0 or not math.isfinite(real):
        return f"beta * input scale {real / (1 << 26):.3g} too small for TFLite's fixed-point softmax"
    return None


def bind_softmax_q8(ctx: OpContext, ins: list, outs: list, scratch) -> Step:
    x, y = ins[0], outs[0]
    beta = float(np.float32(getattr(ctx.op.options, "beta", 1.0) or 0.0))
    multiplier, left_shift, diff_min = fp.softmax_params(beta, ctx.inputs[0].quantization.scale)
    exp_q31, exp_q12 = np.empty(256, np.int64), np.empty(256, np.int64)
    softmax_exp_tables(exp_q31, exp_q12, np.int64(multiplier), np.int64(left_shift), np.int64(diff_min))
    in_min = fp.int_range(x.dtype)[0]
    out_min, out_max = fp.int_range(y.dtype)
    return _softmax_q, (_rows(x), _rows(y), np.int64(in_min), exp_q31, exp_q12, np.int64(out_min),
                        np.int64(out_max), np.int64(8 * y.dtype.itemsize))


# ------------------------------------------------------------------------------------------------
# HARD_SWISH: reference_ops::HardSwish<T> in int16 fixed point


@njit(nogil=True, cache=True)
def _hard_swish_q(src, dst, in_zp, out_zp, out_m16, out_exp, relu_m16, relu_exp, lo, hi):
    for i in range(src.shape[0]):
        input_value = fp.wrap16(np.int64(src[i]) - in_zp)
        hires = fp.wrap16(input_value * 128)
        preshift_output = fp.saturating_rounding_doubling_high_mul16(hires, out_m16)
        reluish = hires
        if relu_exp > 0:
            reluish = fp.saturating_left_shift16(reluish, relu_exp - 1)
        reluish = fp.saturating_rounding_doubling_high_mul16(reluish, relu_m16)
        if relu_exp > 0:
            reluish = fp.saturating_left_shift16(reluish, 1)
        if relu_exp < 0:
            reluish = fp.rounding_divide_by_pot16(reluish, -relu_exp)
        reluish = (reluish + 32768) >> 1
        preshift = fp.saturating_doubling_high_mul16(reluish, preshift_output)
        v = fp.wrap16(fp.rounding_divide_by_pot16(preshift, -out_exp) + out_zp)
        dst[i] = min(max(v, lo), hi)


def hard_swish_params(input_scale: float, input_zero_point: int, output_scale: float,
                      output_zero_point: int) -> tuple[int, int, int, int]:
    """HardSwishPrepare: (output_multiplier_int16, output_exponent, reluish_multiplier_int16, reluish_exponent)."""
    hires_input_scale = np.float32(1.0 / 128.0) * np.float32(input_scale)
    reluish_scale = np.float32(3.0 / 32768.0)
    output_multiplier = hires_input_scale / np.float32(output_scale)
    m32, out_exp = fp.quantize_multiplier(float(output_multiplier))
    reluish_multiplier = hires_input_scale / reluish_scale
    r32, relu_exp = fp.quantize_multiplier(float(reluish_multiplier))
    return (fp.down_scale_int32_to_int16_multiplier(m32), out_exp,
            fp.down_scale_int32_to_int16_multiplier(r32), relu_exp)


def _supports_hard_swish(ctx: OpContext) -> str | None:
    reason = _unary_q8_reason(ctx, 1)
    if reason:
        return reason
    qx, qy = ctx.inputs[0].quantization, ctx.outputs[0].quantization
    _, out_exp, _, _ = hard_swish_params(qx.scale, qx.zero_point, qy.scale, qy.zero_point)
    if out_exp > 0:
        return "quantized HARD_SWISH needs input scale / output scale <= 128 (TFLite)"
    return None


def hard_swish_lut(input_scale: float, input_zero_point: int, output_scale: float, output_zero_point: int,
                   dtype) -> np.ndarray:
    """The reference HARD_SWISH output for each of the 256 input bytes (uint8 table in byte order).

    The fixed-point formula depends on nothing but the input value, so evaluating it once per
    possible input is exact and turns the kernel into one lookup per element.
    """
    out_m16, out_exp, relu_m16, relu_exp = hard_swish_params(input_scale, input_zero_point, output_scale,
                                                             output_zero_point)
    dtype = np.dtype(dtype)
    lo, hi = fp.int_range(dtype)
    values = np.arange(256, dtype=np.uint8).view(dtype)
    lut = np.empty(256, np.uint8)
    _hard_swish_q(values, lut.view(dtype), np.int64(input_zero_point), np.int64(output_zero_point),
                  np.int64(out_m16), np.int64(out_exp), np.int64(relu_m16), np.int64(relu_exp),
                  np.int64(lo), np.int64(hi))
    return lut


def bind_hard_swish_q8(ctx: OpContext, ins: list, outs: list, scratch) -> Step:
    qx, qy = ctx.inputs[0].quantization, ctx.outputs[0].quantization
    lut = hard_swish_lut(qx.scale, qx.zero_point, qy.scale, qy.zero_point, ins[0].dtype)
    return _lut8, (_flat(ins[0], np.uint8), _flat(outs[0], np.uint8), lut)


def _softmax_inplace(ctx: OpContext) -> tuple[int, ...]:
    # each element is read (for the last time) just before its own output is written
    return (0,) if ctx.inputs[0].dtype.itemsize == ctx.outputs[0].dtype.itemsize else ()


def register(registry: KernelRegistry) -> None:
    registry.add(KernelEntry("LOGISTIC", _supports_logistic, bind_logistic_q8, inplace=_inplace_0))
    registry.add(KernelEntry("TANH", _supports_tanh, bind_tanh_q8, inplace=_inplace_0))
    registry.add(KernelEntry("SOFTMAX", _supports_softmax, bind_softmax_q8, inplace=_softmax_inplace))
    registry.add(KernelEntry("HARD_SWISH", _supports_hard_swish, bind_hard_swish_q8, inplace=_inplace_0))
