"""Data-movement kernels (edgert.kernels.shape) against LiteRT's reference kernels on one-op models."""

from __future__ import annotations

import numpy as np
import pytest

from oneop import (assert_close_float, assert_no_allocation, bind_one, build_one_op, family_registry,
                   litert_intermediate_results, quant, reference_outputs, run_one, shared_model)
from edgert.kernels.registry import KernelRegistry, OpContext
from edgert.kernels import shape as shape_kernels
from edgert.model.reader import load_model


def _registry() -> KernelRegistry:
    return family_registry(shape_kernels)


def check(opcode, input_specs, output_specs, options=None, consts=None, seed=0, version=1):
    model = build_one_op(opcode, input_specs, output_specs, options, consts, version)
    rng = np.random.default_rng(seed)
    inputs = []
    for spec in input_specs:
        shape, dt = spec[0], np.dtype(spec[1])
        if dt.kind == "f":
            inputs.append(rng.standard_normal(shape).astype(dt))
        elif dt == np.bool_:
            inputs.append(rng.integers(0, 2, shape).astype(bool))
        else:
            info = np.iinfo(dt)
            inputs.append(rng.integers(max(info.min, -100), min(info.max, 100), shape).astype(dt))
    ref = reference_outputs(model, inputs)
    ours = run_one(model, inputs)
    for o, r in zip(ours, ref):
        assert o.shape == r.shape and o.dtype == r.dtype
        np.testing.assert_array_equal(o, r)  # data movement is exact
    return model, inputs, ref


f32 = np.float32


@pytest.mark.parametrize("shape,pads", [
    ((1, 5, 7, 3), [[0, 0], [1, 2], [2, 1], [0, 0]]),
    ((1, 4, 4, 6), [[0, 0], [0, 0], [0, 0], [0, 6]]),  # channel padding as in MediaPipe residuals
    ((3, 2), [[1, 1], [0, 3]]),
    ((2, 3, 4), [[0, 0], [0, 0], [0, 0]]),
])
def test_pad(shape, pads):
    out = tuple(n + a + b for n, (a, b) in zip(shape, pads))
    check("PAD", [(shape, f32)], [(out, f32)], consts={1: np.asarray(pads, np.int32)})


def test_pad_int8_uses_zero_point_and_int64_paddings():
    q = quant(0.1, -5)
    check("PAD", [((1, 3, 3, 2), np.int8, q)], [((1, 5, 4, 2), np.int8, q)],
          consts={1: np.asarray([[0, 0], [1, 1], [0, 1], [0, 0]], np.int64)})


def test_padv2_constant_value():
    check("PADV2", [((2, 3, 3), f32)], [((2, 6, 4), f32)],
          consts={1: np.asarray([[0, 0], [2, 1], [1, 0]], np.int32), 2: np.asarray([1.5], f32)})


@pytest.mark.parametrize("mode", ["REFLECT", "SYMMETRIC"])
def test_mirror_pad(mode):
    pads = [[1, 2], [2, 0], [0, 3]] if mode == "REFLECT" else [[2, 3], [3, 0], [0, 4]]
    shape = (3, 4, 5)
    out = tuple(n + a + b for n, (a, b) in zip(shape, pads))
    check("MIRROR_PAD", [(shape, f32)], [(out, f32)], options={"mode": mode},
          consts={1: np.asarray(pads, np.int32)})


def test_pad_into_strided_output():
    model = build_one_op("PAD", [((1, 3, 4, 2), f32)], [((1, 5, 6, 2), f32)],
                         consts={1: np.asarray([[0, 0], [1, 1], [1, 1], [0, 0]], np.int32)})
    x = np.random.default_rng(0).standard_normal((1, 3, 4, 2)).astype(f32)
    ref = reference_outputs(model, [x])[0]
    big = np.full((1, 5, 6, 7), 9.0, f32)
    view = big[..., 3:5]
    run_one(model, [x], outs=[view])
    np.testing.assert_array_equal(view, ref)
    assert np.all(big[..., :3] == 9.0) and np.all(big[..., 5:] == 9.0)


@pytest.mark.parametrize("opcode,in_shape,out_shape,extra", [
    ("RESHAPE", (2, 3, 4), (6, 4), {1: np.asarray([6, 4], np.int32)}),
    ("SQUEEZE", (1, 3, 1, 4), (3, 4), {}),
    ("EXPAND_DIMS", (3, 4), (3, 1, 4), {1: np.asarray([1], np.int32)}),
])
def test_reshape_family(opcode, in_shape, out_shape, extra):
    options = {"squeeze_dims": [0, 2]} if opcode == "SQUEEZE" else ({"new_shape": list(out_shape)} if opcode == "RESHAPE" else None)
    check(opcode, [(in_shape, f32)], [(out_shape, f32)], options=options, consts=extra)


def test_reshape_into_strided_output():
    model = build_one_op("RESHAPE", [((2, 6), f32)], [((2, 3, 2), f32)],
                         {"new_shape": [2, 3, 2]}, consts={1: np.asarray([2, 3, 2], np.int32)})
    x = np.arange(12, dtype=f32).reshape(2, 6)
    big = np.zeros((2, 3, 5), f32)
    run_one(model, [x], outs=[big[:, :, 1:3]])
    np.testing.assert_array_equal(big[:, :, 1:3], x.reshape(2, 3, 2))
    assert not big[:, :, [0, 3, 4]].any()


@pytest.mark.parametrize("axis,shapes", [
    (3, [(1, 4, 4, 3), (1, 4, 4, 5)]),
    (1, [(2, 1, 3), (2, 4, 3), (2, 2, 3)]),
    (-1, [(3, 2), (3, 1)]),
    (0, [(2, 5), (1, 5)]),
])
def test_concatenation(axis, shapes):
    ax = axis % len(shapes[0])
    out = list(shapes[0])
    out[ax] = sum(s[ax] for s in shapes)
    check("CONCATENATION", [(s, f32) for s in shapes], [(tuple(out), f32)],
          options={"axis": axis, "fused_activation_function": "NONE"})


def test_concatenation_int8_same_quant_and_const_input():
    q = quant(0.05, 3)
    check("CONCATENATION", [((1, 2, 2, 3), np.int8, q)], [((1, 2, 2, 5), np.int8, q)],
          options={"axis": 3, "fused_activation_function": "NONE"},
          consts={1: (np.arange(8, dtype=np.int8).reshape(1, 2, 2, 2), q)})


def test_concatenation_rejects_requantizing():
    model = build_one_op("CONCATENATION", [((1, 2), np.int8, quant(0.1, 0)), ((1, 2), np.int8, quant(0.2, 0))],
                         [((1, 4), np.int8, quant(0.1, 0))], options={"axis": 1, "fused_activation_function": "NONE"})
    sg = load_model(model).main
    assert "quantization" in _registry().find(OpContext.of(sg, sg.operators[0]))


@pytest.mark.parametrize("perm,shape", [
    ((0, 3, 1, 2), (2, 3, 4, 5)),
    ((1, 0), (7, 3)),
    ((2, 0, 1), (3, 1, 4)),
    ((5, 4, 3, 2, 1, 0), (2, 1, 3, 2, 2, 3)),
])
def test_transpose(perm, shape):
    out = tuple(shape[p] for p in perm)
    check("TRANSPOSE", [(shape, f32)], [(out, f32)], consts={1: np.asarray(perm, np.int32)})


def test_slice():
    check("SLICE", [((3, 5, 6), f32)], [((2, 3, 4), f32)],
          consts={1: np.asarray([1, 2, 1], np.int32), 2: np.asarray([2, -1, 4], np.int32)})


@pytest.mark.parametrize("shape,begin,end,strides,masks,out", [
    ((4, 6), [1, 0], [3, 6], [1, 2], {}, (2, 3)),
    ((4, 6), [-1, -2], [0, 0], [-1, -1], {}, (3, 4)),  # negative strides
    ((4, 6), [0, 0], [0, 0], [1, -2], {"begin_mask": 3, "end_mask": 3}, (4, 3)),
    ((2, 3, 4), [1, 0, 0], [2, 3, 4], [1, 1, 1], {"shrink_axis_mask": 1}, (3, 4)),
    ((2, 3, 4), [0, 2], [0, 3], [1, 1], {"ellipsis_mask": 1, "shrink_axis_mask": 2}, (2, 3)),
    ((2, 3, 4), [0, 0, 1], [0, 0, 3], [1, 1, 1], {"new_axis_mask": 1, "begin_mask": 2, "end_mask": 2}, (1, 2, 2, 4)),
    ((3, 5), [1, 1], [2, 3], [1, 1], {"offset": True}, (2, 3)),
])
def test_strided_slice(shape, begin, end, strides, masks, out):
    opts = {"begin_mask": 0, "end_mask": 0, "ellipsis_mask": 0, "new_axis_mask": 0, "shrink_axis_mask": 0,
            "offset": False}
    opts.update(masks)
    check("STRIDED_SLICE", [(shape, f32)], [(out, f32)], options=opts,
          consts={1: np.asarray(begin, np.int32), 2: np.asarray(end, np.int32), 3: np.asarray(strides, np.int32)})


def test_strided_slice_of_int32_shape_tensor():
    opts = {"begin_mask": 0, "end_mask": 0, "ellipsis_mask": 0, "new_axis_mask": 0, "shrink_axis_mask": 0}
    check("STRIDED_SLICE", [((4,), np.int32)], [((2,), np.int32)], options=opts,
          consts={1: np.asarray([1], np.int32), 2: np.asarray([3], np.int32), 3: np.asarray([1], np.int32)})


@pytest.mark.parametrize("axis,batch_dims,p_shape,i_shape,itype", [
    (0, 0, (5, 3), (4,), np.int32),
    (1, 0, (2, 6, 3), (2, 2), np.int64),
    (1, 1, (2, 5, 3), (2, 4), np.int32),
    (-1, 0, (3, 4), (), np.int32),
])
def test_gather(axis, batch_dims, p_shape, i_shape, itype):
    ax = axis % len(p_shape)
    out = p_shape[:ax] + i_shape[batch_dims:] + p_shape[ax + 1:]
    rng = np.random.default_rng(1)
    idx = rng.integers(0, p_shape[ax], i_shape).astype(itype)
    check("GATHER", [(p_shape, f32)], [(out, f32)], options={"axis": axis, "batch_dims": batch_dims},
          consts={1: idx})


def test_gather_nd():
    idx = np.asarray([[1, 0], [2, 3], [0, 1]], np.int32)
    check("GATHER_ND", [((3, 4, 2), f32)], [((3, 2), f32)], consts={1: idx})


@pytest.mark.parametrize("shape,mult", [((2, 3), (2, 3)), ((1, 2, 1, 3), (2, 1, 3, 2))])
def test_tile(shape, mult):
    out = tuple(n * m for n, m in zip(shape, mult))
    check("TILE", [(shape, f32)], [(out, f32)], consts={1: np.asarray(mult, np.int32)})


def test_broadcast_to():
    check("BROADCAST_TO", [((3, 1), f32)], [((2, 3, 4), f32)], consts={1: np.asarray([2, 3, 4], np.int32)}, version=2)


def test_split_and_split_v():
    check("SPLIT", [((2, 6, 3), f32)], [((2, 2, 3), f32)] * 3, options={"num_splits": 3},
          consts={0: np.asarray(1, np.int32)})
    check("SPLIT_V", [((2, 7), f32)], [((2, 2), f32), ((2, 4), f32), ((2, 1), f32)], options={"num_splits": 3},
          consts={1: np.asarray([2, -1, 1], np.int32), 2: np.asarray([-1], np.int32)})


def test_pack_unpack():
    check("PACK", [((3, 4), f32)] * 3, [((3, 3, 4), f32)], options={"values_count": 3, "axis": 1})
    check("UNPACK", [((2, 3, 4), f32)], [((2, 4), f32)] * 3, options={"num": 3, "axis": 1})


@pytest.mark.parametrize("b", [2, 3])
def test_depth_to_space_and_back(b):
    check("DEPTH_TO_SPACE", [((1, 3, 2, 5 * b * b), f32)], [((1, 3 * b, 2 * b, 5), f32)], options={"block_size": b})
    check("SPACE_TO_DEPTH", [((2, 2 * b, 3 * b, 3), f32)], [((2, 2, 3, 3 * b * b), f32)], options={"block_size": b})


@pytest.mark.parametrize("src,dst", [
    (np.float32, np.int32), (np.int32, np.float32), (np.int64, np.int32), (np.uint8, np.float32),
    (np.float32, np.bool_), (np.bool_, np.float32), (np.int32, np.int64),
])
def test_cast(src, dst):
    check("CAST", [((3, 5), src)], [((3, 5), dst)])


def test_cast_in_place():
    model = build_one_op("CAST", [((17,), np.int32)], [((17,), f32)])
    x = np.arange(-8, 9, dtype=np.int32)
    buf = x.copy()
    run_one(model, [buf], outs=[buf.view(f32)])
    np.testing.assert_array_equal(buf.view(f32), x.astype(f32))


@pytest.mark.parametrize("case", ["pad", "concat", "gather", "split", "cast"])
def test_fn_allocates_nothing(case):
    x = np.ones((1, 8, 8, 4), f32)
    if case == "pad":
        model = build_one_op("PAD", [((1, 8, 8, 4), f32)], [((1, 10, 10, 8), f32)],
                             consts={1: np.asarray([[0, 0], [1, 1], [1, 1], [0, 4]], np.int32)})
        inputs = [x]
    elif case == "concat":
        model = build_one_op("CONCATENATION", [((1, 8, 8, 4), f32)] * 2, [((1, 8, 8, 8), f32)],
                             {"axis": 3, "fused_activation_function": "NONE"})
        inputs = [x, x]
    elif case == "gather":
        model = build_one_op("GATHER", [((1, 8, 8, 4), f32)], [((1, 3, 8, 4), f32)], {"axis": 1, "batch_dims": 0},
                             consts={1: np.asarray([0, 7, 3], np.int32)})
        inputs = [x]
    elif case == "split":
        model = build_one_op("SPLIT", [((1, 8, 8, 4), f32)], [((1, 8, 8, 2), f32)] * 2, {"num_splits": 2},
                             consts={0: np.asarray(3, np.int32)})
        inputs = [x]
    else:
        model = build_one_op("CAST", [((1, 8, 8, 4), f32)], [((1, 8, 8, 4), np.int32)])
        inputs = [x]
    fn, args, *_ = bind_one(model, inputs)
    # the numba dispatcher itself makes ~50 bytes of transient objects per argument; data would be far more
    assert_no_allocation(fn, args, limit=1024, calls=20)


def test_concat_and_depth_to_space_into_strided_outputs():
    model = build_one_op("CONCATENATION", [((1, 3, 3, 2), f32), ((1, 3, 3, 5), f32)], [((1, 3, 3, 7), f32)],
                         {"axis": 3, "fused_activation_function": "NONE"})
    rng = np.random.default_rng(2)
    xs = [rng.standard_normal((1, 3, 3, 2)).astype(f32), rng.standard_normal((1, 3, 3, 5)).astype(f32)]
    big = np.zeros((1, 3, 3, 10), f32)
    run_one(model, xs, outs=[big[..., 1:8]])
    np.testing.assert_array_equal(big[..., 1:8], reference_outputs(model, xs)[0])
    assert not big[..., 0].any() and not big[..., 8:].any()
    model = build_one_op("DEPTH_TO_SPACE", [((1, 2, 3, 12), f32)], [((1, 4, 6, 3), f32)], {"block_size": 2})
    x = rng.standard_normal((1, 2, 3, 12)).astype(f32)
    big = np.zeros((1, 4, 6, 8), f32)
    run_one(model, [x], outs=[big[..., 4:7]])
    np.testing.assert_array_equal(big[..., 4:7], reference_outputs(model, [x])[0])
    assert not big[..., :4].any() and not big[..., 7:].any()


def test_unsupported_reports_reason():
    model = build_one_op("PAD", [((2, 3), f32), ((2, 2), np.int32)], [((4, 5), f32)])
    sg = load_model(model).main
    reason = _registry().find(OpContext.of(sg, sg.operators[0]))
    assert isinstance(reason, str) and "paddings" in reason


REAL_OPS = {"PAD", "PADV2", "CONCATENATION", "RESHAPE", "DEPTH_TO_SPACE", "RESIZE_BILINEAR", "STRIDED_SLICE",
            "TRANSPOSE", "SLICE", "GATHER", "SPLIT", "PACK", "UNPACK", "TILE", "QUANTIZE"}


@pytest.mark.parametrize("name", ["mediapipe/face_detection_full_range_sparse.tflite", "mediapipe/pose_detection.tflite",
                                  "mediapipe/hand_recrop.tflite", "pymicro-wakeword/alexa.tflite"])
def test_real_model_ops_match_litert(name):
    """Every data-movement/resize/requantize op of a real model, fed LiteRT's own intermediate tensors."""
    seen: dict[str, int] = {}
    for ctx, ours, refs in litert_intermediate_results(shared_model(f"real/{name}"), REAL_OPS):
        for t, o, ref in zip(ctx.outputs, ours, refs):
            if ctx.op.opcode == "RESIZE_BILINEAR":
                assert_close_float(o, ref)
            else:
                np.testing.assert_array_equal(o, ref, err_msg=f"{ctx.op.opcode} -> {t.name}")
        seen[ctx.op.opcode] = seen.get(ctx.op.opcode, 0) + 1
    assert seen, "no data-movement ops found"


def test_strided_slice_random_masks_match_litert():
    """A seeded sweep over begin/end/strides and all five masks (ellipsis, new axis, shrink, offset)."""
    from edgert.errors import ModelError
    from edgert.kernels.shape import strided_slice_dims

    rng = np.random.default_rng(11)
    compared = 0
    for _ in range(80):
        rank = int(rng.integers(1, 5))
        shape = tuple(int(v) for v in rng.integers(1, 6, rank))
        n = int(rng.integers(1, rank + 1))
        begin = [int(v) for v in rng.integers(-6, 6, n)]
        end = [int(v) for v in rng.integers(-6, 7, n)]
        strides = [int(rng.choice([-3, -2, -1, 1, 2, 3])) for _ in range(n)]
        masks = {k: int(rng.integers(0, 1 << n)) for k in ("begin_mask", "end_mask", "shrink_axis_mask")}
        masks["ellipsis_mask"] = int(1 << rng.integers(0, n)) if rng.random() < 0.3 else 0
        masks["new_axis_mask"] = int(rng.integers(0, 1 << n)) if rng.random() < 0.3 else 0
        offset = bool(rng.random() < 0.2)
        if offset:  # end is a size; LiteRT sizes the output from it unclamped, so keep it in range
            n = rank
            begin = [int(rng.integers(0, d)) for d in shape]
            end = [int(rng.integers(1, d - b + 1)) for d, b in zip(shape, begin)]
            strides = [int(rng.integers(1, 3)) for _ in range(n)]
            masks = {k: 0 for k in masks}
            masks["shrink_axis_mask"] = int(rng.integers(0, 1 << n))
        dims = strided_slice_dims(shape, begin, end, strides, masks["begin_mask"], masks["end_mask"],
                                  masks["ellipsis_mask"], masks["new_axis_mask"], masks["shrink_axis_mask"], offset)
        if len(dims) > 5 or any(d.shrink and d.stride < 0 for d in dims):
            continue  # LiteRT writes nothing for a shrunk axis with a negative stride (see strided_slice_dims)
        out = tuple(d.count for d in dims if not d.shrink)
        model = build_one_op("STRIDED_SLICE", [(shape, f32)], [(out, f32)], {**masks, "offset": offset},
                             consts={1: np.asarray(begin, np.int32), 2: np.asarray(end, np.int32),
                                     3: np.asarray(strides, np.int32)}, version=4)
        if any(d.shrink and d.count == 0 for d in dims):
            sg = load_model(model).main
            assert "out of range" in _registry().find(OpContext.of(sg, sg.operators[0]))
            continue  # TensorFlow rejects it; LiteRT's output is uninitialised memory
        x = rng.standard_normal(shape).astype(f32)
        try:
            ref = reference_outputs(model, [x])[0]
        except ModelError:
            continue  # a combination LiteRT itself rejects
        ours = run_one(model, [x])[0]
        assert ours.shape == ref.shape, (shape, begin, end, strides, masks, offset)
        np.testing.assert_array_equal(ours, ref, err_msg=str((shape, begin, end, strides, masks, offset)))
        compared += 1
    assert compared >= 40
