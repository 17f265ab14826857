"""RESIZE_BILINEAR / RESIZE_NEAREST_NEIGHBOR (edgert.kernels.resize) against LiteRT's reference kernels."""

from __future__ import annotations

import numpy as np
import pytest

from oneop import (assert_close_float, assert_close_quant, assert_no_allocation, bind_one, build_one_op, quant,
                   reference_outputs, run_one)

f32 = np.float32


def _case(opcode, in_shape, out_hw, dtype, align, half, q=None, seed=0):
    out_shape = (in_shape[0], *out_hw, in_shape[3])
    spec_in = (in_shape, dtype, q) if q else (in_shape, dtype)
    spec_out = (out_shape, dtype, q) if q else (out_shape, dtype)
    model = build_one_op(opcode, [spec_in], [spec_out], {"align_corners": align, "half_pixel_centers": half},
                         consts={1: np.asarray(out_hw, np.int32)}, version=3 if dtype == np.int16 else 1)
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        x = rng.standard_normal(in_shape).astype(dtype)
    else:
        info = np.iinfo(dtype)
        x = rng.integers(info.min, info.max + 1, in_shape).astype(dtype)
    return model, x, reference_outputs(model, [x])[0]


FLAGS = [(False, False), (True, False), (False, True)]
SIZES = [((1, 5, 7, 3), (10, 14)), ((2, 8, 6, 5), (3, 4)), ((1, 3, 3, 1), (7, 5)), ((1, 1, 1, 2), (3, 1)),
         # float32 vector path: 16 + 8 + 3 channels, and two full 16-channel blocks
         ((1, 4, 5, 27), (9, 10)), ((2, 3, 4, 32), (6, 8))]


@pytest.mark.parametrize("align,half", FLAGS)
@pytest.mark.parametrize("in_shape,out_hw", SIZES)
def test_bilinear_float(in_shape, out_hw, align, half):
    model, x, ref = _case("RESIZE_BILINEAR", in_shape, out_hw, f32, align, half)
    assert_close_float(run_one(model, [x])[0], ref)


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
@pytest.mark.parametrize("align,half", FLAGS)
def test_bilinear_quantized(dtype, align, half):
    q = quant(0.05, 3 if dtype == np.int8 else 128)
    model, x, ref = _case("RESIZE_BILINEAR", (1, 6, 5, 4), (13, 9), dtype, align, half, q)
    assert_close_quant(run_one(model, [x])[0], ref, max_off_by_one_fraction=0.0)


@pytest.mark.parametrize("align,half", FLAGS)
@pytest.mark.parametrize("in_shape,out_hw", SIZES)
def test_nearest_float(in_shape, out_hw, align, half):
    model, x, ref = _case("RESIZE_NEAREST_NEIGHBOR", in_shape, out_hw, f32, align, half)
    np.testing.assert_array_equal(run_one(model, [x])[0], ref)


def test_nearest_int8():
    q = quant(0.1, -2)
    model, x, ref = _case("RESIZE_NEAREST_NEIGHBOR", (1, 4, 6, 3), (8, 9), np.int8, False, True, q)
    np.testing.assert_array_equal(run_one(model, [x])[0], ref)


@pytest.mark.parametrize("c", [3, 24])
def test_bilinear_into_strided_output(c):
    model, x, ref = _case("RESIZE_BILINEAR", (1, 4, 4, c), (8, 8), f32, False, True)
    big = np.zeros((1, 8, 8, c + 4), f32)
    run_one(model, [x], outs=[big[..., 2:c + 2]])
    assert_close_float(big[..., 2:c + 2], ref)
    assert not big[..., :2].any() and not big[..., c + 2:].any()


def test_fn_allocates_nothing():
    model, x, _ref = _case("RESIZE_BILINEAR", (1, 6, 6, 8), (12, 12), f32, False, True)
    fn, args, *_ = bind_one(model, [x], outs=[np.empty((1, 12, 12, 8), f32)])
    # the numba dispatcher makes ~50 bytes of transient objects per argument
    assert_no_allocation(fn, args, limit=1024, calls=20)
