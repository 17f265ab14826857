"""MediaPipe custom-op kernels and the user custom-op registry, run through the real executor.

LiteRT cannot run these CUSTOM ops, so the references below are plain numpy transcriptions of
google-ai-edge/mediapipe, mediapipe/util/tflite/operations/:
max_pool_argmax.cc, max_unpooling.cc, transpose_conv_bias.cc, transform_tensor_bilinear.cc,
transform_landmarks.cc, landmarks_to_transform_matrix.cc (options parsing:
tensorflow/lite/delegates/gpu/common/mediapipe/*.cc). Where it can, a test also checks a property
that does not depend on our reading of the source (identity transforms, LiteRT's TRANSPOSE_CONV).
"""

from __future__ import annotations

import importlib.util
import math
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from flatbuffers import flexbuffers

from edgert.errors import UnsupportedOpError
from edgert.kernels.custom import PoolParams, TransposeConvParams, decode_pool_params
from edgert.kernels.registry import OpContext, default_registry
from edgert.model import load_model
from edgert.model.builder import ModelBuilder
from edgert.runtime.executor import Executor
from oneop import assert_close_float, assert_no_allocation, bind_one, reference_outputs, run_edgert, strided_like

REPO = Path(__file__).resolve().parents[1]
RNG = np.random.default_rng(20240604)
F32_LOWEST = np.float32(np.finfo(np.float32).min)


def rand(*shape, lo=-1.0, hi=1.0) -> np.ndarray:
    return RNG.uniform(lo, hi, shape).astype(np.float32)


def custom_model(code: str, inputs: list, outputs: list, options: bytes = b"", version: int = 1,
                 consts: dict | None = None) -> bytes:
    """One CUSTOM op; inputs are (shape) for graph inputs, consts maps position -> array."""
    b = ModelBuilder(description=f"one-op {code}")
    consts = consts or {}
    ins, graph_inputs = [], iter(inputs)
    for pos in range(len(inputs) + len(consts)):
        if pos in consts:
            ins.append(b.const(f"const_{pos}", consts[pos]))
        else:
            ins.append(b.input(f"input_{pos}", next(graph_inputs), np.float32))
    outs = [b.tensor(f"output_{i}", shape, np.float32) for i, shape in enumerate(outputs)]
    b.custom_op(code, ins, outs, custom_options=options, version=version)
    b.output(*outs)
    return b.build()


def flex(**values) -> bytes:
    """A flexbuffer map with int lists as typed vectors (what MediaPipe's converter writes)."""
    b = flexbuffers.Builder()
    with b.Map():
        for key, v in values.items():
            b.Key(key)
            if isinstance(v, (list, tuple)):
                b.TypedVectorFromElements([int(x) for x in v], flexbuffers.Type.INT)
            elif isinstance(v, str):
                b.String(v)
            elif isinstance(v, float):
                b.Float(v)
            else:
                b.Int(int(v))
    return bytes(b.Finish())


# ------------------------------------------------------------------ numpy references (MediaPipe source)


def compute_padding(stride, in_size, k, out_size) -> int:
    # tensorflow/lite/kernels/padding.h ComputePadding, dilation 1
    return max(0, int(((out_size - 1) * stride + k - in_size) / 2))


def pool_out(padding, size, k, stride) -> int:
    return (size + stride - 1) // stride if padding == "SAME" else (size - k + stride) // stride


def ref_max_pool_argmax(x, p: PoolParams):
    n, h, w, c = x.shape
    oh, ow = pool_out(p.padding, h, p.filter_h, p.stride_h), pool_out(p.padding, w, p.filter_w, p.stride_w)
    pt, pl = compute_padding(p.stride_h, h, p.filter_h, oh), compute_padding(p.stride_w, w, p.filter_w, ow)
    lo, hi = {"RELU": (0, np.inf), "RELU6": (0, 6), "RELU_N1_TO_1": (-1, 1)}.get(p.activation, (-np.inf, np.inf))
    vals = np.empty((n, oh, ow, c), np.float32)
    idx = np.empty((n, oh, ow, c), np.float32)
    for b in range(n):
        for oy in range(oh):
            for ox in range(ow):
                for ch in range(c):
                    y0, x0 = oy * p.stride_h - pt, ox * p.stride_w - pl
                    best, by, bx = F32_LOWEST, 0, 0
                    for fy in range(max(0, -y0), min(p.filter_h, h - y0)):
                        for fx in range(max(0, -x0), min(p.filter_w, w - x0)):
                            v = x[b, y0 + fy, x0 + fx, ch]
                            if v > best:
                                best, by, bx = v, fy, fx
                    vals[b, oy, ox, ch] = np.float32(min(max(best, lo), hi))
                    idx[b, oy, ox, ch] = np.float32(by * p.filter_w + bx) + np.float32(0.1)
    return vals, idx


def ref_max_unpool(x, ind, p: PoolParams):
    n, h, w, c = x.shape
    oh, ow = h * p.filter_h, w * p.filter_w
    pt, pl = compute_padding(p.stride_h, oh, p.filter_h, h), compute_padding(p.stride_w, ow, p.filter_w, w)
    out = np.zeros((n, oh, ow, c), np.float32)
    for b in range(n):
        for iy in range(h):
            for ix in range(w):
                for ch in range(c):
                    k = int(ind[b, iy, ix, ch])  # C++ float -> int truncates toward zero
                    q = int(k / p.filter_w)
                    r = k - q * p.filter_w  # C++ '%' keeps the dividend's sign
                    oy, ox = iy * p.stride_h - pt + q, ix * p.stride_w - pl + r
                    if 0 <= ox < ow and 0 <= oy < oh:
                        out[b, oy, ox, ch] = x[b, iy, ix, ch]
    return out


def ref_transpose_conv_bias(x, wt, bias, p: TransposeConvParams):
    n, h, w, _ = x.shape
    o, kh, kw, _ = wt.shape
    ph = max(0, kh - (h - 1) % p.stride_h - 1) if p.padding == "SAME" else 0
    pw = max(0, kw - (w - 1) % p.stride_w - 1) if p.padding == "SAME" else 0
    oh, ow = p.stride_h * (h - 1) + kh - ph, p.stride_w * (w - 1) + kw - pw
    out = np.broadcast_to(bias.astype(np.float64), (n, oh, ow, o)).copy()
    for b in range(n):
        for iy in range(h):
            for ix in range(w):
                for fy in range(kh):
                    for fx in range(kw):
                        oy, ox = iy * p.stride_h - ph // 2 + fy, ix * p.stride_w - pw // 2 + fx
                        if 0 <= oy < oh and 0 <= ox < ow:
                            out[b, oy, ox] += wt[:, fy, fx, :].astype(np.float64) @ x[b, iy, ix].astype(np.float64)
    return out.astype(np.float32)


def ref_transform_tensor_bilinear(x, m, out_hw, version):
    h, w, c = x.shape[1:]
    m = m.reshape(-1).astype(np.float32)
    xt, yt = m[0:4].copy(), m[4:8].copy()
    if version == 2:  # align-corners correction, in double as the C++
        xt[3] = np.float32(float(xt[3]) + (float(xt[0]) * 0.5 + float(xt[1]) * 0.5 - 0.5))
        yt[3] = np.float32(float(yt[3]) + (float(yt[0]) * 0.5 + float(yt[1]) * 0.5 - 0.5))
    out = np.zeros((1, *out_hw, c), np.float32)

    def dot(t, a, b):  # DotProduct(float4, (x, y, 0, 1)) in float
        return t[0] * np.float32(a) + t[1] * np.float32(b) + t[2] * np.float32(0) + t[3] * np.float32(1)

    def read(yy, xx):
        return x[0, yy, xx].astype(np.float64) if 0 <= yy < h and 0 <= xx < w else np.zeros(c)

    for oy in range(out_hw[0]):
        for ox in range(out_hw[1]):
            tx, ty = dot(xt, ox, oy), dot(yt, ox, oy)
            if tx < 0 or tx > w - 1 or ty < 0 or ty > h - 1:
                continue
            fx, fy = math.floor(tx), math.floor(ty)
            rc, lc = float(tx - fx), float(ty - fy)
            upper = (1 - rc) * read(fy, fx) + rc * read(fy, fx + 1)
            lower = (1 - rc) * read(fy + 1, fx) + rc * read(fy + 1, fx + 1)
            out[0, oy, ox] = lc * lower + (1 - lc) * upper
    return out


def ref_transform_landmarks(lm, m, dims, scale):
    m = m.reshape(-1).astype(np.float64)
    pts = lm.astype(np.float64).reshape(-1, dims)
    out = pts.copy()
    out[:, 0] = m[0] * pts[:, 0] + m[1] * pts[:, 1] + m[3] * scale
    out[:, 1] = m[4] * pts[:, 0] + m[5] * pts[:, 1] + m[7] * scale
    return out.reshape(lm.shape).astype(np.float32)


def pairs(subset):
    flat = list(subset) + ([subset[-1]] if len(subset) % 2 else [])
    return [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]


def ref_l2m_v1(lm, opts):
    pts = lm.reshape(-1, 3).astype(np.float64)
    (lx, ly), (rx, ry) = pts[opts["left_rotation_idx"], :2], pts[opts["right_rotation_idx"], :2]
    alpha = -math.atan((ry - ly) / (rx - lx))
    ca, sa = math.cos(alpha), math.sin(alpha)
    sel = np.array([pts[i, :2] for pr in pairs(opts["subset"]) for i in pr])
    rot = np.stack([sel[:, 0] * ca - sel[:, 1] * sa, sel[:, 0] * sa + sel[:, 1] * ca], 1)
    mx, mn = np.maximum(rot.max(0), -100000), np.minimum(rot.min(0), 100000)
    bbox = (mx - mn) * opts["bbox_size_multiplier"]
    rng = opts["landmarks_range"]
    mid = (mx + mn) / 2
    cn, sn = math.cos(-alpha), math.sin(-alpha)
    rmid = (mid[0] * cn - mid[1] * sn, mid[0] * sn + mid[1] * cn)
    scale = np.diag([bbox[0] / rng, bbox[1] / rng, 1.0])
    rotation = np.array([[cn, -sn, rmid[0] / rng * 2 - 1], [sn, cn, rmid[1] / rng * 2 - 1], [0, 0, 1]])
    (ih, iw), (oh, ow) = opts["input_hw"], opts["output_hw"]
    to_rel = np.array([[2 / (ow - 1), 0, -1], [0, 2 / (oh - 1), -1], [0, 0, 1]])
    to_abs = np.array([[(iw - 1) / 2, 0, (iw - 1) / 2], [0, (ih - 1) / 2, (ih - 1) / 2], [0, 0, 1]])
    itm = to_abs @ rotation @ scale @ to_rel
    out = np.zeros((4, 4))
    out[0, [0, 1, 3]] = itm[0]
    out[1, [0, 1, 3]] = itm[1]
    out[2, :3] = itm[2]
    out[3, 3] = 1
    return out.reshape(1, 4, 4).astype(np.float32)


def ref_l2m_v2(lm, opts):
    pts = lm.reshape(-1, 3).astype(np.float64)
    left, right = pts[opts["left_rotation_idx"]], pts[opts["right_rotation_idx"]]
    r = opts["target_rotation_radians"] - math.atan2(right[1] - left[1], right[0] - left[0])
    rot = np.array([[math.cos(r), -math.sin(r)], [math.sin(r), math.cos(r)]])
    sel = np.array([pts[i, :2] for pr in pairs(opts["subset_idxs"]) for i in pr]) @ rot.T
    mx, mn = sel.max(0), sel.min(0)
    crop_w, crop_h = mx - mn
    center = rot.T @ ((mx + mn) / 2)  # rotation by -r
    rr = -r

    def m4(a):
        return np.array(a, np.float64).reshape(4, 4)

    t = m4([1, 0, 0, center[0], 0, 1, 0, center[1], 0, 0, 1, 0, 0, 0, 0, 1])
    t = t @ m4([math.cos(rr), -math.sin(rr), 0, 0, math.sin(rr), math.cos(rr), 0, 0, 0, 0, 1, 0, 0, 0, 0, 1])
    sx = opts["scale_x"] * crop_w / opts["output_width"]
    sy = opts["scale_y"] * crop_h / opts["output_height"]
    t = t @ np.diag([sx, sy, 1, 1])
    t = t @ m4([1, 0, 0, -opts["output_width"] / 2, 0, 1, 0, -opts["output_height"] / 2, 0, 0, 1, 0, 0, 0, 0, 1])
    return t.reshape(1, 4, 4).astype(np.float32)


# ------------------------------------------------------------------ options decoding


def test_pool_params_round_trip_and_layout():
    p = PoolParams("SAME", stride_w=2, stride_h=3, filter_w=4, filter_h=5, activation="RELU6")
    data = p.pack()
    assert len(data) == 40  # sizeof(TfLitePoolParams): 6 int32 + TfLitePaddingValues (4 int32)
    assert data[:24] == np.array([1, 2, 3, 4, 5, 3], "<i4").tobytes()
    assert decode_pool_params(data) == p
    assert decode_pool_params(data[:24]) == p  # struct without the computed padding tail


# ------------------------------------------------------------------ MaxPoolingWithArgmax2D

ARGMAX_CASES = {
    "2x2-s2-valid": ((1, 8, 8, 5), PoolParams("VALID", 2, 2, 2, 2)),
    "3x3-s2-same-odd": ((2, 9, 7, 3), PoolParams("SAME", 2, 2, 3, 3, "RELU6")),
    "3x2-s1-same": ((1, 5, 6, 4), PoolParams("SAME", 1, 1, 2, 3, "RELU")),
    "stride-gt-filter": ((1, 7, 7, 2), PoolParams("SAME", 3, 3, 2, 2, "RELU_N1_TO_1")),
}


@pytest.mark.parametrize("name", ARGMAX_CASES)
def test_max_pool_argmax_matches_mediapipe(name):
    shape, p = ARGMAX_CASES[name]
    # Values on a coarse grid so windows contain ties: the first maximum (filter_y, then x) must win.
    x = (np.round(rand(*shape) * 3) * 2).astype(np.float32)
    vals, idx = ref_max_pool_argmax(x, p)
    model = custom_model("MaxPoolingWithArgmax2D", [shape], [vals.shape, idx.shape], p.pack())
    ours = run_edgert(model, [x])
    assert_close_float(ours[0], vals)
    np.testing.assert_array_equal(ours[1], idx)


def test_max_pool_argmax_strided_outputs_and_no_allocation():
    shape, p = ARGMAX_CASES["3x3-s2-same-odd"]
    x = rand(*shape, lo=-8, hi=8)
    vals, idx = ref_max_pool_argmax(x, p)
    model = custom_model("MaxPoolingWithArgmax2D", [shape], [vals.shape, idx.shape], p.pack())
    (wv, v), (wi, i) = strided_like(vals.shape), strided_like(idx.shape)
    fn, args, _, entry, _ = bind_one(model, [x], outs=[v, i])
    assert entry.strided_output
    fn(*args)
    assert_close_float(v, vals)
    np.testing.assert_array_equal(i, idx)
    assert np.isnan(wv[..., :2]).all() and np.isnan(wi[..., -3:]).all()  # nothing outside the views
    assert_no_allocation(fn, args)


# ------------------------------------------------------------------ MaxUnpooling2D

UNPOOL_CASES = {
    "2x2-s2": ((1, 4, 5, 3), PoolParams("SAME", 2, 2, 2, 2)),
    "3x3-s2-overlap": ((2, 3, 4, 2), PoolParams("VALID", 2, 2, 3, 3)),
    "2x2-s3-padded": ((1, 4, 4, 3), PoolParams("SAME", 3, 3, 2, 2)),
}


@pytest.mark.parametrize("name", UNPOOL_CASES)
def test_max_unpooling_matches_mediapipe(name):
    shape, p = UNPOOL_CASES[name]
    x = rand(*shape)
    k = p.filter_h * p.filter_w
    # Valid argmax values (k + 0.1 as MaxPoolingWithArgmax2D writes them), plus some out of range
    # and negative ones, which must be skipped or land where C++ truncation puts them.
    ind = (RNG.integers(0, k, shape) + 0.1).astype(np.float32)
    ind.flat[::7] = np.float32(k * 3 + 0.5)
    ind.flat[3::11] = np.float32(-1.7)
    want = ref_max_unpool(x, ind, p)
    model = custom_model("MaxUnpooling2D", [shape, shape], [want.shape], p.pack())
    ours = run_edgert(model, [x, ind])
    np.testing.assert_array_equal(ours[0], want)
    wide, view = strided_like(want.shape)
    fn, args, *_ = bind_one(model, [x, ind], outs=[view])
    fn(*args)
    np.testing.assert_array_equal(view, want)
    assert np.isnan(wide[..., :2]).all()
    assert_no_allocation(fn, args)


def test_argmax_then_unpool_model_restores_window_maxima():
    """The segmentation-decoder pattern: pool with argmax, then unpool with those indices."""
    p = PoolParams("VALID", 2, 2, 2, 2)
    x = rand(1, 6, 8, 4)
    b = ModelBuilder(description="argmax + unpool")
    xi = b.input("x", x.shape, np.float32)
    pooled, where = b.tensor("pooled", (1, 3, 4, 4), np.float32), b.tensor("where", (1, 3, 4, 4), np.float32)
    y = b.tensor("y", x.shape, np.float32)
    b.custom_op("MaxPoolingWithArgmax2D", [xi], [pooled, where], p.pack())
    b.custom_op("MaxUnpooling2D", [pooled, where], [y], p.pack())
    b.output(y)
    (ours,) = run_edgert(b.build(), [x])
    windows = x.reshape(1, 3, 2, 4, 2, 4)
    is_max = windows == windows.max(axis=(2, 4), keepdims=True)
    np.testing.assert_array_equal(ours, np.where(is_max, windows, 0).reshape(x.shape))


# ------------------------------------------------------------------ Convolution2DTransposeBias

TCB_CASES = {
    "same-s2-k3": ((1, 5, 4, 3), 6, 3, 3, TransposeConvParams("SAME", 2, 2)),
    "same-s2-k4": ((2, 4, 4, 5), 3, 4, 4, TransposeConvParams("SAME", 2, 2)),
    "valid-s2-k2": ((1, 3, 5, 4), 7, 2, 2, TransposeConvParams("VALID", 2, 2)),
    "valid-s1-k3x2": ((1, 4, 3, 2), 5, 3, 2, TransposeConvParams("VALID", 1, 1)),
    "same-s3x1-k2": ((1, 3, 4, 6), 4, 2, 3, TransposeConvParams("SAME", 1, 3)),
}


@pytest.mark.parametrize("name", TCB_CASES)
def test_transpose_conv_bias_matches_mediapipe(name):
    shape, o, kh, kw, p = TCB_CASES[name]
    x, wt, bias = rand(*shape), rand(o, kh, kw, shape[3]), rand(o)
    want = ref_transpose_conv_bias(x, wt, bias, p)
    model = custom_model("Convolution2DTransposeBias", [shape], [want.shape], p.pack(), consts={1: wt, 2: bias})
    assert_close_float(run_edgert(model, [x])[0], want)


def test_transpose_conv_bias_equals_litert_transpose_conv_with_bias():
    """Where TFLite's TRANSPOSE_CONV pads the same way, the two ops agree (LiteRT is the oracle)."""
    p = TransposeConvParams("SAME", 2, 2)
    x, wt, bias = rand(1, 5, 5, 4), rand(6, 3, 3, 4), rand(6)
    model = custom_model("Convolution2DTransposeBias", [x.shape], [(1, 9, 9, 6)], p.pack(), consts={1: wt, 2: bias})
    b = ModelBuilder()
    shape_t, w_t, b_t = b.const("shape", np.array([1, 9, 9, 6], np.int32)), b.const("w", wt), b.const("b", bias)
    xi, y = b.input("x", x.shape, np.float32), b.tensor("y", (1, 9, 9, 6), np.float32)
    b.op("TRANSPOSE_CONV", [shape_t, w_t, xi, b_t], [y], {"padding": "SAME", "stride_w": 2, "stride_h": 2}, version=3)
    b.output(y)
    assert_close_float(run_edgert(model, [x])[0], reference_outputs(b.build(), [x])[0])


def test_transpose_conv_bias_strided_output_and_no_allocation():
    shape, o, kh, kw, p = TCB_CASES["same-s2-k3"]
    x, wt, bias = rand(*shape), rand(o, kh, kw, shape[3]), rand(o)
    want = ref_transpose_conv_bias(x, wt, bias, p)
    model = custom_model("Convolution2DTransposeBias", [shape], [want.shape], p.pack(), consts={1: wt, 2: bias})
    _, view = strided_like(want.shape)
    fn, args, *_ = bind_one(model, [x], outs=[view])
    fn(*args)
    assert_close_float(view, want)
    assert_no_allocation(fn, args)


# ------------------------------------------------------------------ TransformTensorBilinear


def affine(scale=1.0, angle=0.0, tx=0.0, ty=0.0) -> np.ndarray:
    c, s = math.cos(angle) * scale, math.sin(angle) * scale
    return np.array([[c, -s, 0, tx], [s, c, 0, ty], [0, 0, 1, 0], [0, 0, 0, 1]], np.float32).reshape(1, 4, 4)


TTB_CASES = {
    "v2-rotate-shrink": (2, (1, 9, 11, 3), (7, 6), affine(1.3, 0.4, 1.5, -0.5)),
    "v2-zoom-in": (2, (1, 6, 6, 4), (10, 12), affine(0.45, -0.2, 0.7, 1.1)),
    "v1-shift-partly-outside": (1, (1, 8, 7, 2), (8, 7), affine(1.0, 0.0, 2.25, -1.5)),
    "v1-general": (1, (1, 10, 9, 5), (5, 8), affine(1.7, 2.5, 8.0, 6.0)),
}


@pytest.mark.parametrize("name", TTB_CASES)
def test_transform_tensor_bilinear_matches_mediapipe(name):
    version, shape, out_hw, m = TTB_CASES[name]
    x = rand(*shape)
    want = ref_transform_tensor_bilinear(x, m, out_hw, version)
    assert np.count_nonzero(want) and np.count_nonzero(want == 0)  # the case has pixels in and out of bounds
    options = flex(output_height=out_hw[0], output_width=out_hw[1]) if version == 2 else \
        flex(mode="bilinear", output_size=list(out_hw))
    model = custom_model("TransformTensorBilinear", [shape, m.shape], [want.shape], options, version=version)
    assert_close_float(run_edgert(model, [x, m])[0], want)


@pytest.mark.parametrize("version", [1, 2])
def test_transform_tensor_bilinear_identity_reproduces_input(version):
    x = rand(1, 5, 7, 3)
    model = custom_model("TransformTensorBilinear", [x.shape, (1, 4, 4)], [x.shape],
                         flex(output_height=5, output_width=7), version=version)
    np.testing.assert_array_equal(run_edgert(model, [x, affine()])[0], x)


def test_transform_tensor_bilinear_strided_output_and_no_allocation():
    version, shape, out_hw, m = TTB_CASES["v2-rotate-shrink"]
    x = rand(*shape)
    want = ref_transform_tensor_bilinear(x, m, out_hw, version)
    model = custom_model("TransformTensorBilinear", [shape, m.shape], [want.shape], b"", version=version)
    _, view = strided_like(want.shape)
    fn, args, *_ = bind_one(model, [x, m], outs=[view])
    fn(*args)
    assert_close_float(view, want)
    assert_no_allocation(fn, args)


# ------------------------------------------------------------------ TransformLandmarks

TL_CASES = {
    "v1-dims3-scale": (1, (1, 1, 1, 3 * 7), flex(dimensions=3, scale=2.5), 3, 2.5),
    "v1-dims2-grid": (1, (1, 2, 3, 2 * 4), flex(dimensions=2, scale=1.0), 2, 1.0),
    "v2-dims3": (2, (1, 11, 3), b"", 3, 1.0),
    "v2-dims2": (2, (1, 6, 2), b"", 2, 1.0),
}


@pytest.mark.parametrize("name", TL_CASES)
def test_transform_landmarks_matches_mediapipe(name):
    version, shape, options, dims, scale = TL_CASES[name]
    lm, m = rand(*shape, lo=0, hi=200), affine(0.8, 0.3, 12.0, -7.0)
    want = ref_transform_landmarks(lm, m, dims, scale)
    model = custom_model("TransformLandmarks", [shape, m.shape], [shape], options, version=version)
    assert_close_float(run_edgert(model, [lm, m])[0], want)


def test_transform_landmarks_in_place_and_no_allocation():
    version, shape, options, dims, scale = TL_CASES["v1-dims3-scale"]
    lm, m = rand(*shape, lo=0, hi=200), affine(1.2, -0.7, 3.0, 4.0)
    want = ref_transform_landmarks(lm, m, dims, scale)
    model = custom_model("TransformLandmarks", [shape, m.shape], [shape], options, version=version)
    g = load_model(model)
    assert default_registry().info(OpContext.of(g.main, g.main.operators[0])).inplace == (0,)
    buf = lm.copy()
    fn, args, *_ = bind_one(model, [buf, m], outs=[buf])
    fn(*args)
    assert_close_float(buf, want)
    buf[...] = lm
    assert_no_allocation(fn, args)


@pytest.mark.parametrize("name", ["v1-dims2-grid", "v2-dims3"])
def test_transform_landmarks_strided_output(name):
    version, shape, options, dims, scale = TL_CASES[name]
    lm, m = rand(*shape, lo=0, hi=200), affine(0.8, 0.3, 12.0, -7.0)
    model = custom_model("TransformLandmarks", [shape, m.shape], [shape], options, version=version)
    wide, view = strided_like(shape)
    fn, args, _, entry, _ = bind_one(model, [lm, m], outs=[view])
    assert entry.strided_output
    fn(*args)
    assert_close_float(view, ref_transform_landmarks(lm, m, dims, scale))
    assert np.isnan(wide[..., :2]).all() and np.isnan(wide[..., -3:]).all()


# ------------------------------------------------------------------ Landmarks2TransformMatrix

L2M_V1 = dict(input_hw=[192, 256], output_hw=[64, 48], dimensions=3, landmarks_range=256,
              bbox_size_multiplier=1.5, left_rotation_idx=2, right_rotation_idx=5, subset=[0, 1, 3, 4, 6, 7, 8])
L2M_V2 = dict(subset_idxs=[0, 1, 2, 3, 4, 5, 6, 7, 9], left_rotation_idx=1, right_rotation_idx=6,
              target_rotation_radians=0.25, output_height=48, output_width=64, scale_x=1.4, scale_y=1.2)


def l2m_options(values: dict) -> bytes:
    return flex(**{k: float(v) if isinstance(v, float) else v for k, v in values.items()})


@pytest.mark.parametrize("version", [1, 2])
def test_landmarks_to_transform_matrix_matches_mediapipe(version):
    lm = rand(1, 10, 3, lo=20, hi=230)
    opts = L2M_V1 if version == 1 else L2M_V2
    shape = (1, 1, 1, 30) if version == 1 else (1, 10, 3)
    want = (ref_l2m_v1 if version == 1 else ref_l2m_v2)(lm, opts)
    model = custom_model("Landmarks2TransformMatrix", [shape], [(1, 4, 4)], l2m_options(opts), version=version)
    ours = run_edgert(model, [lm.reshape(shape)])[0]
    assert_close_float(ours, want)
    fn, args, *_ = bind_one(model, [lm.reshape(shape)])
    assert_no_allocation(fn, args)


def test_landmarks_to_transform_matrix_v2_maps_crop_center_to_landmark_box_center():
    """Axis-aligned box, no rotation: the crop's center pixel maps to the box center, its corners to the scaled box."""
    pts = np.array([[10, 20, 0], [50, 20, 0], [50, 80, 0], [10, 80, 0]], np.float32)
    opts = dict(subset_idxs=[0, 1, 2, 3], left_rotation_idx=0, right_rotation_idx=1, target_rotation_radians=0.0,
                output_height=30, output_width=20, scale_x=1.0, scale_y=1.0)
    model = custom_model("Landmarks2TransformMatrix", [(1, 4, 3)], [(1, 4, 4)], l2m_options(opts), version=2)
    m = run_edgert(model, [pts[None]])[0][0].astype(np.float64)
    np.testing.assert_allclose(m @ [10, 15, 0, 1], [30, 50, 0, 1], atol=1e-4)  # output center -> box center
    np.testing.assert_allclose(m @ [0, 0, 0, 1], [10, 20, 0, 1], atol=1e-4)  # output corner -> box corner


def test_crop_pipeline_matrix_feeds_transform_tensor():
    """Attention-mesh style: Landmarks2TransformMatrix v2 -> TransformTensorBilinear v2 inside one model."""
    lm = rand(1, 10, 3, lo=2, hi=14)
    image = rand(1, 16, 16, 3)
    b = ModelBuilder(description="crop")
    li, xi = b.input("landmarks", lm.shape, np.float32), b.input("image", image.shape, np.float32)
    mat, crop = b.tensor("matrix", (1, 4, 4), np.float32), b.tensor("crop", (1, 8, 8, 3), np.float32)
    opts = dict(L2M_V2, output_height=8, output_width=8)
    b.custom_op("Landmarks2TransformMatrix", [li], [mat], l2m_options(opts), version=2)
    b.custom_op("TransformTensorBilinear", [xi, mat], [crop], flex(output_height=8, output_width=8), version=2)
    b.output(crop)
    (ours,) = run_edgert(b.build(), [lm, image])
    # Our matrix kernel is checked above; here the reference transform uses the reference matrix.
    want = ref_transform_tensor_bilinear(image, ref_l2m_v2(lm, opts), (8, 8), 2)
    assert np.count_nonzero(want)
    assert_close_float(ours, want)


# ------------------------------------------------------------------ load-time errors


def test_unregistered_custom_op_fails_at_load_naming_it():
    model = custom_model("MyUnknownOp", [(1, 4)], [(1, 4)], b"")
    with pytest.raises(UnsupportedOpError, match="MyUnknownOp"):
        Executor({"m": load_model(model)})


def test_bad_custom_options_fail_at_load_with_reason():
    model = custom_model("MaxPoolingWithArgmax2D", [(1, 4, 4, 1)], [(1, 2, 2, 1), (1, 2, 2, 1)], b"\x01\x00")
    with pytest.raises(UnsupportedOpError, match="MaxPoolingWithArgmax2D.*TfLitePoolParams needs at least 24"):
        Executor({"m": load_model(model)})
    bad_shape = custom_model("MaxPoolingWithArgmax2D", [(1, 4, 4, 1)], [(1, 3, 3, 1), (1, 3, 3, 1)],
                             PoolParams("VALID", 2, 2, 2, 2).pack())
    with pytest.raises(UnsupportedOpError, match=r"does not match computed \(1, 2, 2, 1\)"):
        Executor({"m": load_model(bad_shape)})


# ------------------------------------------------------------------ user-registered kernels (docs/custom-ops.md)


def doc_example(tmp_path: Path):
    """The first python block of docs/custom-ops.md, imported as a module from a real file (numba caches it)."""
    text = (REPO / "docs" / "custom-ops.md").read_text()
    block = re.search(r"```python\n(.*?)```", text, re.S)
    assert block, "docs/custom-ops.md lost its example"
    path = tmp_path / "custom_op_example.py"
    path.write_text(block.group(1))
    spec = importlib.util.spec_from_file_location("custom_op_example", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(spec.name, None)
    return module


def test_doc_example_user_kernel_runs_through_executor(tmp_path):
    example = doc_example(tmp_path)
    ours, expected = example.demo()
    np.testing.assert_array_equal(ours, expected)
    assert ours.min() == np.float32(-0.5) and ours.max() == np.float32(1.0)
    model = load_model(example.clip_model((2, 3), -1.0, 1.0))
    with pytest.raises(UnsupportedOpError, match="ClipByValue"):
        Executor({"m": model})  # the default registry does not know it
    bad = load_model(example.clip_model((2, 3), -1.0, 1.0))
    bad.main.operators[0].custom_options = b"not a flexbuffer"
    with pytest.raises(UnsupportedOpError, match='"min" and "max"'):
        Executor({"m": bad}, registry=example.make_registry())
