"""Elementwise kernels (edgert.kernels.elementwise) against LiteRT's reference kernels on one-op models."""

from __future__ import annotations

import numpy as np
import pytest

from oneop import (assert_close_float, assert_no_allocation, bind_in_place, bind_one, build_one_op, family_registry,
                   quant, reference_outputs, run_one, strided_like)
from edgert.errors import UnsupportedOpError
from edgert.kernels import elementwise
from edgert.kernels.activations import RELU6, TANH, activation_code, activation_range, apply_activation, clamp_code
from edgert.kernels.registry import OpContext
from edgert.model.reader import load_model
from edgert.reference import run_reference

f32 = np.float32
REGISTRY = family_registry(elementwise)


def run_kernel(model: bytes, inputs: list[np.ndarray], **kw) -> list[np.ndarray]:
    return run_one(model, inputs, registry=REGISTRY, **kw)


# Ops the LiteRT wheel registers only among its optimized builtin kernels, not BUILTIN_REF.
NOT_IN_REF = {"CEIL", "ROUND", "ELU"}


def check(opcode, input_specs, out_shape, options=None, consts=None, inputs=None, seed=0, out_dtype=f32):
    model = build_one_op(opcode, input_specs, [(out_shape, out_dtype)], options, consts)
    if inputs is None:
        rng = np.random.default_rng(seed)
        inputs = [(rng.standard_normal(s[0]) * 3).astype(s[1]) for s in input_specs]
    if opcode in NOT_IN_REF:
        ref = run_reference(model, inputs, kernels="builtin")
    else:
        ref = reference_outputs(model, inputs)
    ours = run_kernel(model, inputs)
    if out_dtype == f32:
        assert_close_float(ours[0], ref[0])
    else:
        np.testing.assert_array_equal(ours[0], ref[0])
    return model, inputs, ref


# ---------------------------------------------------------------------------------------------
# activations.py


def test_activation_helpers_follow_tflite_ranges():
    assert activation_code(None) == 0 and activation_code("RELU6") == RELU6
    with pytest.raises(UnsupportedOpError, match="SIGN_BIT"):
        activation_code("SIGN_BIT")
    assert activation_range(RELU6) == (0.0, 6.0)
    assert clamp_code(TANH) == 0  # TFLite's CalculateActivationRange ignores a fused TANH
    from numba import njit

    @njit
    def apply_all(x, out, code):
        for i in range(x.size):
            out[i] = apply_activation(x[i], code)

    x = np.array([-7, -0.5, 0.25, 3, 9], f32)
    out = np.empty_like(x)
    expected = {0: x, 1: np.maximum(x, 0), 2: np.clip(x, -1, 1), 3: np.clip(x, 0, 6), 4: np.tanh(x)}
    for code, want in expected.items():
        apply_all(x, out, code)
        np.testing.assert_allclose(out, want, rtol=1e-6)


def test_expf_fast_within_one_ulp_and_special_values():
    from numba import njit

    from edgert.kernels.activations import expf_fast

    @njit
    def exp_all(x, out):
        for i in range(x.size):
            out[i] = expf_fast(x[i])

    rng = np.random.default_rng(1)
    x = np.concatenate([rng.uniform(-104, 89, 200_000), rng.uniform(-1, 1, 50_000),
                        [0.0, -0.0, 88.72283, 88.7229, -87.33, -103.9, -103.98, 1e-30, -1e-30]]).astype(f32)
    out = np.empty_like(x)
    exp_all(x, out)
    with np.errstate(over="ignore"):
        want = np.exp(x.astype(np.float64)).astype(f32)  # correctly rounded but for rare double-rounding ties
    ulps = np.abs(out.view(np.int32).astype(np.int64) - want.view(np.int32).astype(np.int64))
    assert ulps.max() <= 2, f"{ulps.max()} ulp at x={x[np.argmax(ulps)]!r}"
    special = np.array([np.nan, np.inf, -np.inf, 100.0, -200.0, 3e38, -3e38], f32)
    out = np.empty_like(special)
    exp_all(special, out)
    assert np.isnan(out[0]) and out[1] == np.inf and out[2] == 0.0
    assert out[3] == np.inf and out[4] == 0.0 and out[5] == np.inf and out[6] == 0.0


@pytest.mark.parametrize("opcode", ["EXP", "LOGISTIC"])
def test_exp_logistic_whole_range(opcode):
    x = np.concatenate([np.linspace(-110, 95, 2048), [np.nan, np.inf, -np.inf, -9.0, 16.619047, 16.62]])
    x = x.astype(f32).reshape(1, -1)
    check(opcode, [(x.shape, f32)], x.shape, inputs=[x])


# ---------------------------------------------------------------------------------------------
# Binary ops

BROADCASTS = [
    ((1, 8, 8, 24), (1, 8, 8, 24)),  # same shape: one flat row
    ((1, 7, 5, 24), (1, 1, 1, 24)),  # squeeze-excite channel scale
    ((1, 7, 5, 3), (1, 7, 5, 1)),  # per-pixel scale: inner stride 0
    ((1, 1, 1, 1), (2, 3, 4, 5)),  # scalar on the left
    ((2, 1, 4, 1), (1, 3, 1, 5)),  # both broadcast, interleaved
    ((3, 5), (5,)),  # ranks differ
    ((2, 3, 1, 2, 3, 2), (1, 3, 4, 1, 3, 1)),  # 6-D
]


@pytest.mark.parametrize("sa,sb", BROADCASTS)
@pytest.mark.parametrize("opcode", ["ADD", "MUL"])
def test_add_mul_broadcasting(opcode, sa, sb):
    check(opcode, [(sa, f32), (sb, f32)], np.broadcast_shapes(sa, sb))


@pytest.mark.parametrize("act", ["NONE", "RELU", "RELU_N1_TO_1", "RELU6", "TANH"])
@pytest.mark.parametrize("opcode", ["ADD", "SUB", "MUL", "DIV"])
def test_fused_activations(opcode, act):
    check(opcode, [((2, 3, 4, 5), f32), ((1, 3, 1, 5), f32)], (2, 3, 4, 5),
          options={"fused_activation_function": act})


@pytest.mark.parametrize("opcode", ["MAXIMUM", "MINIMUM", "SQUARED_DIFFERENCE", "SUB", "DIV", "FLOOR_DIV", "FLOOR_MOD"])
def test_other_binary_ops(opcode):
    check(opcode, [((2, 5, 7), f32), ((5, 1), f32)], (2, 5, 7))


def test_division_by_zero_gives_inf_and_nan():
    a = np.array([[1.0, -2.0, 0.0, 3.0]], f32)
    b = np.array([0.0, 0.0, 0.0, -0.0], f32)
    check("DIV", [((1, 4), f32), ((4,), f32)], (1, 4), inputs=[a, b])


def test_pow_positive_base():
    rng = np.random.default_rng(3)
    a = rng.uniform(0.1, 3, (4, 9)).astype(f32)
    b = rng.uniform(-2, 2, (9,)).astype(f32)
    check("POW", [((4, 9), f32), ((9,), f32)], (4, 9), inputs=[a, b])


def test_constant_operand_is_read_only_and_works():
    const = np.linspace(-1, 1, 24, dtype=f32).reshape(1, 1, 1, 24)
    check("MUL", [((1, 6, 6, 24), f32)], (1, 6, 6, 24), consts={1: const})
    check("SUB", [((1, 6, 6, 24), f32)], (1, 6, 6, 24), consts={0: np.array([0.5], f32)})


@pytest.mark.parametrize("opcode", ["ADD", "MUL", "MAXIMUM", "MINIMUM", "SUB"])
def test_int32_ops(opcode):
    rng = np.random.default_rng(4)
    a = rng.integers(-1000, 1000, (3, 4)).astype(np.int32)
    b = rng.integers(-1000, 1000, (4,)).astype(np.int32)
    check(opcode, [((3, 4), np.int32), ((4,), np.int32)], (3, 4), inputs=[a, b], out_dtype=np.int32)


def test_int32_relu_clamp():
    a = np.array([[-5, 3, 9]], np.int32)
    b = np.array([1, -4, 2], np.int32)
    check("ADD", [((1, 3), np.int32), ((3,), np.int32)], (1, 3), inputs=[a, b], out_dtype=np.int32,
          options={"fused_activation_function": "RELU6"})


@pytest.mark.parametrize("alpha_shape", [(1, 1, 16), (16,), (5, 7, 16), (1, 1, 1)])
def test_prelu_alpha_broadcast(alpha_shape):
    rng = np.random.default_rng(5)
    alpha = rng.uniform(0, 0.5, alpha_shape).astype(f32)
    check("PRELU", [((1, 5, 7, 16), f32)], (1, 5, 7, 16), consts={1: alpha})


# ---------------------------------------------------------------------------------------------
# Unary ops

UNARY = ["ABS", "NEG", "SQUARE", "EXP", "SIN", "COS", "FLOOR", "CEIL", "ROUND", "RELU", "RELU6",
         "RELU_N1_TO_1", "RELU_0_TO_1", "HARD_SWISH", "LOGISTIC", "TANH", "ELU"]


@pytest.mark.parametrize("opcode", UNARY)
def test_unary(opcode):
    rng = np.random.default_rng(6)
    x = (rng.standard_normal((2, 5, 3, 7)) * 5).astype(f32)
    x.reshape(-1)[:6] = [-20, -9.5, 0, 17, 2.5, -2.5]  # logistic cut-offs, hard-swish knees, ties
    check(opcode, [((2, 5, 3, 7), f32)], (2, 5, 3, 7), inputs=[x])


@pytest.mark.parametrize("opcode", ["SQRT", "RSQRT", "LOG"])
def test_unary_positive_domain(opcode):
    rng = np.random.default_rng(7)
    x = rng.uniform(0.01, 50, (3, 11)).astype(f32)
    check(opcode, [((3, 11), f32)], (3, 11), inputs=[x])


@pytest.mark.parametrize("alpha", [0.2, 0.01, 1.5])
def test_leaky_relu(alpha):
    check("LEAKY_RELU", [((1, 4, 4, 3), f32)], (1, 4, 4, 3), options={"alpha": alpha})


@pytest.mark.parametrize("approximate", [False, True])
def test_gelu(approximate):
    x = np.linspace(-12, 12, 97, dtype=f32).reshape(1, 97)
    check("GELU", [((1, 97), f32)], (1, 97), options={"approximate": approximate}, inputs=[x])


# ---------------------------------------------------------------------------------------------
# In place, strided outputs and inputs, no allocation


@pytest.mark.parametrize("position", [0, 1])
@pytest.mark.parametrize("sa,sb", [((1, 6, 6, 8), (1, 6, 6, 8)), ((1, 6, 6, 8), (8,)), ((1, 1, 6, 8), (1, 6, 6, 8))])
def test_binary_in_place(position, sa, sb):
    out_shape = np.broadcast_shapes(sa, sb)
    model = build_one_op("MUL", [(sa, f32), (sb, f32)], [(out_shape, f32)], {"fused_activation_function": "RELU"})
    rng = np.random.default_rng(8)
    inputs = [rng.standard_normal(sa).astype(f32), rng.standard_normal(sb).astype(f32)]
    ref = reference_outputs(model, inputs)[0]
    _, _, _, entry, ctx = bind_one(model, inputs, registry=REGISTRY)
    allowed = entry.inplace(ctx)
    assert allowed == tuple(k for k, s in enumerate((sa, sb)) if s == out_shape)
    if position not in allowed:
        return
    ins = [x.copy() for x in inputs]
    fn, args, outs, _, _ = bind_in_place(model, ins, position, registry=REGISTRY)
    assert outs[0] is ins[position]
    fn(*args)
    assert_close_float(outs[0], ref)


@pytest.mark.parametrize("opcode", ["HARD_SWISH", "LOGISTIC", "RELU6"])
def test_unary_in_place(opcode):
    model = build_one_op(opcode, [((1, 9, 9, 5), f32)], [((1, 9, 9, 5), f32)])
    x = (np.random.default_rng(9).standard_normal((1, 9, 9, 5)) * 4).astype(f32)
    ref = reference_outputs(model, [x])[0]
    fn, args, outs, *_ = bind_in_place(model, [x.copy()], 0, registry=REGISTRY)
    fn(*args)
    assert_close_float(outs[0], ref)


@pytest.mark.parametrize("sa,sb", [((1, 5, 6, 7), (1, 5, 6, 7)), ((1, 5, 6, 7), (1, 1, 1, 7)), ((1, 5, 6, 7), (1, 5, 6, 1))])
def test_binary_strided_output(sa, sb):
    model = build_one_op("ADD", [(sa, f32), (sb, f32)], [(sa, f32)], {"fused_activation_function": "RELU6"})
    rng = np.random.default_rng(10)
    inputs = [(rng.standard_normal(s) * 4).astype(f32) for s in (sa, sb)]
    ref = reference_outputs(model, inputs)[0]
    big, view = strided_like(sa, fill=777.0)
    assert not view.flags.c_contiguous
    run_kernel(model, inputs, outs=[view])
    assert_close_float(view, ref)
    mask = np.ones(big.shape, bool)
    mask[..., 2:2 + sa[-1]] = False
    assert np.all(big[mask] == 777.0)


def test_unary_strided_output_and_strided_input_in_place():
    model = build_one_op("HARD_SWISH", [((1, 4, 6, 3), f32)], [((1, 4, 6, 3), f32)])
    x = (np.random.default_rng(11).standard_normal((1, 4, 6, 3)) * 4).astype(f32)
    ref = reference_outputs(model, [x])[0]
    big, view = strided_like(x.shape, fill=777.0)
    run_kernel(model, [x], outs=[view])
    assert_close_float(view, ref)
    assert np.all(big[..., :2] == 777.0) and np.all(big[..., 5:] == 777.0)
    # the strided view as the input too, overwritten in place
    view[...] = x
    fn, args, outs, *_ = bind_in_place(model, [view], 0, registry=REGISTRY)
    fn(*args)
    assert_close_float(outs[0], ref)
    assert np.all(big[..., :2] == 777.0)


def test_strided_input_broadcast():
    model = build_one_op("SUB", [((2, 3, 4), f32), ((1, 3, 1), f32)], [((2, 3, 4), f32)])
    rng = np.random.default_rng(12)
    wide = rng.standard_normal((2, 3, 9)).astype(f32)
    a = wide[:, :, 3:7]
    b = rng.standard_normal((1, 3, 1)).astype(f32)
    ref = reference_outputs(model, [np.ascontiguousarray(a), b])[0]
    assert_close_float(run_kernel(model, [a, b])[0], ref)


@pytest.mark.parametrize("opcode,specs,consts", [
    ("MUL", [((1, 14, 14, 48), f32)], {1: np.ones((1, 1, 1, 48), f32)}),
    ("ADD", [((1, 14, 14, 48), f32), ((1, 14, 14, 48), f32)], None),
    ("HARD_SWISH", [((1, 14, 14, 48), f32)], None),
])
def test_step_allocates_nothing(opcode, specs, consts):
    model = build_one_op(opcode, specs, [((1, 14, 14, 48), f32)], consts=consts)
    inputs = [np.ones(s[0], f32) for s in specs]
    fn, args, *_ = bind_one(model, inputs, registry=REGISTRY)
    # one temporary of the tensor would be 37 KiB; the dispatcher's transient boxing is a few hundred bytes
    assert_no_allocation(fn, args, limit=1024, calls=5)


def test_zero_size_tensor_is_a_no_op():
    model = build_one_op("ADD", [((0, 3), f32), ((0, 3), f32)], [((0, 3), f32)])
    fn, args, *_ = bind_one(model, [np.empty((0, 3), f32)] * 2, registry=REGISTRY)
    fn(*args)


# ---------------------------------------------------------------------------------------------
# What the kernels refuse


def _ctx(model: bytes) -> OpContext:
    sg = load_model(model).main
    return OpContext.of(sg, sg.operators[0])


def test_rejects_int16_with_reason():
    q = quant(0.1, 0)
    model = build_one_op("ADD", [((1, 4), np.int16, q), ((1, 4), np.int16, q)], [((1, 4), np.int16, q)])
    with pytest.raises(UnsupportedOpError, match="int16 not supported"):
        REGISTRY.lookup(_ctx(model))


def test_rejects_unknown_fused_activation_and_bad_broadcast():
    model = build_one_op("ADD", [((2, 3), f32), ((2, 3), f32)], [((2, 3), f32)],
                         {"fused_activation_function": "SIGN_BIT"})
    assert "SIGN_BIT" in REGISTRY.find(_ctx(model))
    model = build_one_op("MUL", [((2, 3), f32), ((4, 3), f32)], [((4, 3), f32)])
    assert "broadcast" in REGISTRY.find(_ctx(model))
