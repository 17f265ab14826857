"""Dynamic input shapes: infer_shapes against LiteRT's own resize + allocate, and Executor.resize_inputs end to end."""

from __future__ import annotations

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from conftest import DATA
from edgert.errors import BudgetExceeded, ModelError, RequestError, UnsupportedOpError
from edgert.model.builder import RESOURCE, ModelBuilder
from edgert.model.reader import load_model
from edgert.runtime.shapes import infer_shapes, shape_rule_ops, with_input_shapes
from edgert.kernels.registry import default_registry
from edgert.reference import random_inputs, run_reference
from edgert.runtime.executor import Executor

F = np.float32
I32 = np.int32
SINE = DATA / "sine_float.tflite"


def _const(b, name, values, dtype=I32):
    return b.const(name, np.asarray(values, dtype))


def _t(b, name, shape, dtype, quant=None):
    """An activation whose batch dim is dynamic, as the converter marks everything downstream of a -1 input."""
    return b.tensor(name, shape, dtype, quant, shape_signature=(-1,) + tuple(shape[1:]))


def _conv_family() -> bytes:
    b = ModelBuilder()
    x = b.input("x", (1, 9, 9, 3), F, shape_signature=(-1, 9, 9, 3))
    c = _t(b, "conv", (1, 5, 5, 4), F)
    b.op("CONV_2D", [x, b.const("w", np.linspace(-1, 1, 108, dtype=F).reshape(4, 3, 3, 3)),
                     b.const("bias", np.ones(4, F))], [c],
         options={"padding": "SAME", "stride_w": 2, "stride_h": 2, "fused_activation_function": "RELU6"})
    d = _t(b, "dw", (1, 3, 3, 8), F)
    b.op("DEPTHWISE_CONV_2D", [c, b.const("dw_w", np.linspace(-1, 1, 72, dtype=F).reshape(1, 3, 3, 8)),
                               b.const("dw_b", np.zeros(8, F))], [d],
         options={"padding": "VALID", "stride_w": 1, "stride_h": 1, "depth_multiplier": 2})
    p = _t(b, "avg", (1, 2, 2, 8), F)
    b.op("AVERAGE_POOL_2D", [d], [p], options={"padding": "VALID", "stride_w": 1, "stride_h": 1,
                                               "filter_width": 2, "filter_height": 2})
    m = _t(b, "max", (1, 1, 1, 8), F)
    b.op("MAX_POOL_2D", [p], [m], options={"padding": "VALID", "stride_w": 2, "stride_h": 2,
                                           "filter_width": 2, "filter_height": 2})
    r = _t(b, "flat", (1, 8), F)
    b.op("RESHAPE", [m, _const(b, "shape", [-1, 8])], [r], options={"new_shape": [-1, 8]})
    fc = _t(b, "fc", (1, 5), F)
    b.op("FULLY_CONNECTED", [r, b.const("fc_w", np.linspace(-1, 1, 40, dtype=F).reshape(5, 8)), -1], [fc])
    y = _t(b, "y", (1, 5), F)
    b.op("SOFTMAX", [fc], [y], options={"beta": 1.0})
    b.output(y)
    return b.build()


def _elementwise_family() -> bytes:
    b = ModelBuilder()
    x = b.input("x", (1, 4, 3), F, shape_signature=(-1, 4, 3))
    a = _t(b, "add", (1, 4, 3), F)
    b.op("ADD", [x, b.const("c", np.array([0.5, -0.25, 1.0], F))], [a])
    m = _t(b, "mul", (1, 4, 3), F)
    b.op("MUL", [a, x], [m], options={"fused_activation_function": "RELU"})
    t = _t(b, "tanh", (1, 4, 3), F)
    b.op("TANH", [m], [t])
    s = _t(b, "sq", (1, 4, 3), F)
    b.op("SQUARED_DIFFERENCE", [t, x], [s])
    cat = _t(b, "cat", (1, 4, 6), F)
    b.op("CONCATENATION", [t, s], [cat], options={"axis": -1})
    pd = _t(b, "pad", (1, 6, 8), F)
    b.op("PAD", [cat, _const(b, "pads", [[0, 0], [1, 1], [0, 2]])], [pd])
    tr = _t(b, "tr", (1, 8, 6), F)
    b.op("TRANSPOSE", [pd, _const(b, "perm", [0, 2, 1])], [tr])
    mean = _t(b, "mean", (1, 6), F)
    b.op("MEAN", [tr, _const(b, "ax1", [1])], [mean], options={"keep_dims": False})
    sm = _t(b, "sum", (1, 1, 6), F)
    b.op("SUM", [tr, _const(b, "ax2", [1])], [sm], options={"keep_dims": True})
    q = _t(b, "q", (1, 1, 6), np.int8, quant=_q(0.05))
    b.op("QUANTIZE", [sm], [q])
    dq = _t(b, "dq", (1, 1, 6), F)
    b.op("DEQUANTIZE", [q], [dq])
    b.output(mean, dq)
    return b.build()


def _q(scale):
    from edgert.model.builder import quant
    return quant(scale, 0)


def _movement_family() -> bytes:
    b = ModelBuilder()
    x = b.input("x", (1, 6, 4), F, shape_signature=(-1, 6, 4))
    ss = _t(b, "ss", (1, 2, 4), F)
    b.op("STRIDED_SLICE", [x, _const(b, "b", [0, 1, 0]), _const(b, "e", [0, 5, 4]), _const(b, "s", [1, 2, 1])], [ss],
         options={"begin_mask": 1, "end_mask": 1})
    ex = _t(b, "ex", (1, 1, 6, 4), F)
    b.op("EXPAND_DIMS", [x, _const(b, "axis", [1])], [ex])
    sq = _t(b, "sq", (1, 6, 4), F)
    b.op("SQUEEZE", [ex], [sq], options={"squeeze_dims": [1]})
    sl = _t(b, "sl", (1, 3, 2), F)
    b.op("SLICE", [sq, _const(b, "sb", [0, 0, 1]), _const(b, "sz", [-1, 3, 2])], [sl])
    p0, p1 = _t(b, "p0", (1, 3, 4), F), _t(b, "p1", (1, 3, 4), F)
    b.op("SPLIT", [_const(b, "split_axis", 1), sq], [p0, p1], options={"num_splits": 2})
    v0, v1 = _t(b, "v0", (1, 3, 1), F), _t(b, "v1", (1, 3, 3), F)
    b.op("SPLIT_V", [p0, _const(b, "sizes", [1, -1]), _const(b, "v_axis", 2)], [v0, v1], options={"num_splits": 2})
    pk = _t(b, "pk", (1, 2, 3, 4), F)
    b.op("PACK", [p0, p1], [pk], options={"values_count": 2, "axis": 1})
    u0, u1 = _t(b, "u0", (1, 3, 4), F), _t(b, "u1", (1, 3, 4), F)
    b.op("UNPACK", [pk], [u0, u1], options={"num": 2, "axis": 1})
    g = _t(b, "g", (1, 2, 4), F)
    b.op("GATHER", [u1, _const(b, "idx", [0, 2])], [g], options={"axis": 1})
    tl = _t(b, "tl", (1, 4, 4), F)
    b.op("TILE", [g, _const(b, "mult", [1, 2, 1])], [tl])
    am = _t(b, "am", (1, 6), I32)
    b.op("ARG_MAX", [x, _const(b, "am_axis", [2])], [am], options={"output_type": "INT32"})
    b.output(ss, sl, v0, v1, tl, am)
    return b.build()


def _spatial_family() -> bytes:
    b = ModelBuilder()
    x = b.input("x", (1, 4, 4, 8), F, shape_signature=(-1, 4, 4, 8))
    d2s = _t(b, "d2s", (1, 8, 8, 2), F)
    b.op("DEPTH_TO_SPACE", [x], [d2s], options={"block_size": 2})
    s2d = _t(b, "s2d", (1, 4, 4, 8), F)
    b.op("SPACE_TO_DEPTH", [d2s], [s2d], options={"block_size": 2})
    rb = _t(b, "rb", (1, 6, 6, 8), F)
    b.op("RESIZE_BILINEAR", [s2d, _const(b, "size", [6, 6])], [rb], options={"half_pixel_centers": True})
    rn = _t(b, "rn", (1, 3, 3, 8), F)
    b.op("RESIZE_NEAREST_NEIGHBOR", [rb, _const(b, "size2", [3, 3])], [rn])
    mp = _t(b, "mp", (1, 5, 5, 8), F)
    b.op("MIRROR_PAD", [rn, _const(b, "mpads", [[0, 0], [1, 1], [1, 1], [0, 0]])], [mp], options={"mode": "REFLECT"})
    b.output(mp)
    return b.build()


def _matmul_family() -> bytes:
    b = ModelBuilder()
    x = b.input("x", (1, 3, 4), F, shape_signature=(-1, 3, 4))
    mm = _t(b, "mm", (1, 3, 5), F)
    b.op("BATCH_MATMUL", [x, b.const("rhs", np.linspace(-1, 1, 20, dtype=F).reshape(4, 5))], [mm])
    mt = _t(b, "mt", (1, 4, 4), F)
    b.op("BATCH_MATMUL", [x, x], [mt], options={"adj_x": True})
    fc = _t(b, "fc", (1, 3, 6), F)
    b.op("FULLY_CONNECTED", [x, b.const("w", np.linspace(-1, 1, 24, dtype=F).reshape(6, 4)),
                             b.const("bias", np.ones(6, F))], [fc], options={"keep_num_dims": True})
    b.output(mm, mt, fc)
    return b.build()


FAMILIES = {"conv": _conv_family, "elementwise": _elementwise_family, "movement": _movement_family,
            "spatial": _spatial_family, "matmul": _matmul_family}


def _litert_shapes(model: bytes, new_shapes: dict[int, tuple]) -> dict[int, tuple]:
    ip = Interpreter(model_content=model, experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    for i, s in new_shapes.items():
        ip.resize_tensor_input(i, list(s))
    ip.allocate_tensors()
    # Tensors LiteRT leaves dynamic (SLICE of an input with a -1 signature) get their shape at invoke.
    for d in ip.get_input_details():
        ip.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
    ip.invoke()
    return {d["index"]: tuple(int(v) for v in d["shape"]) for d in ip.get_tensor_details()}


def _batched(graph, batch: int) -> dict[int, tuple]:
    return {i: (batch,) + tuple(graph.main.tensors[i].shape[1:]) for i in graph.inputs}


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("batch", [1, 3])
def test_infer_shapes_matches_litert(family, batch):
    model = FAMILIES[family]()
    graph = load_model(model)
    new = _batched(graph, batch)
    ours = infer_shapes(graph.main, new)
    theirs = _litert_shapes(model, new)
    for i, shape in ours.items():
        assert shape == theirs[i], f"{graph.main.tensors[i].name}: ours {shape}, LiteRT {theirs[i]}"
    assert set(ours) == {t.index for t in graph.main.tensors if not t.is_constant}


def test_infer_shapes_sine_matches_litert():
    graph = load_model(SINE)
    for batch in (1, 3, 8):
        new = _batched(graph, batch)
        ours = infer_shapes(graph.main, new)
        theirs = _litert_shapes(SINE.read_bytes(), new)
        assert all(ours[i] == theirs[i] for i in ours), (batch, ours, theirs)
        assert ours[graph.outputs[0]] == (batch, 1)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_resized_executor_matches_litert(family):
    model = FAMILIES[family]()
    ex = Executor({"m": model})
    for seed, batch in enumerate((3, 1, 2)):
        ex.resize_inputs("m", [(batch,) + s.shape[1:] for s in ex.input_specs("m")])
        x = random_inputs([(s.shape, s.dtype) for s in ex.input_specs("m")], seed=seed)
        ours, ref = ex.run("m", x), run_reference(model, x)
        assert [o.shape for o in ours] == [r.shape for r in ref]
        for o, r in zip(ours, ref):
            if o.dtype.kind == "f":
                np.testing.assert_allclose(o, r, atol=1e-4 * max(1.0, float(np.ptp(np.abs(r)))), rtol=0)
            else:
                np.testing.assert_array_equal(o, r)


def test_sine_executor_batches_and_back():
    ex = Executor({"sine": SINE})
    stored = ex.input_specs("sine")[0].shape
    assert stored == (1, 1)
    seen_arena = []
    for batch in (1, 3, 8, 1, 3):
        specs = ex.resize_inputs("sine", [(batch, 1)])
        assert specs[0].shape == (batch, 1) and ex.output_specs("sine")[0].shape == (batch, 1)
        x = [np.linspace(-3, 3, batch, dtype=F).reshape(batch, 1)]
        ours, ref = ex.run("sine", x), run_reference(SINE, x)
        np.testing.assert_allclose(ours[0], ref[0], atol=1e-4, rtol=0)
        with pytest.raises(RequestError):  # the old shape is no longer what run() takes
            ex.run("sine", [np.zeros((batch + 1, 1), F)])
        seen_arena.append(ex.arena_bytes)
    # every shape stays planned: returning to batch 1 or 3 does not grow the arena
    assert seen_arena[2] == seen_arena[3] == seen_arena[4] >= seen_arena[1] >= seen_arena[0]


def test_resize_by_name_and_to_stored_shape():
    ex = Executor({"sine": SINE})
    name = ex.input_specs("sine")[0].name
    assert ex.resize_inputs("sine", {name: (4, 1)})[0].shape == (4, 1)
    assert ex.resize_inputs("sine", {name: (1, 1)})[0].shape == (1, 1)
    x = [np.array([[0.5]], F)]
    np.testing.assert_allclose(ex.run("sine", x)[0], run_reference(SINE, x)[0], atol=1e-4, rtol=0)


def test_budget_exceeded_on_resize_keeps_old_shape():
    base = Executor({"sine": SINE})
    ex = Executor({"sine": SINE}, budget=base.arena_bytes)
    with pytest.raises(BudgetExceeded) as e:
        ex.resize_inputs("sine", [(64, 1)])
    assert e.value.budget == base.arena_bytes and e.value.needed > base.arena_bytes
    assert f"{e.value.needed:,}" in str(e.value) and "sine" in str(e.value)
    assert ex.input_specs("sine")[0].shape == (1, 1)
    assert ex.arena_bytes == base.arena_bytes
    x = [np.array([[1.25]], F)]
    np.testing.assert_allclose(ex.run("sine", x)[0], run_reference(SINE, x)[0], atol=1e-4, rtol=0)


def test_resize_of_fixed_dim_is_a_clear_error():
    ex = Executor({"sine": SINE})
    with pytest.raises(RequestError, match=r"serving_default_dense_input:0.*dim 1 is fixed at 1") as e:
        ex.resize_inputs("sine", [(2, 3)])
    assert e.value.kind == "bad_shape"
    with pytest.raises(RequestError, match="rank"):
        ex.resize_inputs("sine", [(2,)])
    with pytest.raises(RequestError, match="no input named"):
        ex.resize_inputs("sine", {"nope": (2, 1)})
    assert ex.input_specs("sine")[0].shape == (1, 1)


def _fixed_reshape() -> bytes:
    b = ModelBuilder()
    x = b.input("x", (1, 4), F, shape_signature=(-1, 4))
    y = b.tensor("y", (1, 2, 2), F)
    b.op("RESHAPE", [x, _const(b, "shape", [1, 2, 2])], [y], options={"new_shape": [1, 2, 2]})
    b.output(y)
    return b.build()


def test_reshape_to_fixed_batch_fails_like_litert():
    model = _fixed_reshape()
    with pytest.raises(RuntimeError):
        _litert_shapes(model, {0: (3, 4)})
    with pytest.raises(ModelError, match=r"RESHAPE \(operator 0.*\[1, 2, 2\]"):
        with_input_shapes(load_model(model), [(3, 4)])
    ex = Executor({"m": model})
    with pytest.raises(ModelError, match="RESHAPE"):
        ex.resize_inputs("m", [(3, 4)])
    assert ex.input_specs("m")[0].shape == (1, 4)


def test_transpose_conv_with_constant_output_shape_refuses_batch_resize():
    b = ModelBuilder()
    x = b.input("x", (1, 2, 2, 3), F, shape_signature=(-1, 2, 2, 3))
    y = b.tensor("y", (1, 4, 4, 2), F)
    b.op("TRANSPOSE_CONV", [_const(b, "out_shape", [1, 4, 4, 2]), b.const("w", np.ones((2, 3, 3, 3), F)), x, -1], [y],
         options={"padding": "SAME", "stride_w": 2, "stride_h": 2})
    b.output(y)
    graph = load_model(b.build())
    assert infer_shapes(graph.main, {0: (1, 2, 2, 3)})[y] == (1, 4, 4, 2)
    with pytest.raises(ModelError, match=r"TRANSPOSE_CONV.*output_shape.*batch 1.*batch is 3"):
        infer_shapes(graph.main, {0: (3, 2, 2, 3)})


def test_op_without_shape_rule_is_named():
    b = ModelBuilder()
    x = b.input("x", (1, 4), F, shape_signature=(-1, 4))
    y = b.tensor("y", (1, 4), F)
    b.op("L2_NORMALIZATION", [x], [y])
    b.output(y)
    graph = load_model(b.build())
    assert "L2_NORMALIZATION" not in shape_rule_ops()
    with pytest.raises(UnsupportedOpError, match="no shape rule for L2_NORMALIZATION"):
        infer_shapes(graph.main, {0: (2, 4)})
    assert infer_shapes(graph.main, {0: (1, 4)})[y] == (1, 4)  # unchanged inputs need no rule


def test_every_registered_kernel_has_a_shape_rule():
    missing = set(default_registry().entries) - set(shape_rule_ops())
    assert not missing, f"ops with kernels but no shape rule: {sorted(missing)}"


def _counter_model() -> bytes:
    """y = x + state (x has a dynamic batch); state := state + 1 each call; init state [1, 2, 3]."""
    b = ModelBuilder()
    with b.subgraph("init") as init_index:
        h = b.tensor("init_handle", (), RESOURCE)
        b.op("VAR_HANDLE", [], [h], options={"container": "", "shared_name": "n"})
        b.op("ASSIGN_VARIABLE", [h, b.const("init_value", np.array([[1.0, 2.0, 3.0]], F))], [])
    x = b.input("x", (1, 3), F, shape_signature=(-1, 3))
    h = b.tensor("handle", (), RESOURCE)
    s = b.tensor("state", (1, 3), F)
    s1 = b.tensor("state1", (1, 3), F)
    y = b.tensor("y", (1, 3), F)
    b.op("CALL_ONCE", [], [], options={"init_subgraph_index": init_index})
    b.op("VAR_HANDLE", [], [h], options={"shared_name": "n"})
    b.op("READ_VARIABLE", [h], [s])
    b.op("ADD", [x, s], [y])
    b.op("ADD", [s, b.const("one", np.ones((1, 3), F))], [s1])
    b.op("ASSIGN_VARIABLE", [h, s1], [])
    b.output(y)
    return b.build()


def test_resize_warm_up_keeps_variable_state():
    ex = Executor({"m": _counter_model()})
    base = np.array([[1.0, 2.0, 3.0]], F)
    np.testing.assert_array_equal(ex.run("m", [np.zeros((1, 3), F)])[0], base)
    np.testing.assert_array_equal(ex.run("m", [np.zeros((1, 3), F)])[0], base + 1)
    ex.resize_inputs("m", [(4, 3)])  # warm-up runs the model once; the count must not move
    x = np.arange(12, dtype=F).reshape(4, 3)
    np.testing.assert_array_equal(ex.run("m", [x])[0], x + base + 2)
    ex.resize_inputs("m", [(1, 3)])
    np.testing.assert_array_equal(ex.run("m", [np.zeros((1, 3), F)])[0], base + 3)
    ex.reset_state()
    np.testing.assert_array_equal(ex.run("m", [np.zeros((1, 3), F)])[0], base)


def test_arena_growth_keeps_other_models_and_state():
    ex = Executor({"m": _counter_model(), "sine": SINE})
    ex.run("m", [np.zeros((1, 3), F)])
    before = ex.arena.nbytes
    ex.resize_inputs("sine", [(256, 1)])  # needs a larger activation region: a new arena
    assert ex.arena.nbytes > before
    x = [np.linspace(-3, 3, 256, dtype=F).reshape(256, 1)]
    np.testing.assert_allclose(ex.run("sine", x)[0], run_reference(SINE, x)[0], atol=1e-4, rtol=0)
    out = ex.run("m", [np.zeros((1, 3), F)])[0]
    np.testing.assert_array_equal(out, np.array([[2.0, 3.0, 4.0]], F))  # state survived the move
    assert np.shares_memory(ex.run("m", [np.zeros((1, 3), F)], copy=False)[0], ex.arena.buffer)
