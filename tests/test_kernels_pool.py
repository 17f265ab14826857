"""AVERAGE_POOL_2D, MAX_POOL_2D, L2_POOL_2D float32 kernels vs LiteRT BUILTIN_REF."""

from __future__ import annotations

import numpy as np
import pytest

from edgert.kernels.conv import conv_geometry
from edgert.kernels.registry import OpContext
from edgert.model.reader import load_model
from oneop import assert_no_allocation, bind_one, build_one_op, check_real_model_ops, one_op_case, quant, shared_model
from test_kernels_conv import check, registry


def pool_case(opcode, in_shape, k, stride, padding="SAME", act="NONE", seed=0):
    n, h, w, c = in_shape
    oh, _ = conv_geometry(padding, h, k[0], stride[0])
    ow, _ = conv_geometry(padding, w, k[1], stride[1])
    options = dict(padding=padding, stride_h=stride[0], stride_w=stride[1], filter_height=k[0],
                   filter_width=k[1], fused_activation_function=act)
    return one_op_case(opcode, [(in_shape, np.float32)], [((n, oh, ow, c), np.float32)], options, seed=seed)


CASES = {
    "2x2-s2-valid": ((1, 8, 8, 16), (2, 2), (2, 2), "VALID", "NONE"),
    "3x3-s2-same-odd": ((2, 9, 7, 5), (3, 3), (2, 2), "SAME", "RELU"),
    "3x3-s1-same": ((1, 6, 5, 3), (3, 3), (1, 1), "SAME", "RELU6"),
    "global-7x7": ((1, 7, 7, 33), (7, 7), (1, 1), "VALID", "NONE"),
    "3x2-s1x2-same": ((1, 5, 9, 4), (3, 2), (1, 2), "SAME", "RELU_N1_TO_1"),
    "window-larger-than-image": ((1, 2, 3, 6), (4, 4), (1, 1), "SAME", "NONE"),
    # float vector path: 16 + 8 channel blocks; 8 + 5 scalar tail
    "vec-3x3-s2-same-c24": ((1, 9, 11, 24), (3, 3), (2, 2), "SAME", "RELU6"),
    "vec-2x2-s2-c13": ((2, 6, 7, 13), (2, 2), (2, 2), "VALID", "NONE"),
}


@pytest.mark.parametrize("opcode", ["AVERAGE_POOL_2D", "MAX_POOL_2D", "L2_POOL_2D"])
@pytest.mark.parametrize("name", CASES)
def test_pool_matches_reference(opcode, name):
    in_shape, k, stride, padding, act = CASES[name]
    if opcode == "L2_POOL_2D" and act not in ("NONE", "RELU"):
        act = "RELU"  # keep the L2 cases few: its output is never negative, so clamps barely matter
    model, inputs, ref = pool_case(opcode, in_shape, k, stride, padding, act)
    check(model, inputs, ref)


@pytest.mark.parametrize("opcode", ["AVERAGE_POOL_2D", "MAX_POOL_2D"])
def test_pool_call_allocates_nothing(opcode):
    model, inputs, _ = pool_case(opcode, (1, 9, 9, 8), (3, 3), (2, 2), "SAME", "RELU6")
    fn, args, *_ = bind_one(model, inputs, strided=True)
    assert_no_allocation(fn, args)


def test_max_pool_all_negative_window_is_not_zero():
    # The max starts from the lowest float, not 0: an all-negative window keeps its maximum.
    model = build_one_op("MAX_POOL_2D", [((1, 4, 4, 2), np.float32)], [((1, 2, 2, 2), np.float32)],
                         dict(padding="VALID", stride_h=2, stride_w=2, filter_height=2, filter_width=2))
    x = -np.arange(1, 33, dtype=np.float32).reshape(1, 4, 4, 2)
    fn, args, outs, *_ = bind_one(model, [x])
    fn(*args)
    assert np.all(outs[0] < 0)
    assert outs[0][0, 0, 0, 0] == -1.0


def test_pool_rejects_int8_with_differing_output_quantization():
    # TFLite requires pooling's input and output quantization to be equal; we say so instead of guessing.
    model = build_one_op("AVERAGE_POOL_2D", [((1, 4, 4, 2), np.int8, quant(0.1, 0))],
                         [((1, 2, 2, 2), np.int8, quant(0.2, 1))],
                         dict(padding="VALID", stride_h=2, stride_w=2, filter_height=2, filter_width=2))
    g = load_model(model)
    found = registry().find(OpContext.of(g.main, g.main.operators[0]))
    assert isinstance(found, str) and "int8 input 0 not supported (float32 kernel)" in found
    assert "quantization differ" in found


@pytest.mark.parametrize("name", ["zoo/unet_small_128_float.tflite", "zoo/vww_mobilenet_v1_025_float.tflite",
                                  "zoo/ic_resnet8_float.tflite"])
def test_real_model_pool_ops_match_litert(name):
    checked = check_real_model_ops(shared_model(name), {"AVERAGE_POOL_2D", "MAX_POOL_2D", "L2_POOL_2D"},
                                   registry=registry(), seed=7)
    assert sum(checked.values()) > 0
