"""DEQUANTIZE / QUANTIZE / DENSIFY (edgert.kernels.quant) against LiteRT's reference kernels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from oneop import assert_close_quant, build_one_op, quant, reference_outputs
from edgert.kernels import quant as quant_kernels
from edgert.kernels.registry import KernelRegistry, OpContext
from edgert.model.builder import ModelBuilder, csr_sparsity
from edgert.model.reader import load_model
from ai_edge_litert.interpreter import Interpreter, OpResolverType

f32 = np.float32
MEDIAPIPE = Path(__file__).resolve().parents[2] / "shared" / "models" / "real" / "mediapipe"


def _registry() -> KernelRegistry:
    registry = KernelRegistry()
    quant_kernels.register(registry)
    return registry


def run_op(sg, op, ins, outs=None):
    ctx = OpContext.of(sg, op)
    entry = _registry().lookup(ctx)
    outs = outs if outs is not None else [np.empty(t.shape, t.dtype) for t in ctx.outputs]
    fn, args = entry.bind(ctx, ins, outs, None)
    fn(*args)
    return outs


def run_kernel(model: bytes, inputs: list[np.ndarray], outs=None) -> list[np.ndarray]:
    sg = load_model(model).main
    (op,) = sg.operators
    feed = dict(zip(sg.inputs, inputs))
    ins = [sg.tensors[i].data if sg.tensors[i].data is not None else feed[i] for i in op.inputs]
    return run_op(sg, op, ins, outs)


def _ints(dtype, shape, seed=0):
    info = np.iinfo(dtype)
    return np.random.default_rng(seed).integers(info.min, info.max + 1, shape).astype(dtype)


def test_dequantize_float16_constant_is_exact():
    rng = np.random.default_rng(0)
    w = np.concatenate([rng.standard_normal(200) * 10, [0.0, -0.0, 65504, -65504, 6e-8, 1e-5, np.inf, -np.inf]])
    w16 = w.astype(np.float16).reshape(13, 16)
    model = build_one_op("DEQUANTIZE", [], [((13, 16), f32)], consts={0: w16}, version=3)
    ours = run_kernel(model, [])[0]
    np.testing.assert_array_equal(ours, w16.astype(f32))
    np.testing.assert_array_equal(ours, reference_outputs(model, [])[0])


def test_dequantize_float16_nan():
    bits = np.asarray([0x7E00, 0xFC01, 0x0001, 0x83FF], np.uint16)
    model = build_one_op("DEQUANTIZE", [], [((4,), f32)], consts={0: bits.view(np.float16)}, version=3)
    ours = run_kernel(model, [])[0]
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
    ours = run_kernel(model, [x])[0]
    np.testing.assert_array_equal(ours, reference_outputs(model, [x])[0])


@pytest.mark.parametrize("axis", [0, 3])
def test_dequantize_per_channel_constant(axis):
    shape = (4, 3, 3, 5)
    n = shape[axis]
    q = quant(np.linspace(0.01, 0.2, n), list(range(-2, n - 2)), axis=axis)
    w = _ints(np.int8, shape, seed=axis)
    model = build_one_op("DEQUANTIZE", [], [(shape, f32)], consts={0: (w, q)}, version=4)
    ours = run_kernel(model, [])[0]
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
    ours = run_kernel(model, [x])[0]
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
    ours = run_kernel(model, [x])[0]
    assert_close_quant(ours, reference_outputs(model, [x])[0], max_off_by_one_fraction=0.0)


def test_requantize_in_place():
    qs, qd = quant(0.05, -4), quant(0.05, 124)
    model = build_one_op("QUANTIZE", [((64,), np.int8, qs)], [((64,), np.uint8, qd)], version=2)
    x = _ints(np.int8, (64,), seed=1)
    ref = reference_outputs(model, [x])[0]
    buf = x.copy()
    sg = load_model(model).main
    ctx = OpContext.of(sg, sg.operators[0])
    assert _registry().lookup(ctx).inplace(ctx) == (0,)
    run_kernel(model, [buf], outs=[buf.view(np.uint8)])
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
    ours = run_kernel(model, [])[0]
    np.testing.assert_array_equal(ours, dense)
    try:
        ref = reference_outputs(model, [])[0]
    except Exception as exc:  # LiteRT only densifies some dtypes; the dense matrix is the truth anyway
        pytest.skip(f"LiteRT cannot run this DENSIFY: {exc}")
    np.testing.assert_array_equal(ours, ref)


def _mediapipe(name: str) -> Path:
    path = MEDIAPIPE / name
    if not path.is_file():
        pytest.skip(f"{path} not present")
    return path


@pytest.mark.parametrize("name", ["face_detection_full_range_sparse.tflite", "pose_detection.tflite"])
def test_real_model_weight_folding_matches_litert(name):
    """DENSIFY and DEQUANTIZE of every constant weight of a MediaPipe model equal LiteRT's folded tensors."""
    path = _mediapipe(name)
    sg = load_model(path).main
    # DEQUANTIZE/DENSIFY of constants run at the first invoke; keep every tensor to read them back
    interp = Interpreter(model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_REF,
                         experimental_preserve_all_tensors=True)
    interp.allocate_tensors()
    for d in interp.get_input_details():
        interp.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
    interp.invoke()
    folded: dict[int, np.ndarray] = {}
    checked = {"DENSIFY": 0, "DEQUANTIZE": 0}
    for op in sg.operators:
        if op.opcode not in checked:
            continue
        (i,) = op.inputs
        src = sg.tensors[i].data if sg.tensors[i].data is not None else folded.get(i)
        if src is None:
            continue
        out = run_op(sg, op, [src])[0]
        folded[op.outputs[0]] = out
        ref = interp.get_tensor(op.outputs[0])
        np.testing.assert_array_equal(out, ref, err_msg=f"{op.opcode} -> {sg.tensors[op.outputs[0]].name}")
        checked[op.opcode] += 1
    assert checked["DEQUANTIZE"] > 0
    if "sparse" in name or "pose" in name:
        assert checked["DENSIFY"] > 0


@pytest.mark.parametrize("case", ["dequantize_f16", "dequantize_per_channel", "quantize", "densify"])
def test_fn_allocates_nothing(case):
    import tracemalloc

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
    sg = load_model(model).main
    op = sg.operators[0]
    ctx = OpContext.of(sg, op)
    ins = [sg.tensors[i].data if sg.tensors[i].data is not None else rng.random((4, 8)).astype(f32) for i in op.inputs]
    outs = [np.empty(t.shape, t.dtype) for t in ctx.outputs]
    fn, args = _registry().lookup(ctx).bind(ctx, ins, outs, None)
    fn(*args)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for _ in range(20):
        fn(*args)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak - before < 1024  # the numba dispatcher makes ~50 bytes of transient objects per argument
