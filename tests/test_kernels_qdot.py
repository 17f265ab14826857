"""int8 CONV_2D through integer dot products (edgert/kernels/qdot.py) vs LiteRT BUILTIN_REF.

Rule that holds: outputs EXACTLY equal to the reference (max_off_by_one_fraction=0): the kernel's
int32 sums are the reference accumulator (qdot.py's docstring), requantized the same way.
The path is chosen only on a CPU with AVX512-VNNI; these tests force the choice (conv.use_dot_product),
so on any other CPU they run the intrinsic's plain-vector-IR form, which must give the same bits.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgert.kernels import conv
from edgert.kernels.qdot import MAX_ROW_BUFFER, dot_fits, qconv_dot
from edgert.model.reader import load_model
from edgert.runtime.executor import Executor
from oneop import assert_close_quant, assert_no_allocation, bind_one, reference_outputs, run_edgert, run_one
from test_kernels_conv_quant import CONV_CASES, RNG, assert_exact, conv_model, rand


@pytest.fixture
def dot_path(monkeypatch):
    monkeypatch.setattr(conv, "use_dot_product", lambda: True)


DOT_CASES = {
    # (in_shape, o, kh, kw, kwargs)
    "3x3-c16-o16-relu": ((1, 9, 11, 16), 16, 3, 3, dict(act="RELU")),
    "3x3-s2-c3-o8-relu6": ((1, 13, 12, 3), 8, 3, 3, dict(stride=(2, 2), act="RELU6")),  # stem: 9-byte rows
    "10x4-s2-c1-o64": ((1, 49, 10, 1), 64, 10, 4, dict(stride=(2, 2), padding="SAME")),  # DS-CNN stem
    "1x1-narrow-c64-o64": ((1, 25, 5, 64), 64, 1, 1, dict()),  # one long row
    "1x1-c8-o48-two-images": ((2, 6, 7, 8), 48, 1, 1, dict(act="RELU_N1_TO_1")),
    "1x1-c5-o17": ((1, 4, 9, 5), 17, 1, 1, dict()),  # 5-byte rows, 17 outputs: a 1-lane block
    "3x3-c40-o33-valid": ((1, 7, 8, 40), 33, 3, 3, dict(padding="VALID")),
    "5x3-s2x1-c13-o7": ((1, 12, 9, 13), 7, 5, 3, dict(stride=(2, 1), act="RELU6")),
    "dilated-c8": ((1, 12, 11, 8), 20, 3, 2, dict(dilation=(2, 3), padding="SAME")),  # 4-byte groups per tap
    "dilated-rows-c3": ((1, 10, 9, 3), 12, 3, 3, dict(dilation=(2, 1))),  # dh only: rows still contiguous
    "per-tensor": ((1, 7, 7, 6), 24, 3, 3, dict(per_channel=False)),
    "kernel-bigger-than-image": ((1, 2, 3, 9), 4, 5, 5, dict()),
    "6-pixels": ((1, 2, 3, 16), 32, 3, 3, dict()),
}


def _model(name, dtype=np.int8, **extra):
    in_shape, o, kh, kw, kw_ = DOT_CASES[name]
    return conv_model(dtype, in_shape, o, kh, kw, **dict(kw_, **extra)), in_shape


@pytest.mark.parametrize("name", DOT_CASES)
def test_dot_path_taken_and_exact(name, dot_path):
    model, in_shape = _model(name)
    x = rand(np.int8, in_shape)
    assert bind_one(model, [x]).fn is qconv_dot
    assert_exact(model, [x])


@pytest.mark.parametrize("name", CONV_CASES)
def test_dot_path_exact_on_every_conv_case(name, dot_path):
    # The older paths' cases: whichever of them the dot path takes must agree too.
    in_shape, o, kh, kw, kw_ = CONV_CASES[name]
    model = conv_model(np.int8, in_shape, o, kh, kw, **kw_)
    assert_exact(model, [rand(np.int8, in_shape)])


@pytest.mark.parametrize("name", ["3x3-c16-o16-relu", "1x1-narrow-c64-o64", "10x4-s2-c1-o64"])
def test_dot_path_saturates_at_range_edges(name, dot_path):
    # multiplier far above 1 (positive shift), inputs and weights only at the range ends
    model, in_shape = _model(name, s_in=0.5, s_out=0.0005, zp_in=0, zp_out=0, act="NONE")
    x = np.where(RNG.integers(0, 2, in_shape) == 1, 127, -128).astype(np.int8)
    ref = assert_exact(model, [x])
    assert (ref == 127).any() and (ref == -128).any()


@pytest.mark.parametrize("zp_in", [-128, 127, 0])
def test_dot_path_extreme_input_zero_points(zp_in, dot_path):
    # padding bytes are 128 + zp_in: 0 and 255 at the ends of the byte range
    model, in_shape = _model("3x3-c16-o16-relu", zp_in=zp_in)
    assert_exact(model, [rand(np.int8, in_shape)])


@pytest.mark.parametrize("name", ["3x3-c16-o16-relu", "1x1-narrow-c64-o64", "1x1-c5-o17"])
def test_dot_path_strided_output(name, dot_path):
    model, in_shape = _model(name)
    x = rand(np.int8, in_shape)
    out = run_one(model, [x], strided=True)[0]
    assert_close_quant(np.array(out), reference_outputs(model, [x])[0], 0.0)
    assert (out.base[..., :2] == 77).all() and (out.base[..., -3:] == 77).all()


def test_dot_path_reads_channel_sliced_input(dot_path):
    model, in_shape = _model("1x1-narrow-c64-o64")
    x = rand(np.int8, in_shape)
    wide = rand(np.int8, in_shape[:3] + (in_shape[3] + 6,))
    wide[..., 3:-3] = x
    fn, args, outs, *_ = bind_one(model, [wide[..., 3:-3]])
    assert fn is qconv_dot
    fn(*args)
    assert_close_quant(outs[0], reference_outputs(model, [x])[0], 0.0)


def test_dot_path_allocates_nothing(dot_path):
    model, in_shape = _model("3x3-c40-o33-valid")
    fn, args, *_ = bind_one(model, [rand(np.int8, in_shape)])
    assert fn is qconv_dot
    assert_no_allocation(fn, args, calls=3)


def test_dot_path_not_taken_where_it_cannot_or_should_not_run(dot_path):
    # dilated columns with C % 4 != 0 (4-byte groups would straddle taps); too few pixels;
    # uint8 (uint8 filters); rows beyond the ring: each falls back to the older paths, still exact.
    cases = [
        conv_model(np.int8, (1, 10, 11, 5), 8, 3, 3, dilation=(1, 2)),
        conv_model(np.int8, (1, 1, 3, 16), 16, 1, 1),
        conv_model(np.uint8, (1, 6, 6, 8), 16, 3, 3, per_channel=False, zp_in=131, zp_out=120, zp_w=140),
    ]
    for model in cases:
        sg = load_model(model).main
        t = sg.tensors[sg.operators[0].inputs[0]]
        x = rand(t.dtype.type, t.shape)
        assert bind_one(model, [x]).fn is not qconv_dot
        assert_exact(model, [x])
    assert not dot_fits(16, 3, 3, 64, 2000, 2000, 1, 1, 1)  # 3 rows of 2002 x 64 bytes > MAX_ROW_BUFFER
    assert 3 * 2002 * 64 > MAX_ROW_BUFFER


def test_dot_and_older_paths_agree_on_a_real_model(monkeypatch):
    # a whole shared-model run (tests/data): dot on vs off, equal bit for bit
    from pathlib import Path

    path = Path(__file__).parent / "data" / "ic_resnet8_int8.tflite"
    if not path.exists():
        pytest.skip("tests/data/ic_resnet8_int8.tflite not present")
    x = rand(np.int8, (1, 32, 32, 3))
    monkeypatch.setattr(conv, "use_dot_product", lambda: True)
    on = run_edgert(path.read_bytes(), [x])[0]
    monkeypatch.setattr(conv, "use_dot_product", lambda: False)
    off = run_edgert(path.read_bytes(), [x])[0]
    np.testing.assert_array_equal(on, off)


# ------------------------------------------------ qgemv: one output pixel / FC row at a time

GEMV_CONV_CASES = {
    # streaming wake-word shapes: the whole window is the filter, one output pixel
    "5x1-c40-o32-valid": ((1, 5, 1, 40), 32, 5, 1, dict(padding="VALID")),  # K = 200: 3 chunks + 8
    "1x1-c64-o64": ((1, 1, 1, 64), 64, 1, 1, dict(act="RELU")),  # K = 64: one chunk, 8 blocks of 8
    "1x1-c32-o61": ((1, 1, 1, 32), 61, 1, 1, dict()),  # blocks of 8 and single rows
    "3x3-same-2x1-image": ((1, 2, 1, 9), 12, 3, 3, dict(act="RELU6")),  # padding taps, 2 pixels
    "1x1-c130-o5": ((1, 1, 3, 130), 5, 1, 1, dict(act="RELU_N1_TO_1")),  # 3 pixels
}


@pytest.mark.parametrize("name", GEMV_CONV_CASES)
def test_gemv_conv_taken_and_exact(name, dot_path):
    from edgert.kernels.qdot import qgemv

    in_shape, o, kh, kw, kw_ = GEMV_CONV_CASES[name]
    model = conv_model(np.int8, in_shape, o, kh, kw, **kw_)
    x = rand(np.int8, in_shape)
    assert bind_one(model, [x]).fn is qgemv
    assert_exact(model, [x])


def test_gemv_conv_saturates(dot_path):
    in_shape, o, kh, kw, kw_ = GEMV_CONV_CASES["5x1-c40-o32-valid"]
    model = conv_model(np.int8, in_shape, o, kh, kw, **dict(kw_, s_in=0.5, s_out=0.0005, zp_in=0, zp_out=0))
    x = np.where(RNG.integers(0, 2, in_shape) == 1, 127, -128).astype(np.int8)
    ref = assert_exact(model, [x])
    assert (ref == 127).any() and (ref == -128).any()


@pytest.mark.parametrize("name", ["per-channel-relu", "no-bias", "flattened-4d-input", "relu-n1-to-1"])
def test_gemv_fully_connected_exact(name, dot_path):
    # LiteRT rounds int8 FULLY_CONNECTED once (the `single` flag): exact equality checks that too
    from edgert.kernels.qdot import qgemv
    from test_kernels_conv_quant import FC_CASES, fc_model

    batch, i, o, kw_ = FC_CASES[name]
    model, in_shape = fc_model(np.int8, batch, i, o, **kw_)
    x = rand(np.int8, in_shape)
    assert bind_one(model, [x]).fn is qgemv
    assert_exact(model, [x])


def test_gemv_not_taken_for_filter_zero_point(dot_path):
    from edgert.kernels.qdot import qgemv
    from test_kernels_conv_quant import FC_CASES, fc_model

    batch, i, o, kw_ = FC_CASES["per-tensor-int8-filter-zp"]
    model, in_shape = fc_model(np.int8, batch, i, o, **kw_)
    x = rand(np.int8, in_shape)
    assert bind_one(model, [x]).fn is not qgemv
    assert_exact(model, [x])


def test_gemv_allocates_nothing(dot_path):
    in_shape, o, kh, kw, kw_ = GEMV_CONV_CASES["5x1-c40-o32-valid"]
    fn, args, *_ = bind_one(conv_model(np.int8, in_shape, o, kh, kw, **kw_), [rand(np.int8, in_shape)])
    assert_no_allocation(fn, args, calls=3)


# ------------------------------------------------ chains of int8 FULLY_CONNECTED (qfc_chain)


def _qchain_model(widths, rows=1, acts=None, per_channel=True, expose=(), seed=0):
    from edgert.model.builder import ModelBuilder, quant

    rng = np.random.default_rng(seed)
    n = len(widths) - 1
    acts = acts or ["RELU"] * n
    b = ModelBuilder()
    s_in, zp_in = 0.05, 3
    cur = b.input("x", (rows, widths[0]), np.int8, quant(s_in, zp_in))
    outs = []
    for layer in range(n):
        i, o = widths[layer], widths[layer + 1]
        s_w = rng.uniform(0.002, 0.02, o) if per_channel else np.array([0.01])
        w = b.const(f"w{layer}", rng.integers(-127, 128, (o, i)).astype(np.int8),
                    quant(list(s_w) if per_channel else float(s_w[0]), [0] * len(s_w), 0))
        bias = b.const(f"b{layer}", rng.integers(-3000, 3000, o).astype(np.int32),
                       quant(list(s_w * s_in) if per_channel else float(s_w[0] * s_in), [0] * len(s_w), 0))
        s_out, zp_out = float(rng.uniform(0.05, 0.3)), int(rng.integers(-20, 20))
        y = b.tensor(f"y{layer}", (rows, o), np.int8, quant(s_out, zp_out))
        b.op("FULLY_CONNECTED", [cur, w, bias], [y], options={"fused_activation_function": acts[layer]}, version=4)
        if layer + 1 in expose:
            outs.append(y)
        cur, s_in = y, s_out
    b.output(*outs, cur)
    return b.build()


QCHAIN_CASES = [
    ([640, 128, 8, 128, 640], 1, ["RELU", "RELU", "RELU", "NONE"]),  # the FC autoencoder's shape
    ([37, 21, 5, 3], 3, ["RELU6", "RELU_N1_TO_1", "NONE"]),  # odd widths, 3 rows
    ([70, 9, 66], 2, ["NONE", "RELU"]),
]


@pytest.mark.parametrize("widths,rows,acts", QCHAIN_CASES)
def test_int8_fc_chain_is_one_step_and_exact(widths, rows, acts, dot_path):
    model = _qchain_model(widths, rows, acts)
    ex = Executor({"m": load_model(model)})
    assert [getattr(fn, "__name__", fn) for fn, _ in ex._model("m").steps] == ["qfc_chain"]
    for seed in range(3):
        x = np.random.default_rng(seed).integers(-128, 128, (rows, widths[0])).astype(np.int8)
        assert_close_quant(ex.run("m", [x])[0], reference_outputs(model, [x])[0], 0.0)


def test_int8_fc_chain_not_fused_where_an_intermediate_is_observable(dot_path):
    model = _qchain_model([40, 24, 16, 8], 1, expose=(1,))
    ex = Executor({"m": load_model(model)})
    names = [getattr(fn, "__name__", fn) for fn, _ in ex._model("m").steps]
    assert names[0] == "qgemv" and names[1:] == ["qfc_chain"]
    x = rand(np.int8, (1, 40))
    for ours, ref in zip(ex.run("m", [x]), reference_outputs(model, [x])):
        assert_close_quant(ours, ref, 0.0)


# ------------------------------------------------ TRANSPOSE_CONV whose taps tile the output

TC_TAP_CASES = {
    "unet-2x2-s2-no-bias": ((1, 4, 4, 24), 8, (2, 2), (2, 2), (8, 8), dict(bias=False)),
    "2x2-s2-bias-relu-batch2": ((2, 3, 5, 16), 20, (2, 2), (2, 2), (6, 10), dict(act="RELU", version=4)),
    "3x2-s3x2-c8": ((1, 4, 3, 8), 17, (3, 2), (3, 2), (12, 6), dict()),
}


@pytest.mark.parametrize("name", TC_TAP_CASES)
def test_transpose_conv_taps_through_dot_path_exact(name, dot_path):
    from test_kernels_conv_quant import tc_model

    in_shape, o, k, s, hw, kw_ = TC_TAP_CASES[name]
    model = tc_model(np.int8, in_shape, o, k, s, hw, **kw_)
    x = rand(np.int8, in_shape)
    fn, args, *_ = bind_one(model, [x])
    assert fn is conv._qtc_taps and len(args[0]) == k[0] * k[1]
    assert_exact(model, [x])


# ------------------------------------------------ plans depend on the CPU's kernels


def test_plan_file_made_with_dot_product_kernels_is_refused_where_kernels_need_scratch(tmp_path, monkeypatch):
    import json

    from edgert.errors import PlanError

    model = conv_model(np.int8, (1, 9, 11, 16), 16, 3, 3)
    monkeypatch.setattr(conv, "use_dot_product", lambda: True)
    plan_path = tmp_path / "plan.json"
    plan_path.write_text(json.dumps(Executor({"m": load_model(model)}).plans["m"].to_json()))
    x = rand(np.int8, (1, 9, 11, 16))
    ours = Executor({"m": load_model(model)}, plans={"m": plan_path}).run("m", [x])[0]  # same kernels: fine
    assert_close_quant(ours, reference_outputs(model, [x])[0], 0.0)
    monkeypatch.setattr(conv, "use_dot_product", lambda: False)  # the portable kernels need im2col scratch
    with pytest.raises(PlanError, match=r"operator 0 \(CONV_2D\) needs [\d,]+ bytes of kernel scratch"):
        Executor({"m": load_model(model)}, plans={"m": plan_path})


def test_environment_switch_turns_the_dot_product_kernels_off(monkeypatch):
    from edgert.kernels import qdot

    monkeypatch.setattr(qdot, "has_vnni", lambda: True)
    assert qdot.use_dot_product()
    monkeypatch.setenv("EDGERT_DOT_PRODUCT", "0")
    assert not qdot.use_dot_product()
