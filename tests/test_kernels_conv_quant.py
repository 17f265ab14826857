"""int8/uint8/int16 CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, TRANSPOSE_CONV and pooling vs LiteRT BUILTIN_REF.

Rule that holds: outputs are EXACTLY equal to the reference (assert_close_quant with
max_off_by_one_fraction=0). The kernels do TFLite's integer arithmetic; sums of integers are exact
in any order (int32 wraps alike), so there is no source of off-by-one once the requantization
rounding is the one LiteRT uses. That rounding was measured, not assumed: LiteRT 2.3's
BUILTIN_REF requantizes FULLY_CONNECTED with single rounding and CONV_2D / DEPTHWISE_CONV_2D /
TRANSPOSE_CONV with double rounding; `test_requantization_rounding_matches_litert` keeps that
measurement (many scales, thousands of accumulators, exact equality on each op).
"""

from __future__ import annotations

import numpy as np
import pytest

from edgert.kernels.conv import conv_geometry
from edgert.model.reader import load_model
from oneop import (assert_close_quant, assert_no_allocation, bind_one, build_one_op, check_real_model_ops, quant,
                   reference_outputs, run_edgert, run_one, shared_model)

RNG = np.random.default_rng(20240605)
RANGE = {np.int8: (-128, 127), np.uint8: (0, 255), np.int16: (-32768, 32767)}


@pytest.fixture(autouse=True)
def older_conv_paths(monkeypatch):
    # The case names say which path an int8 CONV_2D takes; on a CPU with AVX512-VNNI most would
    # take the integer dot-product path instead, which tests/test_kernels_qdot.py covers. Keep
    # these on the paths every other CPU runs.
    from edgert.kernels import conv

    monkeypatch.setattr(conv, "use_dot_product", lambda: False)


def rand(dtype, shape, lo=None, hi=None):
    a, b = RANGE[dtype]
    return RNG.integers(a if lo is None else lo, (b if hi is None else hi) + 1, shape).astype(dtype)


def assert_exact(model: bytes, inputs: list[np.ndarray]) -> np.ndarray:
    ref = reference_outputs(model, inputs)[0]
    ours = run_edgert(model, inputs)[0]
    assert_close_quant(ours, ref, max_off_by_one_fraction=0.0)
    return ref


# ------------------------------------------------------------------ CONV_2D


def conv_model(dtype, in_shape, o, kh, kw, *, stride=(1, 1), padding="SAME", dilation=(1, 1), act="NONE",
               per_channel=True, zp_in=5, zp_out=-7, zp_w=0, s_in=0.05, s_out=0.1, bias=True, w_range=None,
               bias_max=5000):
    n, h, w, c = in_shape
    oh, _ = conv_geometry(padding, h, kh, stride[0], dilation[0])
    ow, _ = conv_geometry(padding, w, kw, stride[1], dilation[1])
    lo, hi = w_range or RANGE[dtype]
    wts = rand(dtype, (o, kh, kw, c), lo, hi)
    s_w = RNG.uniform(0.002, 0.02, o) if per_channel else np.array([0.01])
    consts = {1: (wts, quant(s_w if per_channel else s_w[0], zp_w, 0))}
    consts[2] = (RNG.integers(-bias_max, bias_max + 1, o).astype(np.int32), quant(s_w * s_in, 0)) if bias else None
    options = dict(padding=padding, stride_h=stride[0], stride_w=stride[1], fused_activation_function=act,
                   dilation_h_factor=dilation[0], dilation_w_factor=dilation[1])
    return build_one_op("CONV_2D", [(in_shape, dtype, quant(s_in, zp_in))], [((n, oh, ow, o), dtype, quant(s_out, zp_out))],
                        options, consts, version=3 if dtype == np.int8 else 1)


CONV_CASES = {
    # (in_shape, o, kh, kw, kwargs); paths: outer = small K, many outputs; rows = 1x1 GEMM; im2col.
    "outer-3x3-s2-c3-relu6": ((1, 11, 10, 3), 16, 3, 3, dict(stride=(2, 2), act="RELU6")),
    "outer-1x1-c8-o17-relu": ((1, 6, 7, 8), 17, 1, 1, dict(act="RELU")),
    "outer-dilated-valid": ((1, 12, 11, 5), 20, 3, 2, dict(dilation=(2, 3), padding="VALID", act="RELU_N1_TO_1")),
    "outer-1x1-c6-o24": ((1, 5, 7, 6), 24, 1, 1, dict(act="RELU6")),  # 4 + 2 input channels per pass
    "rows-1x1-c70-o9": ((2, 5, 5, 70), 9, 1, 1, dict(act="NONE")),
    "rows-1x1-c64-o33-tanh-is-no-clamp": ((1, 4, 6, 64), 33, 1, 1, dict(act="TANH")),
    "im2col-3x3-c16-o16": ((1, 9, 8, 16), 16, 3, 3, dict(act="RELU")),
    "im2col-5x3-s2x1-c13-o7": ((1, 12, 9, 13), 7, 5, 3, dict(stride=(2, 1), act="RELU6")),
    "im2col-1x1-stride2": ((1, 9, 9, 67), 5, 1, 1, dict(stride=(2, 2))),
    "im2col-dilated-o3": ((1, 10, 11, 12), 3, 3, 3, dict(dilation=(2, 2), act="NONE")),
    "per-tensor": ((1, 7, 7, 6), 24, 3, 3, dict(per_channel=False)),  # LiteRT requires an int8 conv bias
    "kernel-bigger-than-image": ((1, 2, 3, 9), 4, 5, 5, dict()),
    "1x1-image": ((1, 1, 1, 13), 18, 1, 1, dict(padding="VALID")),
    "outer-3x3-s2-c3-o8": ((1, 13, 12, 3), 8, 3, 3, dict(stride=(2, 2), act="RELU6")),  # MobileNet v1 0.25 stem
}


@pytest.mark.parametrize("name", CONV_CASES)
def test_conv2d_int8_exact(name):
    in_shape, o, kh, kw, kw_ = CONV_CASES[name]
    model = conv_model(np.int8, in_shape, o, kh, kw, **kw_)
    assert_exact(model, [rand(np.int8, in_shape)])


@pytest.mark.parametrize("name", ["outer-3x3-s2-c3-relu6", "rows-1x1-c70-o9", "im2col-3x3-c16-o16"])
def test_conv2d_uint8_with_filter_zero_point_exact(name):
    in_shape, o, kh, kw, kw_ = CONV_CASES[name]
    kw_ = dict(kw_, per_channel=False, zp_in=131, zp_out=120, zp_w=140)
    model = conv_model(np.uint8, in_shape, o, kh, kw, **kw_)
    assert_exact(model, [rand(np.uint8, in_shape)])


@pytest.mark.parametrize("path_case", ["outer-3x3-s2-c3-relu6", "rows-1x1-c70-o9", "im2col-3x3-c16-o16"])
def test_conv2d_int8_saturates_at_range_edges(path_case):
    # inputs only -128/127, weights only -128/127, tiny output scale: a multiplier far above 1
    # (positive shift) and accumulators that overflow the output range in both directions.
    in_shape, o, kh, kw, kw_ = CONV_CASES[path_case]
    model = conv_model(np.int8, in_shape, o, kh, kw, **dict(kw_, s_in=0.5, s_out=0.0005, zp_in=0, zp_out=0, act="NONE"))
    x = np.where(RNG.integers(0, 2, in_shape) == 1, 127, -128).astype(np.int8)
    ref = assert_exact(model, [x])
    assert (ref == 127).any() and (ref == -128).any()


def test_conv2d_int8_large_multiplier_is_not_saturated_everywhere():
    model = conv_model(np.int8, (1, 6, 6, 4), 16, 3, 3, s_in=0.9, s_out=0.004, zp_in=0, zp_out=0, w_range=(-3, 3),
                       bias_max=2)
    ref = assert_exact(model, [rand(np.int8, (1, 6, 6, 4), -4, 4)])
    assert ((ref > -128) & (ref < 127)).any()


@pytest.mark.parametrize("name", ["outer-1x1-c8-o17-relu", "rows-1x1-c70-o9", "im2col-5x3-s2x1-c13-o7"])
def test_conv2d_int8_strided_output(name):
    in_shape, o, kh, kw, kw_ = CONV_CASES[name]
    model = conv_model(np.int8, in_shape, o, kh, kw, **kw_)
    x = rand(np.int8, in_shape)
    out = run_one(model, [x], strided=True)[0]
    assert_close_quant(np.array(out), reference_outputs(model, [x])[0], 0.0)
    assert (out.base[..., :2] == 77).all() and (out.base[..., -3:] == 77).all()


@pytest.mark.parametrize("name", ["outer-3x3-s2-c3-relu6", "outer-1x1-c8-o17-relu"])
def test_conv2d_int8_outer_path_exact_on_two_threads(name):
    # The outer path's prange splits output rows over numba threads, each with its own accumulator row.
    from edgert.runtime.threads import set_threads

    in_shape, o, kh, kw, kw_ = CONV_CASES[name]
    model = conv_model(np.int8, (1, 12, 13, in_shape[3]), o, kh, kw, **kw_)
    x = rand(np.int8, (1, 12, 13, in_shape[3]))
    try:
        ours = run_edgert(model, [x], threads=2)[0]
    finally:
        set_threads(1)
    assert_close_quant(ours, reference_outputs(model, [x])[0], max_off_by_one_fraction=0.0)


def test_conv2d_int8_reads_channel_sliced_input():
    in_shape, o, kh, kw, kw_ = CONV_CASES["rows-1x1-c70-o9"]
    model = conv_model(np.int8, in_shape, o, kh, kw, **kw_)
    x = rand(np.int8, in_shape)
    wide = rand(np.int8, in_shape[:3] + (in_shape[3] + 6,))
    wide[..., 3:-3] = x
    out = run_one(model, [wide[..., 3:-3]])[0]
    assert_close_quant(np.array(out), reference_outputs(model, [x])[0], 0.0)


# ------------------------------------------------------------------ DEPTHWISE_CONV_2D


def dw_model(dtype, in_shape, mult, kh, kw, *, stride=(1, 1), padding="SAME", dilation=(1, 1), act="NONE",
             per_channel=True, zp_in=-3, zp_out=4, zp_w=0, bias=True):
    n, h, w, c = in_shape
    oc = c * mult
    oh, _ = conv_geometry(padding, h, kh, stride[0], dilation[0])
    ow, _ = conv_geometry(padding, w, kw, stride[1], dilation[1])
    s_w = RNG.uniform(0.002, 0.02, oc) if per_channel else np.array([0.01])
    consts = {1: (rand(dtype, (1, kh, kw, oc)), quant(s_w if per_channel else s_w[0], zp_w, 3))}
    consts[2] = (RNG.integers(-3000, 3000, oc).astype(np.int32), quant(s_w * 0.05, 0)) if bias else None
    options = dict(padding=padding, stride_h=stride[0], stride_w=stride[1], depth_multiplier=mult,
                   fused_activation_function=act, dilation_h_factor=dilation[0], dilation_w_factor=dilation[1])
    return build_one_op("DEPTHWISE_CONV_2D", [(in_shape, dtype, quant(0.05, zp_in))],
                        [((n, oh, ow, oc), dtype, quant(0.08, zp_out))], options, consts,
                        version=3 if dtype == np.int8 else 1)


DW_CASES = {
    "3x3-s1-relu6": ((1, 9, 8, 19), 1, 3, 3, dict(act="RELU6")),
    "3x3-s2-relu": ((2, 10, 9, 8), 1, 3, 3, dict(stride=(2, 2), act="RELU")),
    "mult2-valid": ((1, 7, 6, 5), 2, 3, 3, dict(padding="VALID", act="RELU_N1_TO_1")),
    "mult3-input-depth-1": ((1, 8, 8, 1), 3, 5, 3, dict()),
    "dilated": ((1, 11, 10, 7), 1, 3, 3, dict(dilation=(2, 3))),  # LiteRT requires an int8 depthwise bias
    "wakeword-3x1-valid": ((1, 5, 1, 64), 1, 3, 1, dict(padding="VALID")),
    # 3x3 stride 1, <= 32 channels: _qdepthwise3x3 (interior lanes) + _qdw_pixels (border)
    "fast-c8-relu6": ((1, 13, 21, 8), 1, 3, 3, dict(act="RELU6")),  # 8 pixels per pass, partial last pass
    "fast-c32-valid": ((2, 6, 7, 32), 1, 3, 3, dict(padding="VALID")),  # no border, 2 images
    "fast-c3-dilated": ((1, 12, 14, 3), 1, 3, 3, dict(dilation=(2, 3), act="RELU")),  # 21 pixels per pass
    "fast-c16-no-interior": ((1, 2, 2, 16), 1, 3, 3, dict()),  # every pixel on the border
    "fast-c5-per-tensor": ((1, 9, 10, 5), 1, 3, 3, dict(per_channel=False, act="RELU_N1_TO_1")),
}


@pytest.mark.parametrize("name", DW_CASES)
def test_depthwise_int8_exact(name):
    in_shape, mult, kh, kw, kw_ = DW_CASES[name]
    assert_exact(dw_model(np.int8, in_shape, mult, kh, kw, **kw_), [rand(np.int8, in_shape)])


@pytest.mark.parametrize("name", ["3x3-s2-relu", "mult2-valid"])
def test_depthwise_uint8_with_filter_zero_point_exact(name):
    in_shape, mult, kh, kw, kw_ = DW_CASES[name]
    model = dw_model(np.uint8, in_shape, mult, kh, kw, **dict(kw_, per_channel=False, zp_in=128, zp_out=100, zp_w=119))
    assert_exact(model, [rand(np.uint8, in_shape)])


@pytest.mark.parametrize("name", ["mult2-valid", "fast-c8-relu6"])
def test_depthwise_int8_strided_output(name):
    in_shape, mult, kh, kw, kw_ = DW_CASES[name]
    model = dw_model(np.int8, in_shape, mult, kh, kw, **kw_)
    x = rand(np.int8, in_shape)
    out = run_one(model, [x], strided=True)[0]
    assert_close_quant(np.array(out), reference_outputs(model, [x])[0], 0.0)
    assert (out.base[..., :2] == 77).all() and (out.base[..., -3:] == 77).all()


def _dw_kernel(model: bytes, inputs: list[np.ndarray], **kw):
    return bind_one(model, inputs, **kw).fn


@pytest.mark.parametrize("name", [n for n in DW_CASES if n.startswith("fast-")])
def test_depthwise_fast_path_taken_and_uint8_exact(name):
    from edgert.kernels.conv import _qdepthwise3x3, _qdw_simd

    in_shape, mult, kh, kw, kw_ = DW_CASES[name]
    x = rand(np.int8, in_shape)
    fast = _qdw_simd if in_shape[3] >= 8 else _qdepthwise3x3  # _qdw_simd from 8 channels on
    assert _dw_kernel(dw_model(np.int8, in_shape, mult, kh, kw, **kw_), [x]) is fast
    model = dw_model(np.uint8, in_shape, mult, kh, kw, **dict(kw_, per_channel=False, zp_in=128, zp_out=100, zp_w=119))
    assert_exact(model, [rand(np.uint8, in_shape)])


def test_depthwise_fast_path_saturates_and_reads_channel_sliced_input():
    from edgert.kernels.conv import _qdw_simd

    in_shape, mult, kh, kw, kw_ = DW_CASES["fast-c8-relu6"]
    model = dw_model(np.int8, in_shape, mult, kh, kw, **dict(kw_, act="NONE"))
    x = rand(np.int8, in_shape)
    x[0, 3:6, 4:9] = 127
    x[0, 7:10, 10:15] = -128
    ref = assert_exact(model, [x])
    assert ref.min() == -128 and ref.max() == 127
    wide = rand(np.int8, in_shape[:3] + (in_shape[3] + 6,))
    wide[..., 3:-3] = x
    fn, args, outs, *_ = bind_one(model, [wide[..., 3:-3]])
    assert fn is _qdw_simd  # addresses pixels by their stride
    fn(*args)
    assert_close_quant(outs[0], ref, 0.0)
    assert _dw_kernel(model, [x]) is _qdw_simd


# ------------------------------------------------------------------ FULLY_CONNECTED


def fc_model(dtype, batch, i, o, *, act="NONE", per_channel=False, zp_in=9, zp_out=-2, zp_w=0, bias=True,
             s_out=0.1, keep_dims_shape=None):
    s_w = RNG.uniform(0.002, 0.02, o) if per_channel else np.array([0.008])
    consts = {1: (rand(dtype, (o, i)), quant(s_w if per_channel else s_w[0], zp_w, 0))}
    consts[2] = (RNG.integers(-5000, 5000, o).astype(np.int32), quant(s_w * 0.05, 0)) if bias else None
    in_shape = keep_dims_shape or (batch, i)
    return build_one_op("FULLY_CONNECTED", [(in_shape, dtype, quant(0.05, zp_in))],
                        [((batch, o), dtype, quant(s_out, zp_out))], dict(fused_activation_function=act), consts,
                        version=4 if dtype == np.int8 else 1), in_shape


FC_CASES = {
    "per-channel-relu": (3, 37, 29, dict(per_channel=True, act="RELU")),
    "per-tensor-int8-filter-zp": (2, 64, 16, dict(zp_w=-3, act="RELU6")),
    "no-bias": (1, 130, 7, dict(bias=False)),
    "flattened-4d-input": (2, 24, 10, dict(keep_dims_shape=(2, 2, 3, 4))),
    "relu-n1-to-1": (4, 8, 128, dict(act="RELU_N1_TO_1", per_channel=True)),
}


@pytest.mark.parametrize("name", FC_CASES)
def test_fully_connected_int8_exact(name):
    batch, i, o, kw_ = FC_CASES[name]
    model, in_shape = fc_model(np.int8, batch, i, o, **kw_)
    assert_exact(model, [rand(np.int8, in_shape)])


def test_fully_connected_uint8_exact():
    model, in_shape = fc_model(np.uint8, 3, 50, 21, zp_in=128, zp_out=131, zp_w=127, act="RELU")
    assert_exact(model, [rand(np.uint8, in_shape)])


def test_fully_connected_int8_saturates_with_large_multiplier():
    model, in_shape = fc_model(np.int8, 2, 40, 30, per_channel=True, s_out=0.0001, zp_in=-128, zp_out=127)
    ref = assert_exact(model, [np.where(RNG.integers(0, 2, in_shape) == 1, 127, -128).astype(np.int8)])
    assert (ref == 127).any() and (ref == -128).any()


# ------------------------------------------------------------------ TRANSPOSE_CONV


def tc_model(dtype, in_shape, o, k, stride, out_hw, *, padding="SAME", bias=True, per_channel=True, zp_w=0,
             zp_in=-4, zp_out=6, act=None, version=3):
    n, _, _, c = in_shape
    out_shape = (n, out_hw[0], out_hw[1], o)
    s_w = RNG.uniform(0.002, 0.02, o) if per_channel else np.array([0.01])
    consts = {0: np.array(out_shape, np.int32), 1: (rand(dtype, (o, k[0], k[1], c)), quant(s_w if per_channel else s_w[0], zp_w, 0))}
    if bias:
        consts[3] = (RNG.integers(-3000, 3000, o).astype(np.int32), quant(s_w * 0.05, 0))
    options = dict(padding=padding, stride_h=stride[0], stride_w=stride[1])
    if act is not None:
        options["fused_activation_function"] = act
    return build_one_op("TRANSPOSE_CONV", [(in_shape, dtype, quant(0.05, zp_in))],
                        [(out_shape, dtype, quant(0.1, zp_out))], options, consts, version=version)


TC_CASES = {
    "unet-2x2-s2-no-bias": ((1, 4, 4, 24), 8, (2, 2), (2, 2), (8, 8), dict(bias=False)),
    "3x3-s2-same-bias": ((1, 5, 4, 3), 4, (3, 3), (2, 2), (10, 8), dict()),
    "3x3-s2-valid-batch2": ((2, 4, 5, 3), 6, (3, 3), (2, 2), (9, 11), dict(padding="VALID")),
    "4x3-s1-odd-out": ((1, 5, 6, 7), 5, (4, 3), (1, 1), (5, 6), dict()),
    "relu-fused-v4": ((1, 4, 4, 6), 3, (3, 3), (2, 2), (8, 8), dict(act="RELU", version=4)),
}


@pytest.mark.parametrize("name", TC_CASES)
def test_transpose_conv_int8_exact(name):
    in_shape, o, k, s, hw, kw_ = TC_CASES[name]
    assert_exact(tc_model(np.int8, in_shape, o, k, s, hw, **kw_), [rand(np.int8, in_shape)])


def test_transpose_conv_uint8_exact():
    in_shape, o, k, s, hw, kw_ = TC_CASES["3x3-s2-same-bias"]
    model = tc_model(np.uint8, in_shape, o, k, s, hw, per_channel=False, zp_w=130, zp_in=120, zp_out=128)
    assert_exact(model, [rand(np.uint8, in_shape)])


# ------------------------------------------------------------------ pooling


def pool_model(opcode, dtype, in_shape, k, s, padding, act="NONE", zp=3):
    n, h, w, c = in_shape
    oh, ow = conv_geometry(padding, h, k[0], s[0])[0], conv_geometry(padding, w, k[1], s[1])[0]
    q = quant(0.07, zp)
    opts = dict(padding=padding, stride_h=s[0], stride_w=s[1], filter_height=k[0], filter_width=k[1],
                fused_activation_function=act)
    return build_one_op(opcode, [(in_shape, dtype, q)], [((n, oh, ow, c), dtype, q)], opts, version=2)


POOL_CASES = {
    "2x2-s2-valid": ((1, 8, 8, 5), (2, 2), (2, 2), "VALID", "NONE"),
    "3x3-s2-same-relu6": ((2, 9, 7, 3), (3, 3), (2, 2), "SAME", "RELU6"),
    "global-3x3": ((1, 3, 3, 17), (3, 3), (1, 1), "VALID", "RELU"),
    "3x2-s1-same-relu-n1": ((1, 5, 6, 4), (3, 2), (1, 1), "SAME", "RELU_N1_TO_1"),
}


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16])
@pytest.mark.parametrize("opcode", ["AVERAGE_POOL_2D", "MAX_POOL_2D"])
@pytest.mark.parametrize("name", POOL_CASES)
def test_pool_quantized_exact(name, opcode, dtype):
    in_shape, k, s, padding, act = POOL_CASES[name]
    zp = {np.int8: -5, np.uint8: 128, np.int16: 0}[dtype]
    assert_exact(pool_model(opcode, dtype, in_shape, k, s, padding, act, zp), [rand(dtype, in_shape)])


def test_average_pool_int8_rounds_half_away_from_zero():
    # Sums that land exactly on .5: 2-tap windows of (odd, even) values, both signs.
    model = pool_model("AVERAGE_POOL_2D", np.int8, (1, 1, 8, 2), (1, 2), (1, 2), "VALID", zp=0)
    x = np.array([[[[1, -1], [2, -2], [-5, 5], [0, 0], [127, -128], [126, -127], [3, -3], [-4, 4]]]], np.int8)
    ref = assert_exact(model, [x])
    assert ref[0, 0, 0].tolist() == [2, -2]  # (1 + 2) / 2 = 1.5 -> 2, -1.5 -> -2


def test_pool_int8_strided_output():
    model = pool_model("MAX_POOL_2D", np.int8, (1, 8, 8, 5), (2, 2), (2, 2), "VALID")
    x = rand(np.int8, (1, 8, 8, 5))
    out = run_one(model, [x], strided=True)[0]
    assert_close_quant(np.array(out), reference_outputs(model, [x])[0], 0.0)


# ------------------------------------------------------------------ rounding, allocation, models


def test_requantization_rounding_matches_litert():
    """Many output scales x many accumulators: FC (single rounding) and conv-family (double) stay exact.

    Double and single rounding disagree on roughly 1 in 300 accumulators at these sizes, so a wrong
    choice fails here with near certainty (measured: 100+ mismatches over these cases).
    """
    for trial in range(4):
        s_out = float(RNG.uniform(0.01, 0.2))
        fc, fc_shape = fc_model(np.int8, 64, 8, 64, per_channel=bool(trial % 2), s_out=s_out)
        assert_exact(fc, [rand(np.int8, fc_shape)])
        conv = conv_model(np.int8, (1, 64, 1, 8), 64, 1, 1, s_out=s_out, per_channel=bool(trial % 2))
        assert_exact(conv, [rand(np.int8, (1, 64, 1, 8))])
        dw = dw_model(np.int8, (1, 64, 1, 64), 1, 1, 1, per_channel=bool(trial % 2))
        assert_exact(dw, [rand(np.int8, (1, 64, 1, 64))])


def test_requantize_equals_fixedpoint_reference():
    """conv.requantize's branch-free double rounding equals fixedpoint.multiply_by_quantized_multiplier
    on random and extreme accumulators (int32 ends, ties) and every shift from -31 to 7."""
    from numba import njit

    from edgert.kernels import fixedpoint as fp
    from edgert.kernels.conv import requantize

    @njit
    def mismatches(accs, ms, ss):
        bad = 0
        for i in range(accs.shape[0]):
            ours = requantize(accs[i], ms[i], ss[i], 0, -(1 << 40), 1 << 40, False)
            if ours != np.int64(np.int32(fp.multiply_by_quantized_multiplier(accs[i], ms[i], ss[i]))):
                bad += 1
        return bad

    rng = np.random.default_rng(7)
    n = 200_000
    accs = np.concatenate([rng.integers(-2**31, 2**31, n), rng.integers(-3000, 3000, n),
                           np.tile([-2**31, 2**31 - 1, 0, -1, 1, 1 << 20, -(1 << 20)], 40)]).astype(np.int32)
    ms = rng.integers(2**30, 2**31, accs.size).astype(np.int32)
    ms[:50] = 2**31 - 1
    ms[50:100] = 2**30
    ss = rng.integers(-31, 8, accs.size).astype(np.int32)
    assert mismatches(accs, ms, ss) == 0
    ties = np.arange(-40000, 40000).astype(np.int32)  # every remainder pattern at small shifts
    for s_ in range(-16, 1):
        assert mismatches(ties, np.full(ties.size, 2**30, np.int32), np.full(ties.size, s_, np.int32)) == 0


CALLS = {
    "conv-outer": lambda: conv_model(np.int8, *CONV_CASES["outer-3x3-s2-c3-relu6"][:4], **CONV_CASES["outer-3x3-s2-c3-relu6"][4]),
    "conv-rows": lambda: conv_model(np.int8, *CONV_CASES["rows-1x1-c70-o9"][:4], **CONV_CASES["rows-1x1-c70-o9"][4]),
    "conv-im2col": lambda: conv_model(np.int8, *CONV_CASES["im2col-3x3-c16-o16"][:4], **CONV_CASES["im2col-3x3-c16-o16"][4]),
    "conv-gemm": lambda: conv_model(np.int8, *GEMM_CASES["gemm-3x3-c64-o12-relu"][:4], **GEMM_CASES["gemm-3x3-c64-o12-relu"][4]),
    "depthwise": lambda: dw_model(np.int8, *DW_CASES["3x3-s1-relu6"][:4], **DW_CASES["3x3-s1-relu6"][4]),
    "conv-simd": lambda: conv_model(np.int8, *SIMD_CASES["simd-3x3-c16-o16-relu"][:4], **SIMD_CASES["simd-3x3-c16-o16-relu"][4]),
    "depthwise-fast": lambda: dw_model(np.int8, *DW_CASES["fast-c8-relu6"][:4], **DW_CASES["fast-c8-relu6"][4]),
    "fc": lambda: fc_model(np.int8, *FC_CASES["per-channel-relu"][:3], **FC_CASES["per-channel-relu"][3])[0],
    "tconv": lambda: tc_model(np.int8, *TC_CASES["3x3-s2-same-bias"][:5], **TC_CASES["3x3-s2-same-bias"][5]),
    "pool": lambda: pool_model("AVERAGE_POOL_2D", np.int8, (1, 8, 8, 5), (2, 2), (2, 2), "VALID"),
}


@pytest.mark.parametrize("name", CALLS)
def test_quantized_call_allocates_nothing(name):
    model = CALLS[name]()
    g = load_model(model)
    inputs = [rand(t.dtype.type, t.shape) for t in (g.main.tensors[i] for i in g.main.inputs)]
    fn, args, *_ = bind_one(model, inputs, strided=True)
    assert_no_allocation(fn, args)


QUANT_MODELS = ["zoo/unet_small_128_int8.tflite", "zoo/ic_resnet8_int8.tflite", "zoo/kws_ds_cnn_int8.tflite",
                "zoo/mobilenet_v2_035_96_int8.tflite", "real/pymicro-wakeword/hey_jarvis.tflite"]
FAMILY = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "AVERAGE_POOL_2D", "MAX_POOL_2D"}


@pytest.mark.parametrize("name", QUANT_MODELS)
def test_real_int8_model_layers_exact(name):
    """Every conv-family op of a real int8 model, fed LiteRT's own intermediate tensors, is exact."""
    checked = check_real_model_ops(shared_model(name), FAMILY, lambda ours, ref: assert_close_quant(ours, ref, 0.0),
                                   seed=3)
    assert sum(checked.values()) > 0


# ------------------------------------------------------------------ register-blocked path (_qconv_simd)

SIMD_CASES = {
    # (in_shape, o, kh, kw, kwargs): >= 100 output pixels, K <= 512, O <= 32 or K >= 96
    "simd-3x3-c16-o16-relu": ((1, 12, 11, 16), 16, 3, 3, dict(act="RELU")),  # ResNet-8, padding taps on the border
    "simd-3x3-s2-c3-o8-relu6": ((1, 25, 23, 3), 8, 3, 3, dict(stride=(2, 2), act="RELU6")),  # MobileNet stem
    "simd-1x1-c8-o20": ((2, 9, 7, 8), 20, 1, 1, dict()),  # 16 + 4 channels: a partial lane block, 2 images
    "simd-dilated-valid-o5": ((1, 16, 17, 6), 5, 3, 2, dict(dilation=(2, 3), padding="VALID", act="RELU_N1_TO_1")),
    "simd-3x3-c56-o40-per-tensor": ((1, 10, 12, 56), 40, 3, 3, dict(per_channel=False)),  # K = 504
    "simd-5x5-c4-o33": ((1, 21, 12, 4), 33, 5, 5, dict(stride=(1, 2))),  # K = 100: three blocks, 1-pixel tails
    # >= 8 channels and a 3x3 filter: the converted row buffer
    "simd-rows-3x3-s2-c8-o12": ((1, 21, 19, 8), 12, 3, 3, dict(stride=(2, 2), act="RELU")),
    "simd-rows-dilated-c9-o7": ((1, 14, 13, 9), 7, 3, 3, dict(dilation=(2, 2))),
    "simd-wide-rows-do-not-fit": ((1, 4, 130, 48), 16, 3, 3, dict()),  # 3 * 132 * 48 floats > qgemm.XBUF
}


@pytest.mark.parametrize("name", SIMD_CASES)
def test_conv2d_int8_simd_path_exact(name):
    in_shape, o, kh, kw, kw_ = SIMD_CASES[name]
    model = conv_model(np.int8, in_shape, o, kh, kw, **kw_)
    assert _conv_path(model) == "simd"
    assert_exact(model, [rand(np.int8, in_shape)])


def test_conv2d_simd_path_strided_output_channel_sliced_input_and_saturation():
    in_shape, o, kh, kw, kw_ = SIMD_CASES["simd-1x1-c8-o20"]
    model = conv_model(np.int8, in_shape, o, kh, kw, **dict(kw_, s_in=0.5, s_out=0.002, zp_in=0, zp_out=0))
    x = rand(np.int8, in_shape)
    ref = reference_outputs(model, [x])[0]
    assert ref.min() == -128 and ref.max() == 127
    wide = rand(np.int8, in_shape[:3] + (in_shape[3] + 5,))
    wide[..., 2:-3] = x
    out = run_one(model, [wide[..., 2:-3]], strided=True)[0]
    assert_close_quant(np.array(out), ref, 0.0)
    assert (out.base[..., :2] == 77).all() and (out.base[..., -3:] == 77).all()


def test_conv2d_uint8_simd_path_only_within_the_exact_range():
    """uint8 with a filter zero point: |w + w_off| up to 255, so a long K can break the float32 bound.
    K = 258 at the full range bounds every sum by 255 * 255 * 258 = 2^24 - 766 and takes the simd
    path; K = 288 exceeds 2^24 and must not. Both equal the reference."""
    for c, path_is_simd in ((258, True), (288, False)):
        in_shape = (1, 12, 10, c)
        model = conv_model(np.uint8, in_shape, 12, 1, 1, per_channel=False, zp_in=255, zp_out=100, zp_w=255,
                           w_range=(0, 0), s_in=0.01, s_out=30.0)
        assert (_conv_path(model) == "simd") == path_is_simd
        assert_exact(model, [rand(np.uint8, in_shape)])


# ------------------------------------------------------------------ float32 GEMM path (qgemm)


def _conv_path(model: bytes) -> str:
    from edgert.kernels.conv import _qconv_path
    from edgert.kernels.registry import OpContext

    g = load_model(model)
    return _qconv_path(OpContext.of(g.main, g.main.operators[0]))


GEMM_CASES = {
    # (in_shape, o, kh, kw, kwargs): K = KH*KW*C >= conv.QGEMM_MIN_K runs qgemm's float32 GEMM.
    "gemm-3x3-c64-o12-relu": ((1, 8, 8, 64), 12, 3, 3, dict(act="RELU")),  # K = 576, padding taps
    "gemm-1x1-c520-o5-odd": ((1, 6, 8, 520), 5, 1, 1, dict()),  # K % 32 = 8 tail columns, odd O
    "gemm-3x3-s2-c80-o9": ((2, 11, 9, 80), 9, 3, 3, dict(stride=(2, 2), act="RELU6")),  # 11 rows: partial block
}


@pytest.mark.parametrize("name", GEMM_CASES)
def test_conv2d_int8_gemm_path_exact(name):
    in_shape, o, kh, kw, kw_ = GEMM_CASES[name]
    model = conv_model(np.int8, in_shape, o, kh, kw, **kw_)
    assert _conv_path(model) == "gemm"
    assert_exact(model, [rand(np.int8, in_shape)])


def test_conv2d_int8_gemm_path_strided_output_and_saturation():
    in_shape, o, kh, kw, kw_ = GEMM_CASES["gemm-3x3-c64-o12-relu"]
    model = conv_model(np.int8, in_shape, o, kh, kw, **dict(kw_, s_in=0.5, s_out=0.0005, zp_in=0, zp_out=0, act="NONE"))
    assert _conv_path(model) == "gemm"
    x = np.where(RNG.integers(0, 2, in_shape) == 1, 127, -128).astype(np.int8)
    out = run_one(model, [x], strided=True)[0]
    ref = reference_outputs(model, [x])[0]
    assert_close_quant(np.array(out), ref, 0.0)
    assert (ref == 127).any() and (ref == -128).any()


def test_conv2d_uint8_gemm_path_beyond_float_exact_range():
    """|x - zp_in| = 255 and |w - zp_w| = 255 on every tap: a whole-K float sum would reach
    255 * 255 * 1152 > 2^24 and lose bits; qgemm.k_chunks must split K so each chunk stays exact."""
    from edgert.kernels.qgemm import EXACT_LIMIT, KC, chunk_bound_ok, k_chunks

    in_shape, o, k = (1, 8, 8, 128), 6, 3
    model = conv_model(np.uint8, in_shape, o, k, k, per_channel=False, zp_in=255, zp_w=0, zp_out=128, s_in=0.01,
                       s_out=50.0, w_range=(255, 255), bias_max=0)
    assert _conv_path(model) == "gemm"
    g = load_model(model)
    w2 = g.main.tensors[g.main.operators[0].inputs[1]].data.reshape(o, -1)
    bounds = k_chunks(w2, 0, 255)
    assert 255 * 255 * w2.shape[1] > EXACT_LIMIT and max(np.diff(bounds)) < KC  # the bound, not KC, split it
    assert chunk_bound_ok(w2, 0, 255, bounds)
    x = np.zeros(in_shape, np.uint8)  # x - zp_in = -255 everywhere; padding taps contribute 0
    x[0, 3, 3, :5] = 254
    ref = assert_exact(model, [x])
    assert len(np.unique(ref)) > 1


def test_k_chunks_keep_every_chunk_within_the_exact_range():
    from edgert.kernels.qgemm import KV, chunk_bound_ok, k_chunks

    for k, w_off, a_max in [(1152, 0, 255), (2304, 0, 128), (700, -255, 255), (31, 0, 255), (4096, 0, 255)]:
        w = RNG.integers(0 if w_off else -128, 256 if w_off else 128, (7, k)).astype(np.uint8 if w_off else np.int8)
        bounds = k_chunks(w, w_off, a_max)
        assert bounds[0] == 0 and bounds[-1] == k // KV * KV and (np.diff(bounds) % KV == 0).all()
        assert chunk_bound_ok(w, w_off, a_max, np.append(bounds, k) if bounds[-1] != k else bounds)


def test_gemm_block_equals_integer_matmul_at_the_limit():
    """The microkernel alone, all operands at their extremes, chunks from k_chunks plus the tail."""
    from edgert.kernels.qgemm import MR, gemm_block, k_chunks

    k, n_o, w_off = 600, 5, -255
    w = np.full((n_o, k), 0, np.uint8)  # w + w_off = -255 everywhere
    w[:, ::7] = 255
    tile = np.full((MR, 608), 255.0, np.float32)
    tile[:, k:] = 0.0
    tile[3, :k:5] = -255.0
    chunks = k_chunks(w, w_off, 255)
    acc = np.zeros((MR, n_o), np.int32)
    gemm_block(tile, 0, w, 0, w_off, chunks, acc, False)
    tail = np.zeros((n_o, 608 - chunks[-1]), np.uint8)
    tail[:, : k - chunks[-1]] = w[:, chunks[-1]:]
    # padded tail weights meet zero tile columns, so w_off there contributes nothing
    gemm_block(tile, 0, tail, chunks[-1], w_off, np.array([chunks[-1], 608], np.int64), acc, True)
    expect = tile[:, :k].astype(np.int64) @ (w.astype(np.int64) + w_off).T
    assert (acc == expect.astype(np.int32)).all()


def test_gemm_block_needs_the_chunks_beyond_2_pow_24():
    """Without k_chunks' split the float sum is measurably wrong (so the split is what keeps it exact)."""
    from edgert.kernels.qgemm import MR, gemm_block, k_chunks

    k = 4096
    w = RNG.integers(200, 256, (6, k)).astype(np.uint8)
    tile = -RNG.integers(200, 256, (MR, k)).astype(np.float32)
    expect = (tile.astype(np.int64) @ w.T.astype(np.int64)).astype(np.int32)
    acc = np.zeros((MR, 6), np.int32)
    gemm_block(tile, 0, w, 0, 0, np.array([0, k], np.int64), acc, False)
    assert (acc != expect).any()  # one chunk: partial sums beyond 2^24 round
    gemm_block(tile, 0, w, 0, 0, k_chunks(w, 0, 255), acc, False)
    assert (acc == expect).all()
