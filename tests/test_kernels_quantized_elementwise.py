"""int8/uint8 elementwise and reduction kernels against LiteRT on one-op models.

Rule that holds everywhere below: our outputs EQUAL LiteRT BUILTIN_REF's bit for bit (no
off-by-one allowance is used). One exception, documented in test_sum_int8_matches_builtin: LiteRT
2.3's reference SUM reads int8 input bytes as uint8, so int8 SUM is checked against LiteRT's
optimized builtin kernel (and the reference_ops source), which it equals.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from oneop import (assert_no_allocation, bind_in_place, bind_one, build_one_op, family_registry, quant, random_inputs,
                   reference_outputs, run_edgert, run_one, strided_like)
from edgert.kernels import elementwise, reduce as reduce_kernels
from edgert.kernels.registry import OpContext
from edgert.model.reader import load_model
from edgert.reference import run_reference

i8, u8 = np.int8, np.uint8
DATA = Path(__file__).resolve().parent / "data"
REGISTRY = family_registry(elementwise, reduce_kernels)


def run_kernel(model: bytes, inputs: list[np.ndarray], **kw) -> np.ndarray:
    return run_one(model, inputs, registry=REGISTRY, **kw)[0]


def _ctx(model: bytes) -> OpContext:
    sg = load_model(model).main
    return OpContext.of(sg, sg.operators[0])


# Asymmetric zero points per dtype: (input 1, input 2, output)
ZPS = {i8: (3, -7, -2), u8: (131, 100, 120)}


def binary_model(opcode, dt, sa, sb, act="NONE", scales=(0.05, 0.031, None), zps=None):
    za, zb, zo = zps or ZPS[dt]
    so = scales[2] if scales[2] is not None else (0.3 if opcode == "MUL" else 0.07)
    out_shape = np.broadcast_shapes(sa, sb)
    return build_one_op(opcode, [(sa, dt, quant(scales[0], za)), (sb, dt, quant(scales[1], zb))],
                        [(out_shape, dt, quant(so, zo))], {"fused_activation_function": act}, version=2)


def check_equal(model: bytes, inputs: list[np.ndarray], **kw) -> np.ndarray:
    ref = reference_outputs(model, inputs)[0]
    ours = run_kernel(model, inputs, **kw)
    np.testing.assert_array_equal(ours, ref)
    return ref


# ---------------------------------------------------------------------------------------------
# ADD / SUB / MUL

BROADCASTS = [
    ((1, 8, 8, 24), (1, 8, 8, 24)),  # residual add: one flat row
    ((1, 7, 5, 24), (1, 1, 1, 24)),  # squeeze-excite scale: short row repeated into scratch
    ((1, 1, 1, 24), (1, 7, 5, 24)),  # the repeated row on the left
    ((1, 7, 5, 3), (1, 7, 5, 1)),  # per-pixel: inner stride 0
    ((2, 1, 4, 1), (1, 3, 1, 5)),  # both broadcast
    ((3, 5), (5,)),  # ranks differ
]


@pytest.mark.parametrize("sa,sb", BROADCASTS)
@pytest.mark.parametrize("dt", [i8, u8])
@pytest.mark.parametrize("opcode", ["ADD", "SUB", "MUL"])
def test_binary_broadcasting_equals_reference(opcode, dt, sa, sb):
    model = binary_model(opcode, dt, sa, sb)
    check_equal(model, random_inputs([(sa, dt), (sb, dt)], seed=1))


@pytest.mark.parametrize("act", ["RELU", "RELU6", "RELU_N1_TO_1", "TANH"])
@pytest.mark.parametrize("opcode", ["ADD", "SUB", "MUL"])
def test_fused_activations(opcode, act):
    # output scale small enough that RELU6 / RELU_N1_TO_1 clamp inside the int8 range
    model = binary_model(opcode, i8, (2, 3, 4, 5), (1, 3, 1, 5), act, scales=(0.05, 0.031, 0.02))
    ref = check_equal(model, random_inputs([((2, 3, 4, 5), i8), ((1, 3, 1, 5), i8)], seed=2))
    if act == "RELU":
        assert ref.min() >= ZPS[i8][2]


@pytest.mark.parametrize("opcode", ["ADD", "MUL"])
@pytest.mark.parametrize("dt", [i8, u8])
def test_saturation_and_extreme_parameters(opcode, dt):
    lo, hi = np.iinfo(dt).min, np.iinfo(dt).max
    shape = (1, 4, 4, 8)
    # input scales 100x apart, a tight output scale; ADD: zero points at the ends of the range,
    # MUL: mid-range so products take both signs
    mid = 0 if dt == i8 else 128
    zps = (lo, hi, mid) if opcode == "ADD" else (mid, mid - 1, mid)
    model = binary_model(opcode, dt, shape, shape, scales=(0.5, 0.005, 0.01), zps=zps)
    x = random_inputs([(shape, dt), (shape, dt)], seed=3)
    x[0].reshape(-1)[:8] = [lo, hi, lo, hi, lo, hi, 0, 1]
    x[1].reshape(-1)[:8] = [lo, hi, hi, lo, 0, 0, lo, hi]
    ref = check_equal(model, x)
    assert ref.min() == lo and ref.max() == hi  # both ends saturate


def test_constant_operand_read_only():
    const = (random_inputs([((1, 1, 1, 16), i8)], seed=4)[0], quant(0.02, 5))
    model = build_one_op("MUL", [((1, 6, 6, 16), i8, quant(0.05, -3))], [((1, 6, 6, 16), i8, quant(0.04, 1))],
                         {"fused_activation_function": "NONE"}, consts={1: const}, version=2)
    check_equal(model, random_inputs([((1, 6, 6, 16), i8)], seed=5))


@pytest.mark.parametrize("position", [0, 1])
@pytest.mark.parametrize("opcode", ["ADD", "SUB", "MUL"])
def test_in_place(opcode, position):
    sa, sb = ((1, 6, 6, 8), (1, 6, 6, 8)) if position == 0 else ((1, 1, 1, 8), (1, 6, 6, 8))
    model = binary_model(opcode, i8, sa, sb, "RELU")
    inputs = random_inputs([(sa, i8), (sb, i8)], seed=6)
    ref = reference_outputs(model, inputs)[0]
    ins = [x.copy() for x in inputs]
    fn, args, outs, *_ = bind_in_place(model, ins, position, registry=REGISTRY)
    assert outs[0] is ins[position]
    fn(*args)
    np.testing.assert_array_equal(outs[0], ref)


@pytest.mark.parametrize("sb", [(1, 5, 6, 7), (1, 1, 1, 7)])
def test_strided_output(sb):
    sa = (1, 5, 6, 7)
    model = binary_model("ADD", i8, sa, sb, "RELU6", scales=(0.05, 0.031, 0.02))
    inputs = random_inputs([(sa, i8), (sb, i8)], seed=7)
    ref = reference_outputs(model, inputs)[0]
    big, view = strided_like(sa, i8, fill=99)
    assert not view.flags.c_contiguous
    run_kernel(model, inputs, outs=[view])
    np.testing.assert_array_equal(view, ref)
    assert np.all(big[..., :2] == 99) and np.all(big[..., 9:] == 99)


def _all_pairs(dt) -> list[np.ndarray]:
    """Every (x, y) pair of 8-bit codes, as two (256, 256) inputs."""
    info = np.iinfo(dt)
    codes = np.arange(info.min, info.max + 1).astype(dt)
    return [np.repeat(codes, 256).reshape(256, 256), np.tile(codes, 256).reshape(256, 256)]


@pytest.mark.parametrize("dt", [i8, u8])
@pytest.mark.parametrize("opcode", ["ADD", "SUB", "MUL"])
def test_every_input_pair_equals_reference(opcode, dt):
    """The vectorized int32 arithmetic (split input multipliers, nudge-free SRDHM, add-and-shift
    rounding) on all 65536 input pairs, for random scales, zero points and activations."""
    rng = np.random.default_rng(30 + (opcode == "SUB") + 2 * (opcode == "MUL") + 3 * (dt == u8))
    info = np.iinfo(dt)
    checked = 0
    for _ in range(6):
        sa, sb = (float(v) for v in 10.0 ** rng.uniform(-3, 0, 2))
        so = sa * sb * 10.0 ** rng.uniform(-1.5, 1.5) if opcode == "MUL" else max(sa, sb) * 10.0 ** rng.uniform(-0.5, 1)
        zps = tuple(int(z) for z in rng.integers(info.min, info.max + 1, 3))
        act = str(rng.choice(["NONE", "RELU", "RELU6"]))
        model = binary_model(opcode, dt, (256, 256), (256, 256), act, scales=(sa, sb, so), zps=zps)
        check_equal(model, _all_pairs(dt))
        checked += 1
    assert checked == 6


@pytest.mark.parametrize("position", [0, 1])
@pytest.mark.parametrize("opcode", ["ADD", "MUL"])
def test_in_place_long_rows_every_pair(opcode, position):
    """In place over a long contiguous row (the residual add of ResNet/MobileNet v2: o is a's or b's memory)."""
    model = binary_model(opcode, i8, (256, 256), (256, 256), "RELU", scales=(0.05, 0.031, 0.02 if opcode == "MUL" else 0.07))
    inputs = _all_pairs(i8)
    ref = reference_outputs(model, inputs)[0]
    ins = [x.copy() for x in inputs]
    fn, args, outs, *_ = bind_in_place(model, ins, position, registry=REGISTRY)
    fn(*args)
    np.testing.assert_array_equal(outs[0], ref)


@pytest.mark.parametrize("position", [0, 1])
def test_in_place_with_repeated_row(position):
    """In place on the operand that is not the short broadcast row (the chunked row path)."""
    sa, sb = ((1, 20, 30, 24), (1, 1, 1, 24)) if position == 0 else ((1, 1, 1, 24), (1, 20, 30, 24))
    model = binary_model("MUL", i8, sa, sb, "NONE")
    inputs = random_inputs([(sa, i8), (sb, i8)], seed=18)
    ref = reference_outputs(model, inputs)[0]
    ins = [x.copy() for x in inputs]
    fn, args, outs, *_ = bind_in_place(model, ins, position, registry=REGISTRY)
    assert (args[-2], args[-1]) == (position + 1, position + 1)  # row path (the row is the other operand), in place
    fn(*args)
    np.testing.assert_array_equal(outs[0], ref)


@pytest.mark.parametrize("opcode", ["MAXIMUM", "MINIMUM"])
@pytest.mark.parametrize("dt", [i8, u8])
def test_maximum_minimum(opcode, dt):
    q = quant(0.05, ZPS[dt][0])
    model = build_one_op(opcode, [((2, 5, 7), dt, q), ((5, 1), dt, q)], [((2, 5, 7), dt, q)], version=2)
    check_equal(model, random_inputs([((2, 5, 7), dt), ((5, 1), dt)], seed=8))


def test_binary_step_allocates_nothing():
    shape = (1, 14, 14, 48)
    for model, specs in [(binary_model("ADD", i8, shape, shape), [shape, shape]),
                         (binary_model("MUL", i8, shape, (1, 1, 1, 48)), [shape, (1, 1, 1, 48)])]:
        fn, args, *_ = bind_one(model, [np.ones(s, i8) for s in specs], registry=REGISTRY)
        assert_no_allocation(fn, args, limit=1024, calls=5)


def test_refuses_what_tflite_refuses():
    # ADD's output multiplier must be < 1 (QuantizeMultiplierSmallerThanOneExp)
    model = binary_model("ADD", i8, (1, 4), (1, 4), scales=(1.0, 1.0, 1e-7))
    assert "too small" in REGISTRY.find(_ctx(model))
    model = build_one_op("ADD", [((1, 4), i8, quant([0.1, 0.2, 0.3, 0.4], 0, axis=1)), ((1, 4), i8, quant(0.1, 0))],
                         [((1, 4), i8, quant(0.1, 0))], version=2)
    assert "per-channel" in REGISTRY.find(_ctx(model))
    model = build_one_op("ADD", [((1, 4), i8, quant(0.1, 0)), ((1, 4), u8, quant(0.1, 0))],
                         [((1, 4), i8, quant(0.1, 0))], version=2)
    assert "mixed dtypes" in REGISTRY.find(_ctx(model))


# ---------------------------------------------------------------------------------------------
# MEAN / SUM / REDUCE_MAX / REDUCE_MIN


def _reduced(shape, axes, keep):
    axes = {a % len(shape) for a in axes}
    if keep:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def reduce_model(opcode, dt, shape, axes, keep, qx, qo):
    return build_one_op(opcode, [(shape, dt, qx)], [(_reduced(shape, axes, keep), dt, qo)], {"keep_dims": keep},
                        consts={1: np.asarray(axes, np.int32)}, version=2)


REDUCE_CASES = [
    ((1, 7, 7, 96), [1, 2], True),  # global average pool (MobileNet v3 squeeze-excite)
    ((1, 56, 56, 16), [2, 1], False),
    ((2, 5, 6, 3), [0, 3], False),  # outer and inner axes
    ((4, 9), [-1], True),
    ((3, 4, 5), [0, 1, 2], False),  # everything
]


@pytest.mark.parametrize("shape,axes,keep", REDUCE_CASES)
@pytest.mark.parametrize("dt", [i8, u8])
def test_mean_equals_reference(dt, shape, axes, keep):
    zx, _, zo = ZPS[dt]
    model = reduce_model("MEAN", dt, shape, axes, keep, quant(0.05, zx), quant(0.02, zo))
    check_equal(model, random_inputs([(shape, dt)], seed=9))


def test_mean_saturates_and_same_scale():
    shape = (1, 5, 5, 8)
    model = reduce_model("MEAN", i8, shape, [1, 2], True, quant(0.1, -128), quant(0.01, 0))
    ref = check_equal(model, random_inputs([(shape, i8)], seed=10))
    assert ref.max() == 127
    model = reduce_model("MEAN", i8, shape, [1, 2], True, quant(0.1, 4), quant(0.1, 4))
    check_equal(model, random_inputs([(shape, i8)], seed=11))


@pytest.mark.parametrize("shape,axes,keep", REDUCE_CASES[2:])
def test_sum_uint8_equals_reference(shape, axes, keep):
    model = reduce_model("SUM", u8, shape, axes, keep, quant(0.05, 131), quant(3.0, 120))
    check_equal(model, random_inputs([(shape, u8)], seed=12))


def test_sum_int8_matches_builtin():
    """LiteRT 2.3's BUILTIN_REF SUM reads int8 bytes as uint8 (all -1 inputs sum as 255 each); its
    optimized kernel and reference_ops::QuantizedMeanOrSum do not. We follow the latter."""
    model = reduce_model("SUM", i8, (4, 9), [-1], False, quant(0.05, 0), quant(3.0, 0))
    minus_one = np.full((4, 9), -1, i8)
    assert reference_outputs(model, [minus_one])[0].tolist() == [38] * 4  # 9 * 255 * 0.05 / 3 = 38.25
    assert run_kernel(model, [minus_one]).tolist() == [0] * 4  # -0.15 rounds to 0
    for shape, axes, keep in REDUCE_CASES[2:]:
        model = reduce_model("SUM", i8, shape, axes, keep, quant(0.05, -5), quant(3.0, 7))
        x = random_inputs([(shape, i8)], seed=13)
        np.testing.assert_array_equal(run_kernel(model, x), run_reference(model, x, kernels="builtin")[0])


@pytest.mark.parametrize("opcode", ["REDUCE_MAX", "REDUCE_MIN"])
@pytest.mark.parametrize("dt", [i8, u8])
def test_reduce_max_min(opcode, dt):
    q = quant(0.05, ZPS[dt][0])
    for shape, axes, keep in REDUCE_CASES[:3]:
        check_equal(reduce_model(opcode, dt, shape, axes, keep, q, q), random_inputs([(shape, dt)], seed=14))


def test_reduce_max_refuses_requantizing():
    model = reduce_model("REDUCE_MAX", i8, (2, 3), [1], False, quant(0.05, 0), quant(0.1, 0))
    assert "quantization differ" in REGISTRY.find(_ctx(model))


def test_mean_strided_output_and_no_allocation():
    shape = (1, 7, 7, 12)
    model = reduce_model("MEAN", i8, shape, [1, 2], True, quant(0.05, 3), quant(0.02, -2))
    x = random_inputs([(shape, i8)], seed=15)
    ref = reference_outputs(model, x)[0]
    big, view = strided_like((1, 1, 1, 12), i8, fill=99)
    fn, args, *_ = bind_one(model, x, registry=REGISTRY, outs=[view])
    fn(*args)
    np.testing.assert_array_equal(view, ref)
    assert np.all(big[..., :2] == 99) and np.all(big[..., 14:] == 99)
    assert_no_allocation(fn, args, limit=1024, calls=5)


# ---------------------------------------------------------------------------------------------
# Through the executor: planner in-place aliasing, a real model


def test_executor_runs_quantized_add_chain_in_place():
    from edgert.model.builder import ModelBuilder

    b = ModelBuilder(description="int8 add chain")
    q = quant(0.05, -3)
    x = b.input("x", (1, 6, 6, 8), i8, q)
    y = b.input("y", (1, 1, 1, 8), i8, quant(0.02, 4))
    t = b.tensor("t", (1, 6, 6, 8), i8, quant(0.06, 1))
    u = b.tensor("u", (1, 6, 6, 8), i8, quant(0.1, -5))
    b.op("MUL", [x, y], [t], options={"fused_activation_function": "NONE"}, version=2)
    b.op("ADD", [t, x], [u], options={"fused_activation_function": "RELU"}, version=2)
    b.output(u)
    model = b.build()
    inputs = random_inputs([((1, 6, 6, 8), i8), ((1, 1, 1, 8), i8)], seed=16)
    np.testing.assert_array_equal(run_edgert(model, inputs)[0], reference_outputs(model, inputs)[0])


def test_resnet8_int8_equals_reference():
    path = DATA / "ic_resnet8_int8.tflite"
    if not path.exists():
        pytest.skip("tests/data/ic_resnet8_int8.tflite absent")
    model = path.read_bytes()
    graph = load_model(model)
    specs = [(graph.main.tensors[i].shape, graph.main.tensors[i].dtype) for i in graph.main.inputs]
    inputs = random_inputs(specs, seed=17)
    np.testing.assert_array_equal(run_edgert(model, inputs)[0], reference_outputs(model, inputs)[0])
