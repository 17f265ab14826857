"""DEQUANTIZE / QUANTIZE / DENSIFY (edgert.kernels.quant) against LiteRT's reference kernels."""

from __future__ import annotations

import numpy as np
import pytest

from oneop import (assert_close_quant, assert_no_allocation, bind_one, build_one_op, check_real_model_ops, quant,
                   reference_outputs, run_one, shared_model)
from edgert.model.builder import ModelBuilder, csr_sparsity

f32 = np.float32


def _ints(dtype, shape, seed=0):
    info = np.iinfo(dtype)
    return np.random.default_rng(seed).integers(info.min, info.max + 1, shape).astype(dtype)


def test_dequantize_float16_constant_is_exact():
    rng = np.random.default_rng(0)
    w = np.concatenate([rng.standard_normal(200) * 10, [0.0, -0.0, 65504, -65504, 6e-8, 1e-5, np.inf, -np.inf]])
    w16 = w.astype(np.float16).reshape(13, 16)
    model = build_one_op("DEQUANTIZE", [], [((13, 16), f32)], consts={0: w16}, version=3)
    ours = run_one(model, [])[0]
    np.testing.assert_array_equal(ours, w16.astype(f32))
    np.testing.assert_array_equal(ours, reference_outputs(model, [])[0])


def test_dequantize_float16_nan():
    bits = np.asarray([0x7E00, 0xFC01, 0x0001, 0x83FF], np.uint16)
    model = build_one_op("DEQUANTIZE", [], [((4,), f32)], consts={0: bits.view(np.float16)}, version=3)
    ours = run_one(model, [])[0]
    ref = bits.view(np.float16).astype(f32)
    assert np.isnan(ours[0]) and np.isnan(ours[1])
    np.testing.assert_array_equal(ours[2:], ref[2:])


@pytest.mark.parametrize("dtype,q", [
    (np.int8, quant(0.0374, -7)),
    (np.uint8, quant(0.011, 131)),
    (np.int16, quant(0.0003, 0)),
])
def test_dequantize_per_tensor(dtype, q):
    model = build_one_op("DEQUANTIZE", [((2, 5, 7), dtype, q)], [((2, 5, 7), f32)], version=4)
    x = _ints(dtype, (2, 5, 7))
    ours = run_one(model, [x])[0]
    np.testing.assert_array_equal(ours, reference_outputs(model, [x])[0])


@pytest.mark.parametrize("axis", [0, 3])
def test_dequantize_per_channel_constant(axis):
    shape = (4, 3, 3, 5)
    n = shape[axis]
    q = quant(np.linspace(0.01, 0.2, n), list(range(-2, n - 2)), axis=axis)
    w = _ints(np.int8, shape, seed=axis)
    model = build_one_op("DEQUANTIZE", [], [(shape, f32)], consts={0: (w, q)}, version=4)
    ours = run_one(model, [])[0]
    np.testing.assert_array_equal(ours, reference_outputs(model, [])[0])


@pytest.mark.parametrize("dtype,q", [
    (np.int8, quant(0.02, -3)),
    (np.uint8, quant(0.013, 120)),
    (np.int16, quant(0.0005, 0)),
])
def test_quantize_float(dtype, q):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((3, 50)) * 2).astype(f32)
    # exact halves of a step are where rounding rules differ
    x[0, :10] = (np.arange(10) + 0.5).astype(f32) * f32(q.scale)
    x[0, 10:20] = -(np.arange(10) + 0.5).astype(f32) * f32(q.scale)
    model = build_one_op("QUANTIZE", [((3, 50), f32)], [((3, 50), dtype, q)], version=2)
    ours = run_one(model, [x])[0]
    np.testing.assert_array_equal(ours, reference_outputs(model, [x])[0])


@pytest.mark.parametrize("src,qs,dst,qd", [
    (np.int8, quant(0.05, -4), np.uint8, quant(0.05, 124)),  # the +128 shift
    (np.uint8, quant(0.03, 128), np.int8, quant(0.07, 5)),
    (np.int8, quant(0.1, 0), np.int8, quant(0.033, -10)),
    (np.uint8, quant(0.2, 10), np.uint8, quant(0.15, 200)),
    (np.int16, quant(0.001, 0), np.int8, quant(0.02, 3)),
])
def test_requantize(src, qs, dst, qd):
    x = _ints(src, (4, 64), seed=5)
    model = build_one_op("QUANTIZE", [((4, 64), src, qs)], [((4, 64), dst, qd)], version=2)
    ours = run_one(model, [x])[0]
    assert_close_quant(ours, reference_outputs(model, [x])[0], max_off_by_one_fraction=0.0)


def test_requantize_in_place():
    qs, qd = quant(0.05, -4), quant(0.05, 124)
    model = build_one_op("QUANTIZE", [((64,), np.int8, qs)], [((64,), np.uint8, qd)], version=2)
    x = _ints(np.int8, (64,), seed=1)
    ref = reference_outputs(model, [x])[0]
    buf = x.copy()
    fn, args, _, entry, ctx = bind_one(model, [buf], outs=[buf.view(np.uint8)])
    assert entry.inplace(ctx) == (0,)
    fn(*args)
    np.testing.assert_array_equal(buf.view(np.uint8), ref)


def _densify_model(dense: np.ndarray, block=None) -> tuple[bytes, np.ndarray]:
    values, sp = csr_sparsity(dense, block)
    b = ModelBuilder()
    src = b.sparse_const("sparse", values, dense.shape, sp)
    out = b.tensor("dense", dense.shape, dense.dtype)
    b.op("DENSIFY", [src], [out])
    b.output(out)
    return b.build(), values


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.int8])
@pytest.mark.parametrize("block", [None, (4, 1), (2, 2)])
def test_densify(dtype, block):
    rng = np.random.default_rng(7)
    dense = (rng.standard_normal((8, 12)) * 20).astype(dtype)
    dense[rng.random((8, 12)) < 0.6] = 0
    dense[3] = 0  # an empty row
    if block:
        bh, bw = block
        dense.reshape(8 // bh, bh, 12 // bw, bw)[1, :, 2, :] = 0  # an empty block
    model, values = _densify_model(dense, block)
    ours = run_one(model, [])[0]
    np.testing.assert_array_equal(ours, dense)
    try:
        ref = reference_outputs(model, [])[0]
    except Exception as exc:  # LiteRT only densifies some dtypes; the dense matrix is the truth anyway
        pytest.skip(f"LiteRT cannot run this DENSIFY: {exc}")
    np.testing.assert_array_equal(ours, ref)


@pytest.mark.parametrize("name", ["face_detection_full_range_sparse.tflite", "pose_detection.tflite"])
def test_real_model_weight_folding_matches_litert(name):
    """DENSIFY and DEQUANTIZE of every constant weight of a MediaPipe model equal LiteRT's folded tensors."""
    path = shared_model(f"real/mediapipe/{name}")
    # DEQUANTIZE/DENSIFY of constants run at LiteRT's first invoke; it keeps every tensor to read them back
    checked = check_real_model_ops(path, {"DENSIFY", "DEQUANTIZE"}, np.testing.assert_array_equal)
    assert checked.get("DEQUANTIZE", 0) > 0
    if "sparse" in name or "pose" in name:
        assert checked.get("DENSIFY", 0) > 0


@pytest.mark.parametrize("case", ["dequantize_f16", "dequantize_per_channel", "quantize", "densify"])
def test_fn_allocates_nothing(case):
    rng = np.random.default_rng(0)
    if case == "dequantize_f16":
        model = build_one_op("DEQUANTIZE", [], [((8, 8), f32)], consts={0: rng.random((8, 8)).astype(np.float16)},
                             version=3)
    elif case == "dequantize_per_channel":
        model = build_one_op("DEQUANTIZE", [], [((4, 8), f32)], version=4,
                             consts={0: (_ints(np.int8, (4, 8)), quant([0.1, 0.2, 0.3, 0.4], 0, axis=0))})
    elif case == "quantize":
        model = build_one_op("QUANTIZE", [((4, 8), f32)], [((4, 8), np.int8, quant(0.1, 2))], version=2)
    else:
        dense = rng.random((8, 8)).astype(f32)
        dense[dense < 0.5] = 0
        model, _ = _densify_model(dense)
    inputs = [rng.random((4, 8)).astype(f32)] if case == "quantize" else []  # the others read constants only
    fn, args, *_ = bind_one(model, inputs)
    # the numba dispatcher makes ~50 bytes of transient objects per argument
    assert_no_allocation(fn, args, limit=1024, calls=20)
