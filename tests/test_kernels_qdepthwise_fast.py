"""int8/uint8 DEPTHWISE_CONV_2D through the register-blocked kernel `_qdw_simd` vs LiteRT BUILTIN_REF.

Rule that holds: outputs are EXACTLY equal to the reference. The kernel sums x * (w + w_off) in
float32 lanes, which is exact while every partial sum stays an integer below 2^24 (qgemm's bound,
checked at bind: layers beyond it take the integer kernel), folds in_off * sum(w + w_off) into the
int32 bias and requantizes in vector lanes with the reference's double rounding (`vrequantize`,
compared here with the scalar `requantize` on extreme accumulators).
"""

from __future__ import annotations

import numpy as np
import pytest
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from edgert.kernels.conv import _qdepthwise, _qdepthwise3x3, _qdw_simd, conv_geometry, requantize
from edgert.kernels.simd import block_ptr, vrequantize
from oneop import assert_close_quant, bind_one, build_one_op, quant, reference_outputs, run_one

RNG = np.random.default_rng(20240611)
RANGE = {np.int8: (-128, 127), np.uint8: (0, 255)}


def rand(dtype, shape, lo=None, hi=None):
    a, b = RANGE[dtype]
    return RNG.integers(a if lo is None else lo, (b if hi is None else hi) + 1, shape).astype(dtype)


def dw_model(dtype, in_shape, kh, kw, *, stride=(1, 1), padding="SAME", dilation=(1, 1), act="NONE",
             per_channel=True, zp_in=-3, zp_out=4, zp_w=0, s_in=0.05, s_out=0.08, w_range=None):
    n, h, w, c = in_shape
    oh, _ = conv_geometry(padding, h, kh, stride[0], dilation[0])
    ow, _ = conv_geometry(padding, w, kw, stride[1], dilation[1])
    s_w = RNG.uniform(0.002, 0.02, c) if per_channel else np.array([0.01])
    lo, hi = w_range or RANGE[dtype]
    consts = {1: (rand(dtype, (1, kh, kw, c), lo, hi), quant(s_w if per_channel else s_w[0], zp_w, 3))}
    consts[2] = (RNG.integers(-3000, 3000, c).astype(np.int32), quant(s_w * s_in, 0))  # LiteRT requires one
    options = dict(padding=padding, stride_h=stride[0], stride_w=stride[1], depth_multiplier=1,
                   fused_activation_function=act, dilation_h_factor=dilation[0], dilation_w_factor=dilation[1])
    return build_one_op("DEPTHWISE_CONV_2D", [(in_shape, dtype, quant(s_in, zp_in))],
                        [((n, oh, ow, c), dtype, quant(s_out, zp_out))], options, consts,
                        version=3 if dtype == np.int8 else 1)


def check(model: bytes, x: np.ndarray, kernel=_qdw_simd) -> np.ndarray:
    """Our output equals LiteRT's exactly, through `kernel`; returns the reference."""
    fn, args, outs, *_ = bind_one(model, [x])
    assert fn is kernel
    fn(*args)
    ref = reference_outputs(model, [x])[0]
    assert_close_quant(outs[0], ref, 0.0)
    return ref


CASES = {
    # (in_shape, kh, kw, kwargs)
    "c48-s2-same-relu6": ((1, 13, 15, 48), 3, 3, dict(stride=(2, 2), act="RELU6")),
    "c64-s1-same-relu": ((1, 25, 5, 64), 3, 3, dict(act="RELU")),  # KWS: 5 pixels, a partial 8-block
    "c72-s2-valid": ((1, 12, 11, 72), 3, 3, dict(stride=(2, 2), padding="VALID")),
    "c40-s1-valid-n1to1": ((1, 7, 9, 40), 3, 3, dict(padding="VALID", act="RELU_N1_TO_1")),  # 16+16+8: moved-back block
    "c8-s1-odd": ((1, 11, 13, 8), 3, 3, dict()),  # 8-lane blocks
    "c12-s2-odd": ((1, 9, 7, 12), 3, 3, dict(stride=(2, 2), act="RELU")),  # two overlapping 8-lane blocks
    "c19-per-tensor": ((1, 6, 10, 19), 3, 3, dict(per_channel=False)),
    "c96-5x5-s2": ((1, 14, 14, 96), 5, 5, dict(stride=(2, 2))),  # MobileNet-v3
    "c24-5x5-s1-zp-asym": ((1, 9, 8, 24), 5, 5, dict(zp_in=37)),
    "c16-dilated": ((1, 11, 12, 16), 3, 3, dict(dilation=(2, 3), act="RELU6")),
    "c20-3x1-s1x2": ((1, 10, 9, 20), 3, 1, dict(stride=(1, 2))),
    "c32-two-images": ((2, 6, 7, 32), 3, 3, dict(stride=(2, 1))),
    "c24-2x2-pixels": ((1, 2, 2, 24), 3, 3, dict()),  # every tap row and column on the border
    "c16-output-3x3": ((1, 3, 3, 16), 3, 3, dict()),  # 3 pixels per row: a 4-block with one spare
}


@pytest.mark.parametrize("name", CASES)
def test_int8_exact(name):
    in_shape, kh, kw, kw_ = CASES[name]
    check(dw_model(np.int8, in_shape, kh, kw, **kw_), rand(np.int8, in_shape))


@pytest.mark.parametrize("name", ["c48-s2-same-relu6", "c12-s2-odd", "c24-5x5-s1-zp-asym", "c16-dilated"])
def test_uint8_with_filter_zero_point_exact(name):
    in_shape, kh, kw, kw_ = CASES[name]
    model = dw_model(np.uint8, in_shape, kh, kw, **dict(kw_, per_channel=False, zp_in=128, zp_out=100, zp_w=119))
    check(model, rand(np.uint8, in_shape))


@pytest.mark.parametrize("act", ["NONE", "RELU", "RELU6", "RELU_N1_TO_1"])
def test_saturates_at_both_ends_with_every_activation(act):
    """A small output scale drives most outputs to the clamp: the lanes' clamp equals the reference."""
    in_shape = (1, 10, 11, 40)
    model = dw_model(np.int8, in_shape, 3, 3, act=act, stride=(2, 2), s_out=0.004, zp_in=-20, zp_out=-5)
    x = rand(np.int8, in_shape)
    x[0, 2:5, 3:8] = 127
    x[0, 6:9, 1:6] = -128
    ref = check(model, x)
    if act == "NONE":
        assert ref.min() == -128 and ref.max() == 127


def test_strided_output_and_channel_sliced_input():
    in_shape, kh, kw, kw_ = CASES["c40-s1-valid-n1to1"]
    model = dw_model(np.int8, in_shape, kh, kw, **kw_)
    x = rand(np.int8, in_shape)
    ref = reference_outputs(model, [x])[0]
    out = run_one(model, [x], strided=True)[0]
    assert_close_quant(np.array(out), ref, 0.0)
    assert (out.base[..., :2] == 77).all() and (out.base[..., -3:] == 77).all()
    wide = rand(np.int8, in_shape[:3] + (in_shape[3] + 6,))
    wide[..., 3:-3] = x
    fn, args, outs, *_ = bind_one(model, [wide[..., 3:-3]])
    assert fn is _qdw_simd
    fn(*args)
    assert_close_quant(outs[0], ref, 0.0)


def test_few_channels_keep_the_lane_kernel_and_its_unpacked_fallback():
    in_shape = (1, 9, 10, 5)
    model = dw_model(np.int8, in_shape, 3, 3, act="RELU")
    x = rand(np.int8, in_shape)
    ref = check(model, x, _qdepthwise3x3)
    wide = rand(np.int8, in_shape[:3] + (in_shape[3] + 4,))
    wide[..., 2:-2] = x
    fn, args, outs, *_ = bind_one(model, [wide[..., 2:-2]])
    assert fn is _qdepthwise  # pixels not packed
    fn(*args)
    assert_close_quant(outs[0], ref, 0.0)


def test_one_output_pixel_takes_the_integer_kernel():
    in_shape = (1, 21, 1, 64)  # streaming wake-word layer
    check(dw_model(np.int8, in_shape, 21, 1, padding="VALID"), rand(np.int8, in_shape), _qdepthwise)


def test_float_sums_beyond_2_pow_24_take_the_integer_kernel():
    """17x17 uint8 taps with |w + w_off| = 255 and inputs up to 255: 255 * 255 * 289 > 2^24, so
    float32 could round; the same layer with small weights is within the bound and runs _qdw_simd."""
    in_shape = (1, 18, 18, 16)
    kw_ = dict(per_channel=False, zp_in=3, zp_out=100, zp_w=0, s_in=0.01, s_out=20.0)
    big = dw_model(np.uint8, in_shape, 17, 17, w_range=(255, 255), **kw_)
    x = rand(np.uint8, in_shape, 200, 255)
    check(big, x, _qdepthwise)
    small = dw_model(np.uint8, in_shape, 17, 17, w_range=(0, 40), **kw_)
    check(small, x)


@intrinsic
def _vreq16(typingctx, acc, mult, shift, out, i, zp, lo, hi):
    """out[i:i+16] = vrequantize(acc[i:i+16], mult[i:], shift[i:], zp, lo, hi)."""

    def codegen(context, builder, sig, args):
        vt = ir.VectorType(ir.IntType(32), 16)
        ptrs = [context.make_array(sig.args[k])(context, builder, args[k]).data for k in range(4)]
        acc_v, m_v, s_v = (builder.load(block_ptr(builder, p, args[4], vt), align=4) for p in ptrs[:3])
        v = vrequantize(builder, acc_v, m_v, s_v, args[5], args[6], args[7])
        builder.store(v, block_ptr(builder, ptrs[3], args[4], vt), align=4)
        return context.get_dummy_value()

    return types.none(acc, mult, shift, out, types.int64, types.int64, types.int64, types.int64), codegen


@njit
def _vector_vs_scalar(accs, ms, ss, zp, lo, hi):
    out = np.empty_like(accs)
    for i in range(0, accs.shape[0], 16):
        _vreq16(accs, ms, ss, out, i, zp, lo, hi)
    bad = 0
    for i in range(accs.shape[0]):
        if out[i] != requantize(accs[i], ms[i], ss[i], zp, lo, hi, False):
            bad += 1
    return bad


@pytest.mark.parametrize("zp, lo, hi", [(0, -2**31, 2**31 - 1), (-5, -128, 127), (100, 0, 255), (-128, -128, -122)])
def test_vector_requantize_equals_scalar(zp, lo, hi):
    rng = np.random.default_rng(11)
    n = 16 * 8000
    accs = np.concatenate([rng.integers(-2**31, 2**31, n // 2), rng.integers(-5000, 5000, n // 2)])
    accs[:16] = [-2**31, 2**31 - 1, 0, -1, 1, 1 << 20, -(1 << 20), 2**30, -2**30, 3, -3, 5, -5, 7, -7, 2]
    ms = rng.integers(2**30, 2**31, n)
    ms[16:32] = 2**31 - 1
    ms[32:48] = 2**30
    ss = rng.integers(-31, 8, n)
    assert _vector_vs_scalar(accs.astype(np.int32), ms.astype(np.int32), ss.astype(np.int32), zp, lo, hi) == 0
