"""Reduction kernels (edgert.kernels.reduce) against LiteRT's reference kernels on one-op models."""

from __future__ import annotations

import numpy as np
import pytest

from oneop import (assert_close_float, assert_no_allocation, bind_in_place, bind_one, build_one_op, family_registry,
                   reference_outputs, run_one, strided_like)
from edgert.errors import UnsupportedOpError
from edgert.kernels import reduce as reduce_kernels
from edgert.kernels.registry import OpContext
from edgert.model.reader import load_model

f32 = np.float32
REGISTRY = family_registry(reduce_kernels)


def run_kernel(model: bytes, inputs: list[np.ndarray], **kw) -> list[np.ndarray]:
    return run_one(model, inputs, registry=REGISTRY, **kw)


def _reduced(shape, axes, keep):
    axes = {a % len(shape) for a in axes}
    if keep:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def reduce_model(opcode, shape, axes, keep, axis_dtype=np.int32):
    out = _reduced(shape, axes, keep)
    return build_one_op(opcode, [(shape, f32)], [(out, f32)], {"keep_dims": keep},
                        consts={1: np.asarray(axes, axis_dtype)})


def check_reduce(opcode, shape, axes, keep, x=None, seed=0):
    model = reduce_model(opcode, shape, axes, keep)
    if x is None:
        x = np.random.default_rng(seed).standard_normal(shape).astype(f32)
    ref = reference_outputs(model, [x])[0]
    ours = run_kernel(model, [x])[0]
    assert_close_float(ours, ref)
    return model, x, ref


CASES = [
    ((1, 7, 7, 96), [1, 2], True),  # global average pool (MobileNet v3 squeeze-excite)
    ((1, 7, 7, 96), [1, 2], False),
    ((2, 5, 6, 3), [-3, -2], True),  # negative axes
    ((2, 5, 6, 3), [3], False),  # innermost axis: scalar fold per row
    ((2, 5, 6, 3), [0, 2], True),  # interleaved kept/reduced dims
    ((2, 5, 6, 3), [0, 1, 2, 3], False),  # everything
    ((4, 9), [0], True),
    ((3, 2, 4, 2, 5), [1, 3, -1], False),  # 5-D
    ((5, 3), [1, 1, -1], False),  # repeated axes count once
]


@pytest.mark.parametrize("shape,axes,keep", CASES)
@pytest.mark.parametrize("opcode", ["MEAN", "SUM", "REDUCE_MAX"])
def test_reductions(opcode, shape, axes, keep):
    check_reduce(opcode, shape, axes, keep)


@pytest.mark.parametrize("shape,axes,keep", CASES[2:6])
def test_reduce_min(shape, axes, keep):
    check_reduce("REDUCE_MIN", shape, axes, keep)


@pytest.mark.parametrize("shape,axes,keep", [((2, 5, 6, 3), [1, 2], False), ((3, 4), [1], True)])
def test_reduce_prod(shape, axes, keep):
    x = np.random.default_rng(1).uniform(0.5, 1.6, shape).astype(f32)
    check_reduce("REDUCE_PROD", shape, axes, keep, x=x)


def test_int64_axis_refused_and_empty_axis_list_copies():
    model = reduce_model("MEAN", (2, 3, 4), [2, 0], False, axis_dtype=np.int64)
    sg = load_model(model).main
    assert "axis dtype int64" in REGISTRY.find(OpContext.of(sg, sg.operators[0]))  # as LiteRT's Prepare
    model = build_one_op("SUM", [((2, 3), f32)], [((2, 3), f32)], {"keep_dims": False},
                         consts={1: np.zeros((0,), np.int32)})
    x = np.random.default_rng(3).standard_normal((2, 3)).astype(f32)
    # the empty axis list has no buffer data, so it is bound as a non-constant input
    assert_close_float(run_kernel(model, [x, np.zeros((0,), np.int32)])[0], reference_outputs(model, [x])[0])


def test_mean_strided_output():
    model = reduce_model("MEAN", (1, 5, 5, 6), [1, 2], True)
    x = np.random.default_rng(4).standard_normal((1, 5, 5, 6)).astype(f32)
    ref = reference_outputs(model, [x])[0]
    big, view = strided_like((1, 1, 1, 6), fill=777.0)
    run_kernel(model, [x], outs=[view])
    assert_close_float(view, ref)
    assert np.all(big[..., :2] == 777.0) and np.all(big[..., 8:] == 777.0)


def test_sum_strided_input():
    model = reduce_model("SUM", (2, 4, 3), [1], False)
    wide = np.random.default_rng(5).standard_normal((2, 4, 8)).astype(f32)
    x = wide[:, :, 2:5]
    ref = reference_outputs(model, [np.ascontiguousarray(x)])[0]
    assert_close_float(run_kernel(model, [x])[0], ref)


def test_reduce_refuses_dynamic_axes():
    model = build_one_op("MEAN", [((2, 3), f32), ((1,), np.int32)], [((2,), f32)], {"keep_dims": False})
    sg = load_model(model).main
    with pytest.raises(UnsupportedOpError, match="axis input is not a constant"):
        REGISTRY.lookup(OpContext.of(sg, sg.operators[0]))


# ---------------------------------------------------------------------------------------------
# SOFTMAX / LOG_SOFTMAX


@pytest.mark.parametrize("shape", [(1, 10), (1, 1001), (2, 3, 4, 7), (5,)])
@pytest.mark.parametrize("beta", [1.0, 0.5, 2.7])
def test_softmax(shape, beta):
    model = build_one_op("SOFTMAX", [(shape, f32)], [(shape, f32)], {"beta": beta})
    x = (np.random.default_rng(6).standard_normal(shape) * 6).astype(f32)
    assert_close_float(run_kernel(model, [x])[0], reference_outputs(model, [x])[0])


@pytest.mark.parametrize("shape", [(1, 10), (3, 4, 17)])
def test_log_softmax(shape):
    model = build_one_op("LOG_SOFTMAX", [(shape, f32)], [(shape, f32)])
    x = (np.random.default_rng(7).standard_normal(shape) * 6).astype(f32)
    assert_close_float(run_kernel(model, [x])[0], reference_outputs(model, [x])[0])


@pytest.mark.parametrize("depth", [9, 40])  # libm rows, and the contiguous expf_fast kernel
@pytest.mark.parametrize("opcode", ["SOFTMAX", "LOG_SOFTMAX"])
def test_softmax_in_place_and_strided(opcode, depth):
    shape = (2, 6, depth)
    model = build_one_op(opcode, [(shape, f32)], [(shape, f32)], {"beta": 1.0} if opcode == "SOFTMAX" else None)
    x = (np.random.default_rng(8).standard_normal(shape) * 3).astype(f32)
    ref = reference_outputs(model, [x])[0]
    fn, args, outs, *_ = bind_in_place(model, [x.copy()], 0, registry=REGISTRY)
    fn(*args)
    assert_close_float(outs[0], ref)
    big, view = strided_like(shape, fill=777.0)
    run_kernel(model, [x], outs=[view])
    assert_close_float(view, ref)
    assert np.all(big[..., :2] == 777.0) and np.all(big[..., 2 + depth:] == 777.0)


def test_softmax_extreme_logits():
    shape = (3, 64)  # contiguous rows: the expf_fast kernel; exps underflow to subnormals and 0
    model = build_one_op("SOFTMAX", [(shape, f32)], [(shape, f32)], {"beta": 1.0})
    x = (np.random.default_rng(9).standard_normal(shape) * 60).astype(f32)
    x[1] = 0.0
    x[2, :5] = [1e30, -1e30, 3e38, -3e38, 88.0]
    assert_close_float(run_kernel(model, [x])[0], reference_outputs(model, [x])[0])


# ---------------------------------------------------------------------------------------------
# ARG_MAX / ARG_MIN


@pytest.mark.parametrize("opcode", ["ARG_MAX", "ARG_MIN"])
@pytest.mark.parametrize("shape,axis,out_type", [((1, 10), 1, np.int32), ((2, 5, 7), -2, np.int64),
                                                 ((4, 3, 6), 0, np.int32)])
def test_arg_min_max(opcode, shape, axis, out_type):
    out_shape = _reduced(shape, [axis], False)
    tname = "INT32" if out_type == np.int32 else "INT64"
    model = build_one_op(opcode, [(shape, f32)], [(out_shape, out_type)], {"output_type": tname},
                         consts={1: np.array([axis], np.int32)})
    x = np.random.default_rng(9).standard_normal(shape).astype(f32)
    x.reshape(-1)[:3] = x.reshape(-1)[3]  # ties: the first index wins
    ours = run_kernel(model, [x])[0]
    ref = reference_outputs(model, [x])[0]
    assert ours.dtype == ref.dtype
    np.testing.assert_array_equal(ours, ref)


def test_global_average_pool_allocates_nothing():
    model = reduce_model("MEAN", (1, 14, 14, 96), [1, 2], True)
    fn, args, *_ = bind_one(model, [np.ones((1, 14, 14, 96), f32)], registry=REGISTRY)
    assert_no_allocation(fn, args, limit=1024, calls=5)
