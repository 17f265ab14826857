"""CONV_2D, DEPTHWISE_CONV_2D, TRANSPOSE_CONV, FULLY_CONNECTED, BATCH_MATMUL float32 kernels vs LiteRT BUILTIN_REF."""

from __future__ import annotations

import numpy as np
import pytest

from edgert.errors import UnsupportedOpError
from edgert.kernels import conv, pool
from edgert.kernels.conv import conv_geometry
from edgert.kernels.registry import KernelRegistry, OpContext
from edgert.model.reader import load_model
from oneop import (assert_close_float, assert_no_allocation, bind_one, check_real_model_ops, family_registry,
                   one_op_case, quant, run_edgert, run_one, shared_model)


def registry() -> KernelRegistry:
    return family_registry(conv, pool)


def check(model, inputs, ref, *, strided: bool = True) -> None:
    """Ours equals the reference, into a fresh output and (strided) into a channel slice of a wider one."""
    assert_close_float(run_one(model, inputs)[0], ref[0])
    if strided:
        assert_close_float(run_one(model, inputs, strided=True)[0], ref[0])


RNG = np.random.default_rng(1234)


def _w(*shape):
    return RNG.uniform(-1, 1, shape).astype(np.float32)


# ------------------------------------------------------------------ CONV_2D


def conv_case(in_shape, o, kh, kw, stride=(1, 1), padding="SAME", act="NONE", dilation=(1, 1), groups=1):
    n, h, w, c = in_shape
    oh, _ = conv_geometry(padding, h, kh, stride[0], dilation[0])
    ow, _ = conv_geometry(padding, w, kw, stride[1], dilation[1])
    options = dict(padding=padding, stride_h=stride[0], stride_w=stride[1], fused_activation_function=act,
                   dilation_h_factor=dilation[0], dilation_w_factor=dilation[1])
    consts = {1: _w(o, kh, kw, c // groups), 2: _w(o)}
    return one_op_case("CONV_2D", [(in_shape, np.float32)], [((n, oh, ow, o), np.float32)], options, consts,
                       version=1 if groups == 1 else 6)


CONV_CASES = {
    "1x1": ((1, 6, 7, 16), 8, 1, 1, (1, 1), "SAME", "RELU"),
    "1x1-valid-batch2": ((2, 5, 5, 7), 9, 1, 1, (1, 1), "VALID", "NONE"),
    "1x1-stride2": ((1, 9, 9, 6), 5, 1, 1, (2, 2), "SAME", "RELU6"),
    "3x3-same-c3": ((1, 11, 10, 3), 8, 3, 3, (2, 2), "SAME", "RELU6"),
    "3x3-valid": ((2, 9, 7, 5), 6, 3, 3, (1, 1), "VALID", "RELU_N1_TO_1"),
    "5x3-stride-2x1": ((1, 12, 9, 4), 7, 5, 3, (2, 1), "SAME", "NONE"),
    "dilated": ((1, 10, 11, 4), 3, 3, 3, (1, 1), "SAME", "TANH", (2, 3)),
    "tiled-im2col": ((1, 40, 40, 8), 12, 3, 3, (1, 1), "SAME", "RELU"),
    "1x1-image": ((1, 1, 1, 13), 4, 1, 1, (1, 1), "VALID", "NONE"),
    "kernel-bigger-than-image": ((1, 2, 3, 3), 4, 5, 5, (1, 1), "SAME", "NONE"),
    # register-blocked SIMD path: 8-pixel blocks, 4- and 1-pixel tails, full and partial 16-channel blocks
    "simd-3x3-o16-w19": ((1, 7, 19, 16), 16, 3, 3, (1, 1), "SAME", "RELU"),
    "simd-3x3-o36-s2": ((1, 13, 21, 8), 36, 3, 3, (2, 2), "SAME", "RELU6"),
    "simd-5x5-s2-c3-o32": ((1, 19, 23, 3), 32, 5, 5, (2, 2), "SAME", "NONE"),
    "simd-1x1-o32-w12": ((2, 9, 12, 24), 32, 1, 1, (1, 1), "VALID", "NONE"),
    "simd-2x2-s2-valid": ((1, 16, 18, 16), 16, 2, 2, (2, 2), "VALID", "RELU"),
    "simd-dilated-o20": ((1, 12, 17, 5), 20, 3, 3, (1, 1), "SAME", "RELU_N1_TO_1", (2, 3)),
}


@pytest.mark.parametrize("name", CONV_CASES)
def test_conv2d_matches_reference(name):
    model, inputs, ref = conv_case(*CONV_CASES[name])
    check(model, inputs, ref)


def test_conv2d_grouped_runs_direct_loop():
    model, inputs, ref = conv_case((1, 6, 6, 8), 6, 3, 3, groups=2, act="RELU")
    check(model, inputs, ref)


def _scratch_of(model) -> int:
    g = load_model(model)
    ctx = OpContext.of(g.main, g.main.operators[0])
    return registry().lookup(ctx).scratch_bytes(ctx)


def test_conv2d_scratch_is_one_filter_block_at_most():
    # K = 3*3*8 fits the kernel's stack buffer: no scratch; K = 3*3*160 takes one [K, 16] filter block.
    assert _scratch_of(conv_case(*CONV_CASES["tiled-im2col"])[0]) == 0
    model, inputs, ref = conv_case((1, 6, 11, 160), 20, 3, 3, act="RELU")
    assert _scratch_of(model) == 3 * 3 * 160 * 16 * 4
    check(model, inputs, ref)


@pytest.mark.parametrize("name", ["1x1", "3x3-same-c3", "tiled-im2col", "simd-3x3-o36-s2", "simd-1x1-o32-w12"])
@pytest.mark.parametrize("strided", [False, True])
def test_conv2d_call_allocates_nothing(name, strided):
    model, inputs, _ = conv_case(*CONV_CASES[name])
    fn, args, *_ = bind_one(model, inputs, strided=strided)
    assert_no_allocation(fn, args)


def test_conv2d_reads_strided_input():
    # A tensor placed inside a concat output reaches its other consumers as a channel slice.
    model, inputs, ref = conv_case((1, 6, 7, 16), 8, 1, 1, act="RELU")
    wide = np.zeros((1, 6, 7, 20), np.float32)
    wide[..., 3:19] = inputs[0]
    assert_close_float(run_one(model, [wide[..., 3:19]])[0], ref[0])
    model, inputs, ref = conv_case((1, 9, 8, 5), 4, 3, 3, stride=(2, 2))
    wide = np.zeros((1, 9, 8, 9), np.float32)
    wide[..., 1:6] = inputs[0]
    assert_close_float(run_one(model, [wide[..., 1:6]])[0], ref[0])


def test_conv2d_rejects_unsupported_int8_with_reason():
    # int8 input with a nonzero int8 filter zero point: TFLite's kernel ignores it, we refuse it.
    from oneop import build_one_op

    q = quant(0.05, 0)

    model = build_one_op("CONV_2D", [((1, 4, 4, 3), np.int8, q)], [((1, 4, 4, 2), np.int8, q)],
                         dict(padding="SAME", stride_h=1, stride_w=1),
                         consts={1: (np.ones((2, 1, 1, 3), np.int8), quant(0.1, 3)),
                                 2: (np.zeros(2, np.int32), quant(0.005, 0))})
    g = load_model(model)
    ctx = OpContext.of(g.main, g.main.operators[0])
    found = registry().find(ctx)
    assert isinstance(found, str) and "int8 input 0 not supported (float32 kernel)" in found
    assert "nonzero zero point" in found
    with pytest.raises(UnsupportedOpError, match="CONV_2D"):
        registry().lookup(ctx)


# ------------------------------------------------------------------ DEPTHWISE_CONV_2D


def dw_case(in_shape, k, mult=1, stride=(1, 1), padding="SAME", act="NONE", dilation=(1, 1), bias=True):
    n, h, w, c = in_shape
    oh, _ = conv_geometry(padding, h, k[0], stride[0], dilation[0])
    ow, _ = conv_geometry(padding, w, k[1], stride[1], dilation[1])
    options = dict(padding=padding, stride_h=stride[0], stride_w=stride[1], depth_multiplier=mult,
                   fused_activation_function=act, dilation_h_factor=dilation[0], dilation_w_factor=dilation[1])
    consts = {1: _w(1, k[0], k[1], c * mult), 2: _w(c * mult) if bias else None}
    return one_op_case("DEPTHWISE_CONV_2D", [(in_shape, np.float32)], [((n, oh, ow, c * mult), np.float32)],
                       options, consts, version=2)


DW_CASES = {
    "3x3-s1": ((1, 9, 10, 32), (3, 3), 1, (1, 1), "SAME", "RELU6"),
    "3x3-s2-odd-channels": ((2, 11, 9, 5), (3, 3), 1, (2, 2), "SAME", "RELU"),
    "5x5-valid": ((1, 12, 12, 7), (5, 5), 1, (1, 1), "VALID", "NONE"),
    "multiplier-3": ((1, 7, 8, 3), (3, 3), 3, (1, 1), "SAME", "RELU_N1_TO_1"),
    "multiplier-2-stride-2x1": ((1, 8, 9, 4), (3, 2), 2, (2, 1), "VALID", "NONE"),
    "dilated": ((1, 10, 10, 6), (3, 3), 1, (1, 1), "SAME", "RELU6", (2, 2)),
    "1x1-image": ((1, 1, 1, 9), (3, 3), 1, (1, 1), "SAME", "NONE"),
    # SIMD path (multiplier 1, channels a multiple of 8): 16- and 8-channel blocks, pixel tails
    "simd-3x3-c24-w13": ((1, 9, 13, 24), (3, 3), 1, (1, 1), "SAME", "RELU6"),
    "simd-5x5-c8-s2": ((2, 17, 19, 8), (5, 5), 1, (2, 2), "SAME", "NONE"),
    "simd-1x1-c16": ((1, 6, 20, 16), (1, 1), 1, (1, 1), "VALID", "RELU"),
    "simd-dilated-c32": ((1, 11, 12, 32), (3, 3), 1, (1, 1), "SAME", "NONE", (2, 3)),
    "simd-3x2-c16-valid-s2x1": ((1, 10, 11, 16), (3, 2), 1, (2, 1), "VALID", "RELU_N1_TO_1"),
    "simd-rows-3x3-c24-w21": ((1, 5, 21, 24), (3, 3), 1, (1, 1), "SAME", "RELU"),  # 8+8+4+1 pixel blocks
}


@pytest.mark.parametrize("name", DW_CASES)
def test_depthwise_matches_reference(name):
    model, inputs, ref = dw_case(*DW_CASES[name])
    check(model, inputs, ref)


@pytest.mark.parametrize("c", [4, 16])  # 16: the SIMD path
def test_depthwise_without_bias_equals_zero_bias(c):
    # LiteRT refuses an absent float bias, so the oracle runs the same filter with a zero bias.
    from oneop import build_one_op, reference_outputs

    x = _w(1, 6, 10, c)
    filt = _w(1, 3, 3, c)
    options = dict(padding="SAME", stride_h=1, stride_w=1, depth_multiplier=1, fused_activation_function="RELU")
    specs = ([((1, 6, 10, c), np.float32)], [((1, 6, 10, c), np.float32)])
    ref = reference_outputs(build_one_op("DEPTHWISE_CONV_2D", *specs, options, {1: filt, 2: np.zeros(c, np.float32)}), [x])
    ours = run_one(build_one_op("DEPTHWISE_CONV_2D", *specs, options, {1: filt, 2: None}), [x], strided=True)
    assert_close_float(ours[0], ref[0])


def test_depthwise_on_two_threads_matches_reference():
    # prange splits output rows over numba threads; each row is written by exactly one thread.
    from edgert.runtime.threads import set_threads

    model, inputs, ref = dw_case((1, 13, 11, 24), (3, 3), 1, (1, 1), "SAME", "RELU6")
    try:
        ours = run_edgert(model, inputs, threads=2)
    finally:
        set_threads(1)
    assert_close_float(ours[0], ref[0])


@pytest.mark.parametrize("name", ["3x3-s1", "3x3-s2-odd-channels", "simd-5x5-c8-s2"])
def test_depthwise_call_allocates_nothing(name):
    model, inputs, _ = dw_case(*DW_CASES[name])
    fn, args, *_ = bind_one(model, inputs, strided=True)
    assert_no_allocation(fn, args)


# ------------------------------------------------------------------ TRANSPOSE_CONV


def tc_case(in_shape, o, k, stride, out_hw, padding="SAME", bias=True, act=None, version=1):
    n, _, _, c = in_shape
    out_shape = (n, out_hw[0], out_hw[1], o)
    options = dict(padding=padding, stride_h=stride[0], stride_w=stride[1])
    if act is not None:
        options["fused_activation_function"] = act
    consts = {0: np.array(out_shape, np.int32), 1: _w(o, k[0], k[1], c)}
    if bias:
        consts[3] = _w(o)
    return one_op_case("TRANSPOSE_CONV", [(in_shape, np.float32)], [(out_shape, np.float32)], options, consts,
                       version=version)


TC_CASES = {
    "unet-2x2-s2": ((1, 4, 4, 8), 5, (2, 2), (2, 2), (8, 8), "SAME", False),
    "3x3-s2-same": ((1, 5, 4, 3), 4, (3, 3), (2, 2), (10, 8), "SAME", True, None, 3),
    "3x3-s2-valid": ((2, 4, 5, 3), 6, (3, 3), (2, 2), (9, 11), "VALID", True, None, 3),
    "4x3-s1": ((1, 5, 6, 7), 2, (4, 3), (1, 1), (5, 6), "SAME", False),
    "3x3-s2-same-odd-out": ((1, 5, 4, 3), 4, (3, 3), (2, 2), (9, 7), "SAME", True, None, 3),
    "relu-fused": ((1, 4, 4, 6), 3, (3, 3), (2, 2), (8, 8), "SAME", True, "RELU", 4),
    # stride = filter, no padding: one 1x1 conv per tap into a strided view of the output
    "per-tap-2x2-s2-bias-relu6": ((1, 5, 9, 24), 20, (2, 2), (2, 2), (10, 18), "SAME", True, "RELU6", 4),
    "per-tap-3x3-s3-valid": ((2, 3, 4, 5), 7, (3, 3), (3, 3), (9, 12), "VALID", True, None, 3),
}


@pytest.mark.parametrize("name", TC_CASES)
def test_transpose_conv_matches_reference(name):
    model, inputs, ref = tc_case(*TC_CASES[name])
    check(model, inputs, ref)


@pytest.mark.parametrize("name", ["3x3-s2-same", "per-tap-2x2-s2-bias-relu6"])
def test_transpose_conv_call_allocates_nothing(name):
    model, inputs, _ = tc_case(*TC_CASES[name])
    fn, args, *_ = bind_one(model, inputs, strided=True)
    assert_no_allocation(fn, args)


# ------------------------------------------------------------------ FULLY_CONNECTED


def fc_case(in_shape, o, keep_num_dims=False, bias=True, act="NONE", const_weights=True):
    i = in_shape[-1]
    batch = int(np.prod(in_shape)) // i
    out_shape = tuple(in_shape[:-1]) + (o,) if keep_num_dims else (batch, o)
    options = dict(fused_activation_function=act, keep_num_dims=keep_num_dims)
    specs = [(in_shape, np.float32)]
    consts = {2: _w(o) if bias else None}
    if const_weights:
        consts[1] = _w(o, i)
    else:
        specs.append(((o, i), np.float32))
    return one_op_case("FULLY_CONNECTED", specs, [(out_shape, np.float32)], options, consts,
                       version=5 if keep_num_dims else 1)


FC_CASES = {
    "small-direct": ((1, 16), 16, False, True, "RELU"),
    "blas-batch3": ((3, 200), 64, False, True, "RELU6"),
    "no-bias": ((2, 40), 130, False, False, "NONE"),
    "keep-num-dims": ((2, 3, 50), 70, True, True, "NONE"),
    "flatten-4d": ((1, 2, 2, 32), 10, False, True, "RELU_N1_TO_1"),
}


@pytest.mark.parametrize("name", FC_CASES)
def test_fully_connected_matches_reference(name):
    model, inputs, ref = fc_case(*FC_CASES[name])
    check(model, inputs, ref)


def test_fully_connected_weights_as_input():
    model, inputs, ref = fc_case((2, 300), 40, const_weights=False)
    check(model, inputs, ref)


@pytest.mark.parametrize("name", ["small-direct", "blas-batch3"])
def test_fully_connected_call_allocates_nothing(name):
    model, inputs, _ = fc_case(*FC_CASES[name])
    fn, args, *_ = bind_one(model, inputs, strided=True)
    assert_no_allocation(fn, args)


# ------------------------------------------------------------------ BATCH_MATMUL


BMM_CASES = {
    "plain": ((2, 3, 4), (2, 4, 5), False, False),
    "adj-x": ((2, 4, 3), (2, 4, 5), True, False),
    "adj-y": ((3, 4), (5, 4), False, True),
    "adj-both-broadcast": ((2, 1, 4, 3), (3, 5, 4), True, True),
    "broadcast-rhs-2d": ((2, 3, 6, 4), (4, 7), False, False),
}


@pytest.mark.parametrize("name", BMM_CASES)
def test_batch_matmul_matches_reference(name):
    lhs, rhs, adj_x, adj_y = BMM_CASES[name]
    m = lhs[-1] if adj_x else lhs[-2]
    n = rhs[-2] if adj_y else rhs[-1]
    batch = np.broadcast_shapes(lhs[:-2], rhs[:-2])
    model, inputs, ref = one_op_case("BATCH_MATMUL", [(lhs, np.float32), (rhs, np.float32)],
                                     [(tuple(batch) + (m, n), np.float32)], dict(adj_x=adj_x, adj_y=adj_y))
    check(model, inputs, ref)
    fn, args, *_ = bind_one(model, inputs, strided=True)
    assert_no_allocation(fn, args)


def test_batch_matmul_constant_rhs():
    model, inputs, ref = one_op_case("BATCH_MATMUL", [((1, 5, 8), np.float32)], [((1, 5, 3), np.float32)],
                                     dict(adj_x=False, adj_y=False), consts={1: _w(8, 3)})
    check(model, inputs, ref)


# ------------------------------------------------------------------ real models, op by op

CONV_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "FULLY_CONNECTED", "BATCH_MATMUL"}
REAL_MODELS = ["zoo/mobilenet_v2_035_96_float.tflite", "zoo/unet_small_128_float.tflite",
               "zoo/kws_ds_cnn_float.tflite"]


@pytest.mark.parametrize("name", REAL_MODELS)
def test_real_model_conv_ops_match_litert(name):
    checked = check_real_model_ops(shared_model(name), CONV_OPS, registry=registry(), seed=7)
    assert sum(checked.values()) > 0
